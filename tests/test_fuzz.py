"""Property-based fuzzing of every public function that takes arrays.

Each call gets random shapes (0 and 1 included), dtypes, layouts (C, Fortran,
non-contiguous, negative strides, read-only), NaN/inf and extreme values, and
invalid arguments. It must either return what a float64 NumPy/torch reference
says or raise TypeError/ValueError/IndexError with a message. Inputs must come
back unchanged, and caller-provided outputs sit between guard elements that must
come back unchanged too (no write outside the output).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastreg
from fastreg import _core, ops
from fastreg.datasets import get_fashion_mnist_labels, synthetic_data
from fastreg.optim import sgd_step

torch = pytest.importorskip("torch")
F = torch.nn.functional

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CLEAN_ERRORS = (TypeError, ValueError, IndexError)
LAYOUTS = ("C", "F", "strided", "negative", "readonly")
EXTREMES = (np.nan, np.inf, -np.inf, 1e30, -1e30, 1e-40, 0.0, -0.0)
GUARD = 7  # guard elements each side of a caller-provided output
SENTINEL = 1234.5


# ------------------------------------------------------------------ strategies


@st.composite
def shapes(draw, min_dims=0, max_dims=3, max_side=4):
    return tuple(draw(st.lists(st.integers(0, max_side), min_size=min_dims, max_size=max_dims)))


def layout(a: np.ndarray, kind: str) -> np.ndarray:
    """`a`'s values under another memory layout (same shape and values)."""
    if kind == "F" and a.ndim:  # (np.asfortranarray would make a 0-d array 1-d)
        return np.asfortranarray(a)
    if kind == "strided" and a.ndim:
        big = np.empty((a.shape[0] * 2,) + a.shape[1:], a.dtype)
        big[::2] = a
        return big[::2]
    if kind == "negative" and a.ndim:
        return np.ascontiguousarray(a[::-1])[::-1]
    a = np.array(a)
    if kind == "readonly":
        a.flags.writeable = False
    return a


@st.composite
def float_arrays(draw, shape, dtypes=(np.float32, np.float64), special=True, scale=3.0):
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    a = np.array(rng.standard_normal(shape) * scale, dtype=dtype)
    if special and dtype in (np.float32, np.float64) and a.size and draw(st.booleans()):
        for _ in range(draw(st.integers(1, 3))):
            a.flat[draw(st.integers(0, a.size - 1))] = draw(st.sampled_from(EXTREMES))
    return layout(a, draw(st.sampled_from(LAYOUTS)))


def snapshot(*arrays):
    return [(a, np.array(a, copy=True)) for a in arrays if isinstance(a, np.ndarray)]


def assert_unchanged(snaps):
    for a, before in snaps:
        np.testing.assert_array_equal(a, before, err_msg="an input was modified")


class Guarded:
    """A C-contiguous output of `shape` inside a buffer with guard elements each side.
    `arm()` records the guards (a test may place inputs there); `check()` compares."""

    def __init__(self, shape, dtype):
        n = math.prod(shape)
        self.buf = np.full(n + 2 * GUARD, SENTINEL, dtype=dtype)
        self.out = self.buf[GUARD : GUARD + n].reshape(shape)
        self.arm()

    def arm(self):
        self.before = self.buf.copy()

    def check(self):
        np.testing.assert_array_equal(self.buf[:GUARD], self.before[:GUARD], err_msg="write before the output")
        np.testing.assert_array_equal(self.buf[-GUARD:], self.before[-GUARD:], err_msg="write after the output")


def call(fn, *args, **kwargs):
    """(result, None) or (None, exception) for a clean Python error with a message."""
    try:
        return fn(*args, **kwargs), None
    except CLEAN_ERRORS as e:
        assert str(e), f"{type(e).__name__} without a message"
        return None, e


def tol(dtype, *arrays):
    """rtol, atol for comparing with a float64 reference, scaled by the inputs' magnitude."""
    mags = [np.abs(a[np.isfinite(a)]).max(initial=0.0) for a in arrays if a is not None and np.size(a)]
    scale = 1.0 + max(mags, default=0.0)
    return (2e-5, 2e-5 * scale) if np.dtype(dtype) == np.float32 else (1e-11, 1e-11 * scale)


def assert_close(got, want, dtype, *inputs):
    rtol, atol = tol(dtype, *inputs)
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if np.dtype(dtype) == np.float32:  # results past float32's range are inf there
        with np.errstate(over="ignore"):
            want = want.astype(np.float32).astype(np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, equal_nan=True)


# ---------------------------------------------------------------- softmax family


def _ref_softmax(x64, axis, kind):
    t = torch.from_numpy(np.array(x64, dtype=np.float64))
    if axis is None:
        flat = t.reshape(-1)
        if kind == "logsumexp":
            return torch.logsumexp(flat, 0).numpy()
        f = {"softmax": F.softmax, "log_softmax": F.log_softmax, "softmin": F.softmin}[kind]
        return f(flat, 0).reshape(t.shape).numpy()
    if kind == "logsumexp":
        return torch.logsumexp(t, axis).numpy()
    f = {"softmax": F.softmax, "log_softmax": F.log_softmax, "softmin": F.softmin}[kind]
    return f(t, axis).numpy()


@FUZZ
@given(data=st.data(), kind=st.sampled_from(["softmax", "log_softmax", "softmin", "logsumexp"]))
def test_softmax_family(data, kind):
    shape = data.draw(shapes(max_dims=3))
    x = data.draw(float_arrays(shape, dtypes=(np.float32, np.float64, np.int64, np.float16)))
    ndim = len(shape)
    axis = data.draw(st.one_of(st.none(), st.integers(-ndim - 1, ndim)))
    snaps = snapshot(x)
    got, err = call(getattr(ops, kind), x, axis=axis)
    assert_unchanged(snaps)
    if x.dtype not in (np.float32, np.float64):
        assert err is not None, f"{x.dtype} accepted"  # TypeError, or the axis error found first
        return
    # as torch: a 0-d input takes axis 0 or -1 (one slice of one entry)
    valid_axis = axis is None or (-max(ndim, 1) <= axis < max(ndim, 1))
    if not valid_axis:
        assert err is not None, f"axis={axis} accepted for shape {shape}"
        return
    assert err is None, err
    want = _ref_softmax(x, axis, kind)
    assert np.asarray(got).dtype == x.dtype
    assert_close(got, want, x.dtype, x)


@FUZZ
@given(data=st.data())
def test_softmax_binding_outputs(data):
    """_core.softmax writes exactly its [N, C] output (maybe in place), or refuses cleanly."""
    n, c = data.draw(st.integers(0, 5)), data.draw(st.integers(0, 6))
    x = data.draw(float_arrays((n, c)))
    out_kind = data.draw(st.sampled_from(["ok", "inplace", "wrong_shape", "wrong_dtype", "overlap", "readonly"]))
    log = data.draw(st.booleans())
    out_dtype = x.dtype if out_kind != "wrong_dtype" else (np.float64 if x.dtype == np.float32 else np.float32)
    out_shape = (n, c) if out_kind != "wrong_shape" else (n, c + 1)
    gb = Guarded(out_shape, out_dtype)
    out = gb.out
    x_in = x
    if out_kind == "inplace":
        x_in = out
        out[...] = x
    elif out_kind == "overlap" and out.size > 1:
        x_in = gb.buf[GUARD + 1 : GUARD + 1 + n * c].reshape(n, c)
        x_in[...] = x
    if out_kind == "readonly":
        out.flags.writeable = False
    gb.arm()
    snaps = snapshot(x_in) if out_kind != "inplace" else []
    _, err = call(_core.softmax, x_in, out, log)
    assert_unchanged(snaps)
    gb.check()
    layout_ok = x_in.flags.c_contiguous
    if out_kind in ("ok", "inplace") and layout_ok:
        assert err is None, err
        want = _ref_softmax(x, 1, "log_softmax" if log else "softmax") if n * c else np.zeros((n, c))
        assert_close(out, want, x.dtype, x)
    elif out_kind in ("wrong_shape", "wrong_dtype", "readonly") or not layout_ok:
        assert err is not None
    elif out_kind == "overlap" and out.size > 1:
        assert err is not None and "share memory" in str(err)


# ----------------------------------------------------------------- cross-entropy


@FUZZ
@given(data=st.data())
def test_cross_entropy(data):
    n, c = data.draw(st.integers(0, 5)), data.draw(st.integers(0, 5))
    logits = data.draw(float_arrays((n, c), scale=data.draw(st.sampled_from([1.0, 30.0, 1e4]))))
    dtype = logits.dtype
    prob = data.draw(st.booleans()) and c > 0
    ignore_index = data.draw(st.sampled_from([-100, 0, 1, -1]))
    if prob:
        p = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))).random((n, c)).astype(dtype)
        target = layout(p / np.maximum(p.sum(1, keepdims=True), 1e-3), data.draw(st.sampled_from(LAYOUTS)))
    else:
        labels = data.draw(st.lists(st.integers(-2, c + 1), min_size=n, max_size=n))
        if n and data.draw(st.booleans()):
            labels[data.draw(st.integers(0, n - 1))] = ignore_index
        target = layout(
            np.array(labels, dtype=data.draw(st.sampled_from([np.int64, np.int32]))),
            data.draw(st.sampled_from(LAYOUTS)),
        )
    weight = None
    if data.draw(st.booleans()):
        weight = data.draw(float_arrays((c,), dtypes=(dtype,), special=False, scale=1.0))
        weight = layout(np.abs(weight), "C")
    reduction = data.draw(st.sampled_from(["mean", "sum", "none", "avg"]))
    smoothing = data.draw(st.sampled_from([0.0, 0.1, 1.0, -0.5, 1.5, float("nan")]))
    with_grad = data.draw(st.booleans())
    gb = Guarded((n, c), dtype) if with_grad and data.draw(st.booleans()) else None
    out = None if gb is None else gb.out
    snaps = snapshot(logits, target, weight)
    kwargs = dict(weight=weight, ignore_index=ignore_index, reduction=reduction, label_smoothing=smoothing)
    if with_grad:
        res, err = call(ops.cross_entropy_with_grad, logits, target, out=out, **kwargs)
    else:
        res, err = call(ops.cross_entropy, logits, target, **kwargs)
    assert_unchanged(snaps)
    if gb is not None:
        gb.check()

    # The reference: torch in float64 (targets as torch wants them).
    x64 = torch.tensor(np.array(logits, dtype=np.float64), requires_grad=True)
    t = torch.tensor(np.array(target, dtype=np.float64 if prob else np.int64))
    w = None if weight is None else torch.tensor(np.array(weight, dtype=np.float64))
    try:
        ref = F.cross_entropy(
            x64, t, weight=w, ignore_index=ignore_index, reduction=reduction, label_smoothing=smoothing
        )
        ref_grad = None
        if with_grad and ref.numel():
            (ref_grad,) = torch.autograd.grad(ref.sum(), x64)
    except (RuntimeError, ValueError, IndexError) as e:  # torch refuses: so must we
        if prob and ignore_index >= 0 and "ignore_index" in str(e):
            return  # known divergence: fastreg ignores ignore_index for probability targets
        assert err is not None, f"torch raised {e!r} but fastreg returned {res!r}"
        return
    if c == 0 or not 0 <= smoothing <= 1:
        assert err is not None  # torch is lenient with these; fastreg says why
        return
    assert err is None, err
    loss, grad = res if with_grad else (res, None)
    assert_close(loss, ref.detach().numpy(), dtype, logits)
    if with_grad:
        want = ref_grad.numpy() if ref_grad is not None else np.zeros((n, c))
        if not prob:  # an ignored row's gradient is exactly 0 (torch: NaN if its logits hold a NaN/inf)
            want = np.where((np.asarray(target) == ignore_index)[:, None], 0.0, want)
        assert_close(grad, want, dtype, logits)
        if out is not None:
            assert grad is out


@FUZZ
@given(data=st.data())
def test_torch_cross_entropy_wrapper(data):
    """fastreg.torch.cross_entropy on tensors: torch's value and gradient, or torch's error."""
    import fastreg.torch as ftorch

    n, c = data.draw(st.integers(0, 4)), data.draw(st.integers(1, 4))
    x = data.draw(float_arrays((n, c), special=False))
    labels = np.array(data.draw(st.lists(st.integers(-1, c), min_size=n, max_size=n)), dtype=np.int64)
    xt = torch.tensor(np.array(x), requires_grad=True)
    xr = torch.tensor(np.array(x, dtype=np.float64), requires_grad=True)
    reduction = data.draw(st.sampled_from(["mean", "sum", "none"]))
    try:
        ref = F.cross_entropy(xr, torch.from_numpy(labels), reduction=reduction)
    except (IndexError, RuntimeError):
        with pytest.raises((IndexError, RuntimeError, ValueError)):
            ftorch.cross_entropy(xt, torch.from_numpy(labels), reduction=reduction)
        return
    got = ftorch.cross_entropy(xt, torch.from_numpy(labels), reduction=reduction)
    assert_close(got.detach().numpy(), ref.detach().numpy(), x.dtype, x)
    if n:
        got.sum().backward()
        ref.sum().backward()
        assert_close(xt.grad.numpy(), xr.grad.numpy(), x.dtype, x)


# ------------------------------------------------------------- regression losses


def _ref_regression(kind, p, t, param, reduction):
    p = torch.tensor(np.array(p, dtype=np.float64), requires_grad=True)
    t = torch.tensor(np.array(t, dtype=np.float64)).reshape(p.shape)
    if kind == "squared":
        e = (p - t) ** 2 / 2
        loss = {"mean": e.mean, "sum": e.sum, "none": lambda: e}[reduction]()
    elif kind == "l1":
        loss = F.l1_loss(p, t, reduction=reduction)
    elif kind == "huber":
        loss = F.huber_loss(p, t, reduction=reduction, delta=param)
    else:
        loss = F.smooth_l1_loss(p, t, reduction=reduction, beta=param)
    grad = torch.autograd.grad(loss.sum(), p)[0] if p.numel() else torch.zeros(p.shape, dtype=torch.float64)
    grad = grad.numpy()
    # A NaN difference gives a NaN gradient (torch's l1 backward gives sign(NaN) = 0 there).
    grad = np.where(np.isnan((p - t).detach().numpy()), np.nan, grad)
    return loss.detach().numpy(), grad


@FUZZ
@given(data=st.data(), kind=st.sampled_from(["squared", "l1", "huber", "smooth_l1"]))
def test_regression_losses(data, kind):
    shape = data.draw(shapes(max_dims=3))
    p = data.draw(float_arrays(shape))
    target_shape = data.draw(st.sampled_from([shape, (math.prod(shape),), (math.prod(shape) + 1,)]))
    t = data.draw(float_arrays(target_shape, dtypes=(p.dtype, p.dtype, np.float32, np.int64)))
    reduction = data.draw(st.sampled_from(["mean", "sum", "none", "avg"]))
    param = data.draw(st.sampled_from([1.0, 0.5, 3.0, 0.0, -1.0, float("nan")]))
    with_grad = data.draw(st.booleans())
    gb = Guarded(shape, p.dtype) if with_grad and data.draw(st.booleans()) else None
    out = None if gb is None else gb.out
    kwargs = {"reduction": reduction}
    if kind == "huber":
        kwargs["delta"] = param
    elif kind == "smooth_l1":
        kwargs["beta"] = param
    fn = getattr(ops, f"{kind}_loss_with_grad" if with_grad else f"{kind}_loss")
    if with_grad:
        kwargs["out"] = out
    snaps = snapshot(p, t)
    res, err = call(fn, p, t, **kwargs)
    assert_unchanged(snaps)
    if gb is not None:
        gb.check()
    bad_param = (kind == "huber" and not param > 0) or (kind == "smooth_l1" and not param >= 0)
    if t.dtype != p.dtype or t.size != p.size or reduction == "avg" or bad_param:
        assert err is not None, f"accepted target {t.dtype}{t.shape}, reduction={reduction}, param={param}"
        return
    assert err is None, err
    loss, grad = res if with_grad else (res, None)
    want_loss, want_grad = _ref_regression(kind, p, t, param, reduction)
    assert_close(loss, want_loss, p.dtype, p, t)
    if with_grad:
        assert_close(grad, want_grad, p.dtype, p, t)


# ------------------------------------------------------------------------ SGD


@np.errstate(all="ignore")  # inf * 0 is NaN here as in torch
def _ref_sgd(p, g, buf, lr, momentum, dampening, wd, nesterov, maximize):
    p, g = p.astype(np.float64), g.astype(np.float64)
    d = -g if maximize else g
    if wd:
        d = d + wd * p
    if momentum:
        buf = d.copy() if buf is None else momentum * buf.astype(np.float64) + (1 - dampening) * d
        d = d + momentum * buf if nesterov else buf
    return p - lr * d, buf


@FUZZ
@given(data=st.data())
def test_sgd_step(data):
    shape = data.draw(shapes(max_dims=3))
    p = data.draw(float_arrays(shape, special=False))
    g = data.draw(float_arrays(shape, dtypes=(p.dtype, p.dtype, np.float64 if p.dtype == np.float32 else np.float32)))
    lr = data.draw(st.sampled_from([0.0, 0.1, 1e-3, -1.0, float("nan"), float("inf")]))
    momentum = data.draw(st.sampled_from([0.0, 0.9, -0.1]))
    dampening = data.draw(st.sampled_from([0.0, 0.5]))
    wd = data.draw(st.sampled_from([0.0, 1e-2]))
    nesterov, maximize = data.draw(st.booleans()), data.draw(st.booleans())
    first = data.draw(st.booleans())
    buf = None if first else data.draw(float_arrays(shape, dtypes=(p.dtype,), special=False))
    bufs = [buf] if momentum else None
    p_before, buf_before = p.copy(), None if buf is None else buf.copy()
    snaps = snapshot(g)
    _, err = call(
        sgd_step,
        [p],
        [g],
        bufs,
        lr=lr,
        momentum=momentum,
        dampening=dampening,
        weight_decay=wd,
        nesterov=nesterov,
        maximize=maximize,
    )
    assert_unchanged(snaps)
    invalid = (
        g.dtype != p.dtype
        or not p.flags.writeable
        or not (math.isfinite(lr) and lr >= 0)
        or momentum < 0
        or (nesterov and (momentum <= 0 or dampening != 0))
        or (buf is not None and momentum and not buf.flags.writeable)
    )
    if invalid:
        assert err is not None, "invalid arguments accepted"
        np.testing.assert_array_equal(p, p_before)  # refused before touching anything
        return
    assert err is None, err
    want_p, want_buf = _ref_sgd(p_before, g, buf_before, lr, momentum, dampening, wd, nesterov, maximize)
    assert_close(p, want_p, p.dtype, p_before, g)
    if momentum:
        assert_close(bufs[0], want_buf, p.dtype, p_before, g)


@FUZZ
@given(data=st.data())
def test_sgd_update_binding(data):
    """The raw binding with arbitrary arrays: a clean refusal or the exact update, in bounds."""
    n = data.draw(st.integers(0, 9))
    pg = Guarded((n,), data.draw(st.sampled_from([np.float32, np.float64, np.int32])))
    p = pg.out
    g = data.draw(float_arrays((data.draw(st.sampled_from([n, n + 1])),)))
    momentum = data.draw(st.sampled_from([0.0, 0.9]))
    b = data.draw(st.sampled_from([None, "ok", "alias"]))
    bg = None
    if b == "ok":
        bg = Guarded((n,), p.dtype)
        b = bg.out
        b[...] = 1
        bg.arm()
    elif b == "alias":
        b = p
    p_before = p.copy()
    snaps = snapshot(g)
    _, err = call(_core.sgd_update, p, g, b, lr=0.5, momentum=momentum)
    assert_unchanged(snaps)
    pg.check()
    if bg is not None:
        bg.check()
    ok = (
        p.dtype == g.dtype
        and g.shape == p.shape
        and g.flags.c_contiguous
        and g.flags.writeable is not None
        and (momentum == 0 or (b is not None and (b is not p or n == 0)))
    )
    if not ok:
        assert err is not None
        if err is not None:
            np.testing.assert_array_equal(p, p_before)
        return
    assert err is None, err
    want, _ = _ref_sgd(p_before, g, None if b is None else np.ones(n), 0.5, momentum, 0, 0, False, False)
    assert_close(p, want, p.dtype, p_before, g)


# ----------------------------------------------------------------- data loading


@FUZZ
@given(data=st.data())
def test_gather_rows(data):
    shape = data.draw(shapes(min_dims=0, max_dims=3, max_side=5))
    dtype = data.draw(st.sampled_from([np.uint8, np.int16, np.float32, np.float64, np.complex64, object]))
    src = np.arange(math.prod(shape)).astype(dtype).reshape(shape)
    src = layout(src, data.draw(st.sampled_from(LAYOUTS)))
    rows = shape[0] if shape else 0
    idx = np.array(data.draw(st.lists(st.integers(-2, rows + 1), max_size=6)), dtype=np.int64)
    idx = layout(
        idx.astype(data.draw(st.sampled_from([np.int64, np.int64, np.int32, np.float64]))),
        data.draw(st.sampled_from(LAYOUTS)),
    )
    to_f32 = data.draw(st.booleans())
    scale = data.draw(st.sampled_from([1.0, 1 / 255]))
    snaps = snapshot(src, idx)
    got, err = call(_core.gather_rows, src, idx, to_float32=to_f32, scale=scale)
    assert_unchanged(snaps)
    valid = (
        src.ndim >= 1
        and src.dtype != object
        and src.flags.c_contiguous
        and idx.dtype == np.int64
        and idx.flags.c_contiguous
        and ((to_f32 and src.dtype == np.uint8) or (not to_f32 and scale == 1.0))
    )
    if not valid:
        assert err is not None, "invalid call accepted"
        return
    if ((idx < 0) | (idx >= rows)).any():
        assert isinstance(err, IndexError) and "out of range" in str(err)
        return
    assert err is None, err
    want = src[idx]
    if to_f32:
        want = want.astype(np.float32) * np.float32(scale)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


@FUZZ
@given(data=st.data())
def test_dataloader(data):
    n = data.draw(st.integers(0, 7))
    trailing = data.draw(shapes(max_dims=2, max_side=3))
    dtype = data.draw(st.sampled_from([np.uint8, np.int32, np.float32, np.float64, np.bool_, object]))
    X = layout(
        np.arange(n * math.prod(trailing)).astype(dtype).reshape((n, *trailing)), data.draw(st.sampled_from(LAYOUTS))
    )
    y = layout(np.arange(data.draw(st.sampled_from([n, n, n + 1]))), data.draw(st.sampled_from(LAYOUTS)))
    batch_size = data.draw(st.sampled_from([1, 2, 3, 8, 0, -1, 2.0]))
    convert = data.draw(st.booleans())
    kwargs = dict(
        shuffle=data.draw(st.booleans()),
        drop_last=data.draw(st.booleans()),
        seed=3,
        prefetch=data.draw(st.sampled_from([None, True, False])),
    )
    if convert:
        kwargs.update(dtype=np.float32, scale=0.5)
    snaps = snapshot(X, y)
    loader, err = call(fastreg.DataLoader, (X, y), batch_size, **kwargs)
    batches = list(loader) if err is None else None
    assert_unchanged(snaps)
    # an empty dataset yields nothing, as torch's; shuffled, it is refused, as torch's RandomSampler does
    valid = (
        isinstance(batch_size, int)
        and batch_size >= 1
        and (n >= 1 or not kwargs["shuffle"])
        and len(y) == n
        and dtype is not object
        and (not convert or dtype == np.uint8)
    )
    if not valid:
        assert err is not None, "invalid DataLoader accepted"
        return
    assert err is None, err
    order = _core.random_permutation(n, 3, 0) if kwargs["shuffle"] else np.arange(n)
    if kwargs["drop_last"]:
        order = order[: n // batch_size * batch_size]
    got_y = np.concatenate([yb for _, yb in batches]) if batches else np.zeros(0, np.int64)
    np.testing.assert_array_equal(got_y, order)
    for xb, yb in batches:
        want = X[yb].astype(np.float32) * np.float32(0.5) if convert else X[yb]
        assert xb.dtype == want.dtype and xb.flags.c_contiguous
        np.testing.assert_array_equal(xb, want)


@FUZZ
@given(n=st.integers(-3, 300), seed=st.integers(0, 2**64 - 1), stream=st.integers(0, 2**64 - 1))
def test_random_permutation(n, seed, stream):
    got, err = call(_core.random_permutation, n, seed, stream)
    if n < 0:
        assert isinstance(err, ValueError)
        return
    assert err is None
    np.testing.assert_array_equal(np.sort(got), np.arange(n))
    np.testing.assert_array_equal(got, _core.random_permutation(n, seed, stream))


# ------------------------------------------------------------------- datasets


@FUZZ
@given(data=st.data())
def test_get_fashion_mnist_labels(data):
    shape = data.draw(shapes(max_dims=2, max_side=5))
    dtype = data.draw(st.sampled_from([np.int64, np.uint8, np.int8, np.float32, np.bool_]))
    labels = np.array(
        data.draw(st.lists(st.integers(-2, 11), min_size=math.prod(shape), max_size=math.prod(shape))), dtype=np.int64
    ).reshape(shape)
    labels = layout(labels.astype(dtype), data.draw(st.sampled_from(LAYOUTS)))
    snaps = snapshot(labels)
    got, err = call(get_fashion_mnist_labels, labels)
    assert_unchanged(snaps)
    if labels.dtype == np.bool_ or (labels.dtype.kind not in "iu" and labels.size):
        assert isinstance(err, TypeError)
        return
    flat = labels.reshape(-1).astype(np.int64)
    if ((flat < 0) | (flat > 9)).any():
        assert isinstance(err, IndexError)
        return
    assert err is None, err
    assert got == [fastreg.datasets.FASHION_MNIST_CLASSES[i] for i in flat]


@FUZZ
@given(data=st.data())
def test_synthetic_data(data):
    w = data.draw(
        float_arrays(
            data.draw(shapes(min_dims=1, max_dims=2, max_side=4)), dtypes=(np.float32, np.float64, np.int64, np.bool_)
        )
    )
    b = data.draw(st.sampled_from([0.5, -3, float("nan"), "1"]))
    num = data.draw(st.sampled_from([1, 5, 0, -1, 2.5]))
    noise = data.draw(st.sampled_from([0.0, 0.01, -1.0]))
    snaps = snapshot(w)
    got, err = call(synthetic_data, w, b, num, noise=noise, seed=0)
    assert_unchanged(snaps)
    valid = (
        w.ndim == 1
        and w.size >= 1
        and w.dtype != np.bool_
        and np.isfinite(w.astype(np.float64)).all()
        and isinstance(b, (int, float))
        and math.isfinite(b)
        and isinstance(num, int)
        and num >= 1
        and noise >= 0
    )
    if not valid:
        assert err is not None, "invalid synthetic_data call accepted"
        return
    assert err is None, err
    X, y = got
    assert X.shape == (num, w.size) and y.shape == (num,) and X.dtype == y.dtype == np.float32
    if noise == 0:
        want = X.astype(np.float64) @ w.astype(np.float64) + b
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5 * (1 + np.abs(want).max()))


# ----------------------------------------------------- linear layer and estimators


@FUZZ
@given(data=st.data())
def test_linear_forward_and_backward(data):
    from fastreg.linear import linear, linear_backward

    n, k, m = (data.draw(st.integers(0, 5)) for _ in range(3))
    shape_w = data.draw(st.sampled_from([(m, k), (m, k + 1), (k,)]))  # sometimes wrong on purpose
    x = data.draw(float_arrays((n, k)))
    w = data.draw(
        float_arrays(
            shape_w, dtypes=(x.dtype.type,) if data.draw(st.booleans()) else (np.float32, np.float64, np.int64)
        )
    )
    b = data.draw(st.none() | float_arrays((m,), dtypes=(x.dtype.type,)))
    snaps = snapshot(x, w, b)
    y, err = call(linear, x, w, b)
    assert_unchanged(snaps)
    if err is None:
        assert shape_w == (m, k) and w.dtype == x.dtype
        gy = np.ones((n, m), x.dtype)
        gw, gb, gx = linear_backward(x, w, gy, bias=True, input_grad=True)
        with np.errstate(all="ignore"):  # the float64 references meet 0 * inf too
            want = x.astype(np.float64) @ w.astype(np.float64).T + (0 if b is None else b.astype(np.float64))
            assert_close(y, want, x.dtype, x, w, b, want)
            assert_close(gw, gy.astype(np.float64).T @ x.astype(np.float64), x.dtype, x, gw)
            assert_close(gx, gy.astype(np.float64) @ w.astype(np.float64), x.dtype, w, gx)
        assert_close(gb, np.full(m, n, np.float64), x.dtype)
    else:
        assert shape_w != (m, k) or w.dtype != x.dtype


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), model=st.sampled_from(["softmax", "linear"]))
def test_estimators_fit_predict_or_refuse(data, model):
    n, d = data.draw(st.integers(0, 12)), data.draw(st.integers(0, 4))
    X = data.draw(float_arrays((n, d)))
    if model == "softmax":
        y = np.asarray(data.draw(st.lists(st.integers(-2, 3), min_size=n, max_size=n)), dtype=np.int64)
        est = fastreg.SoftmaxRegression(epochs=2, batch_size=data.draw(st.integers(1, 5)), random_state=0)
    else:
        y = data.draw(float_arrays((n,), dtypes=(np.float64,)))
        est = fastreg.LinearRegression(
            epochs=2,
            batch_size=data.draw(st.integers(1, 5)),
            random_state=0,
            loss=data.draw(st.sampled_from(["squared", "huber", "l1"])),
        )
    snaps = snapshot(X, y)
    fitted, err = call(est.fit, X, y)
    assert_unchanged(snaps)
    finite = np.isfinite(X).all() and np.isfinite(y).all()
    if err is None:
        assert n > 0 and d > 0 and finite
        pred = est.predict(X)
        assert pred.shape == (n,)
        if model == "softmax":
            assert set(np.unique(pred)) <= set(np.unique(y))
            proba = est.predict_proba(X)
            # inf logits give nan, as torch (two classes: decision_function is [n], scikit-learn's shape)
            ok = np.isfinite(est.decision_function(X).reshape(n, -1)).all(axis=1)
            np.testing.assert_allclose(proba[ok].sum(axis=1), 1.0, rtol=1e-5)
        else:
            assert np.isfinite(pred).all()
    elif isinstance(err, ValueError) and not finite and n > 0 and d > 0:
        assert "row" in str(err) or "finite" in str(err)

"""fastreg.ops.linear_cross_entropy against torch's F.cross_entropy(F.linear(...)) in float64."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastreg
from fastreg import _core
from fastreg.ops import linear_cross_entropy, linear_cross_entropy_with_grad

torch = pytest.importorskip("torch")
F = torch.nn.functional

TOL = {np.float32: 1e-5, np.float64: 1e-10}


def reference(
    h, w, y, b=None, *, ignore_index=-100, label_smoothing=0.0, reduction="mean", lse_square_scale=0.0, softcap=None
):
    """Loss, grad_h, grad_w, grad_b, lse, argmax by torch autograd in float64 (z-loss as Liger-Kernel)."""
    ht = torch.tensor(h, dtype=torch.float64, requires_grad=True)
    wt = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    bt = None if b is None else torch.tensor(b, dtype=torch.float64, requires_grad=True)
    z = F.linear(ht, wt, bt)
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    yt = torch.as_tensor(y)
    loss = F.cross_entropy(z, yt, ignore_index=ignore_index, label_smoothing=label_smoothing, reduction=reduction)
    lse = torch.logsumexp(z, 1)
    keep = yt != ignore_index
    z_loss = lse_square_scale * lse**2 * keep
    if lse_square_scale == 0:
        pass
    elif reduction == "mean":
        loss = loss + z_loss.sum() / keep.sum()
    elif reduction == "sum":
        loss = loss + z_loss.sum()
    else:
        loss = loss + z_loss
    loss.sum().backward()
    return (
        loss.detach().numpy(),
        ht.grad.numpy(),
        wt.grad.numpy(),
        None if b is None else bt.grad.numpy(),
        lse.detach().numpy(),
        z.detach().argmax(1).numpy(),
    )


def assert_close(got, want, tol, what):
    got = np.asarray(got, np.float64)
    assert got.shape == np.shape(want), what
    # Relative to the reference's norm; an exactly zero reference (one class: every
    # gradient is 0) is met to within tol absolutely.
    err = np.linalg.norm(got - want) / max(np.linalg.norm(want), np.sqrt(np.size(want)))
    assert err <= tol, f"{what}: relative error {err:.2e} > {tol:.0e}"


def make(rng, n, d, v, dtype, ignore_every=0, ignore_index=-100):
    h = (rng.standard_normal((n, d)) * 0.5).astype(dtype)
    w = (rng.standard_normal((v, d)) * 0.5).astype(dtype)
    b = rng.standard_normal(v).astype(dtype)
    y = rng.integers(0, v, n)
    if ignore_every:
        y[::ignore_every] = ignore_index
    return h, w, b, y


# Each option alone and all together; with and without a bias in turn.
OPTIONS = [
    {"bias": True},
    {"bias": False},
    {"label_smoothing": 0.2, "bias": False},
    {"lse_square_scale": 1e-2, "bias": True},
    {"softcap": 2.5, "bias": False},
    {"reduction": "sum", "bias": True},
    {"reduction": "none", "ignore_index": 3, "bias": False},
    {"label_smoothing": 0.1, "lse_square_scale": 1e-3, "softcap": 4.0, "reduction": "sum", "bias": True},
]
# (n, d, v): two row chunks and several vocabulary tiles, the last of each partial; one row;
# one class; a vocabulary smaller than one SIMD vector.
SHAPES = [(300, 24, 1000), (1, 16, 700), (9, 5, 1), (40, 8, 3)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_matches_torch(rng, dtype, shape, opts):
    opts = dict(opts)
    with_bias = opts.pop("bias")
    n, d, v = shape
    h, w, b, y = make(rng, n, d, v, dtype, ignore_every=7 if n > 1 else 0, ignore_index=opts.get("ignore_index", -100))
    if not with_bias:
        b = None
    want = reference(h, w, y, b, **opts)
    loss, gh, gw, gb, lse, am = linear_cross_entropy_with_grad(h, w, y, b, return_lse=True, return_argmax=True, **opts)
    tol = TOL[dtype]
    assert np.asarray(loss).dtype == dtype and gh.dtype == dtype and gw.dtype == dtype
    assert_close(loss, want[0], tol, "loss")
    assert_close(gh, want[1], tol, "grad_h")
    assert_close(gw, want[2], tol, "grad_weight")
    if with_bias:
        assert_close(gb, want[3], tol, "grad_bias")
    else:
        assert gb is None
    assert_close(lse, want[4], tol, "lse")
    if dtype == np.float64:  # float32 near-ties may legitimately differ
        np.testing.assert_array_equal(am, want[5])
    # The loss-only call gives the same loss, bit for bit.
    only = linear_cross_entropy(h, w, y, b, **opts)
    np.testing.assert_array_equal(only, loss)


def test_float32_argmax_matches_float32_logits(rng):
    h, w, b, y = make(rng, 200, 16, 999, np.float32)
    _, am = linear_cross_entropy(h, w, y, b, return_argmax=True)
    z = h.astype(np.float64) @ w.T.astype(np.float64) + b
    top2 = np.sort(z, 1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 1e-4  # rows whose max is not a float32 near-tie
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(am[clear], z.argmax(1)[clear])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_all_rows_ignored(rng, reduction):
    h, w, b, y = make(rng, 20, 6, 50, np.float64)
    y[:] = -100
    want = reference(h, w, y, b, reduction=reduction, label_smoothing=0.1)
    loss, gh, gw, gb = linear_cross_entropy_with_grad(h, w, y, b, reduction=reduction, label_smoothing=0.1)
    np.testing.assert_array_equal(np.isnan(loss), np.isnan(want[0]))  # mean over no rows: NaN
    if reduction != "mean":
        np.testing.assert_array_equal(loss, want[0])
    for got, ref in zip((gh, gw, gb), want[1:4]):
        np.testing.assert_array_equal(got, ref)  # zeros


def test_no_rows(rng):
    w = rng.standard_normal((10, 4))
    h, y = np.empty((0, 4)), np.empty(0, np.int64)
    loss, gh, gw, gb = linear_cross_entropy_with_grad(h, w, y, np.zeros(10))
    assert np.isnan(loss) and gh.shape == (0, 4)
    np.testing.assert_array_equal(gw, 0)
    np.testing.assert_array_equal(gb, 0)
    assert linear_cross_entropy(h, w, y, reduction="sum") == 0


def test_empty_vocabulary_as_torch(rng):
    h, w = rng.standard_normal((3, 4)), np.empty((0, 4))
    with pytest.raises(IndexError, match="Target 0 at row 0 is out of bounds"):
        linear_cross_entropy(h, w, np.zeros(3, np.int64))
    with pytest.raises(IndexError):  # torch: "Target 0 is out of bounds."
        F.cross_entropy(F.linear(torch.tensor(h), torch.tensor(w)), torch.zeros(3, dtype=torch.long))
    loss, gh, gw, _ = linear_cross_entropy_with_grad(h, w, np.full(3, -100))
    assert np.isnan(loss) and gw.shape == (0, 4)
    np.testing.assert_array_equal(gh, 0)


def test_identical_for_any_thread_count(rng):
    h, w, b, y = make(rng, 300, 32, 2100, np.float32, ignore_every=5)
    before = fastreg.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            fastreg.set_num_threads(threads)
            results.append(linear_cross_entropy_with_grad(h, w, y, b, label_smoothing=0.1, return_lse=True))
    finally:
        fastreg.set_num_threads(before)
    for other in results[1:]:
        for a, c in zip(results[0], other):
            np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_both_simd_paths(rng, simd_levels, dtype):
    h, w, b, y = make(rng, 70, 12, 301, dtype, ignore_every=4)
    want = reference(h, w, y, b, softcap=3.0, label_smoothing=0.1)
    for level in simd_levels:
        fastreg.set_simd_level(level)
        got = linear_cross_entropy_with_grad(h, w, y, b, softcap=3.0, label_smoothing=0.1)
        for g, r, what in zip(got, want, ("loss", "grad_h", "grad_weight", "grad_bias")):
            assert_close(g, r, TOL[dtype], f"{what} ({level})")


def test_tensors_in_tensors_out(rng):
    h, w, b, y = make(rng, 30, 8, 40, np.float32)
    ht, wt, bt, yt = (torch.from_numpy(a) for a in (h, w, b, y))
    loss, gh, gw, gb = linear_cross_entropy_with_grad(ht, wt, yt, bt)
    assert all(isinstance(t, torch.Tensor) for t in (loss, gh, gw, gb)) and loss.dtype == torch.float32
    np.testing.assert_array_equal(loss.numpy(), linear_cross_entropy(h, w, y, b))
    rows = linear_cross_entropy(ht, wt, yt.int(), bt, reduction="none")  # int32 targets are accepted
    assert isinstance(rows, torch.Tensor) and rows.shape == (30,)


def test_nan_reaches_only_the_rows_it_touches(rng):
    h, w, b, y = make(rng, 6, 5, 300, np.float64)
    h[2, 1] = np.nan
    rows, lse, am = linear_cross_entropy(h, w, y, b, reduction="none", return_lse=True, return_argmax=True)
    assert np.isnan(rows[2]) and np.isnan(lse[2]) and am[2] == 0  # the whole row is NaN: its first NaN
    assert np.isfinite(np.delete(rows, 2)).all()
    want = reference(h, w, y, b, reduction="none")
    np.testing.assert_allclose(np.delete(rows, 2), np.delete(want[0], 2), rtol=1e-12)
    _, gh, _, _ = linear_cross_entropy_with_grad(h, w, y, b, reduction="none")
    assert np.isnan(gh[2]).all() and np.isfinite(np.delete(gh, 2, axis=0)).all()
    w[17, 0] = np.nan  # one class's weights: every row's logits see it
    rows, am = linear_cross_entropy(h, w, y, b, reduction="none", return_argmax=True)
    assert np.isnan(rows).all() and (np.delete(am, 2) == 17).all() and am[2] == 0


def test_masked_classes_with_minus_inf_bias(rng):
    h, w, b, y = make(rng, 10, 4, 600, np.float64)
    b[:300] = -np.inf  # a whole tile and more masked out, as a vocabulary mask does
    y = rng.integers(300, 600, 10)
    want = reference(h, w, y, b)
    loss, gh, gw, _ = linear_cross_entropy_with_grad(h, w, y, b)
    assert_close(loss, want[0], 1e-10, "loss")
    assert_close(gh, want[1], 1e-10, "grad_h")
    assert_close(gw, want[2], 1e-10, "grad_weight")


@pytest.mark.parametrize(
    "change,exc,match",
    [
        (lambda a: a.update(w=a["w"][:, :3].copy()), ValueError, r"weight must have shape \(V, 4\)"),
        (lambda a: a.update(y=a["y"][:5]), ValueError, r"target must have shape \(8,\)"),
        (lambda a: a.update(b=a["b"][:3]), ValueError, r"bias must have shape \(20,\)"),
        (lambda a: a.update(w=a["w"].astype(np.float32)), TypeError, "weight must have the same dtype"),
        (lambda a: a.update(y=a["y"].astype(np.float64)), TypeError, "target must hold integer class indices"),
        (lambda a: a.update(h=a["h"][0]), ValueError, r"input must have shape \(N, D\)"),
        (lambda a: a.update(h=a["h"].astype(np.int64)), TypeError, "float32 or float64"),
        (lambda a: a["y"].__setitem__(3, 20), IndexError, "Target 20 at row 3 is out of bounds"),
        (lambda a: a["y"].__setitem__(1, -1), IndexError, "Target -1 at row 1"),
        (lambda a: a.update(softcap=0.0), ValueError, "softcap must be a finite number > 0"),
        (lambda a: a.update(label_smoothing=1.5), ValueError, "label_smoothing must be in"),
        (lambda a: a.update(reduction="avg"), ValueError, "reduction must be"),
        (lambda a: a.update(lse_square_scale=float("nan")), ValueError, "lse_square_scale must be finite"),
        (lambda a: a.update(h=[[1.0]]), TypeError, "input must be a numpy.ndarray or a torch.Tensor"),
    ],
)
def test_bad_input(rng, change, exc, match):
    h, w, b, y = make(rng, 8, 4, 20, np.float64)
    args = {"h": h, "w": w, "b": b, "y": y}
    change(args)
    kw = {k: args.pop(k) for k in ("softcap", "label_smoothing", "reduction", "lse_square_scale") if k in args}
    for fn in (linear_cross_entropy, linear_cross_entropy_with_grad):
        with pytest.raises(exc, match=match):
            fn(args["h"], args["w"], args["y"], args["b"], **kw)


def test_binding_checks_outputs_and_keeps_refcounts(rng):
    h, w, b, y = make(rng, 8, 4, 20, np.float32)
    gh, gw = np.empty_like(h), np.empty_like(w)
    args = (h, w, y, b, -100, "mean", 0.0, 0.0, None)
    with pytest.raises(ValueError, match="grad_weight must have shape"):
        _core.linear_cross_entropy(*args, gh, gw[:3], None, None, None, None)
    with pytest.raises(ValueError, match="must not share memory"):
        _core.linear_cross_entropy(*args, gh, w, None, None, None, None)
    with pytest.raises(TypeError, match="argmax must have dtype int64"):
        _core.linear_cross_entropy(*args, None, None, None, None, None, np.empty(8, np.int32))
    counts = [sys.getrefcount(a) for a in (h, w, b, y, gh, gw)]
    for _ in range(200):
        _core.linear_cross_entropy(*args, gh, gw, None, None, None, None)
    assert [sys.getrefcount(a) for a in (h, w, b, y, gh, gw)] == counts


def test_tiles_follow_the_shapes():
    assert _core.linear_cross_entropy_tiles(4096, 32000) == (256, 256)
    assert _core.linear_cross_entropy_tiles(5, 100) == (5, 100)  # never larger than the problem
    assert _core.linear_cross_entropy_tiles(4096, 32000, 64, 512) == (64, 512)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self")
def test_never_allocates_the_logits():
    # RSS high-water mark in a fresh process, reset just before the call: the [N, V]
    # float32 logits alone would be 256 MiB; the kernel's own buffers are [256, V]
    # (32 MiB) and small tiles.
    code = textwrap.dedent("""
        import numpy as np
        from fastreg.ops import linear_cross_entropy_with_grad
        rng = np.random.default_rng(0)
        n, d, v = 2048, 64, 32768
        h = rng.standard_normal((n, d), dtype=np.float32)
        w = rng.standard_normal((v, d), dtype=np.float32)
        y = rng.integers(0, v, n)
        out = linear_cross_entropy_with_grad(h[:8], w[:300], y[:8] % 300)  # load BLAS, threads
        def status(key):
            with open("/proc/self/status") as f:
                return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = status("VmRSS")
        out = linear_cross_entropy_with_grad(h, w, y)
        print(status("VmHWM") - before - h.nbytes - w.nbytes)  # less the gradients' own bytes
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    extra = int(proc.stdout.split()[-1])
    assert extra < 48 * 2**20, f"peak RSS grew by {extra / 2**20:.0f} MiB (logits would be 256 MiB)"


# ------------------------------------------------------------------ fastreg.torch autograd


def _leaves(rng, n, d, v, dtype=torch.float64, bias=True):
    h, w, b, y = make(rng, n, d, v, np.float64, ignore_every=6)

    def leaf(a):
        return torch.tensor(a, dtype=dtype, requires_grad=True)

    return leaf(h), leaf(w), (leaf(b) if bias else None), torch.from_numpy(y)


def _clones(*ts):
    return [None if t is None else t.detach().clone().requires_grad_() for t in ts]


@pytest.mark.parametrize(
    "opts",
    [
        {},
        {"reduction": "sum", "label_smoothing": 0.1},
        {"lse_square_scale": 1e-2, "softcap": 3.0},
        {"reduction": "none"},
    ],
)
def test_torch_autograd_matches_torch(rng, opts):
    from fastreg.torch import linear_cross_entropy as flce

    h, w, b, y = _leaves(rng, 150, 12, 700)
    h2, w2, b2 = _clones(h, w, b)
    upstream = (
        torch.rand(150, dtype=torch.float64)
        if opts.get("reduction") == "none"
        else torch.tensor(0.7, dtype=torch.float64)
    )
    loss = flce(h, w, y, b, **opts)
    ref = reference(h2.detach().numpy(), w2.detach().numpy(), y.numpy(), b2.detach().numpy(), **opts)
    assert_close(loss.detach().numpy(), ref[0], 1e-10, "loss")
    (loss * upstream).sum().backward()
    want = _reference_grads(h2, w2, y, b2, opts, upstream)
    for got, r, what in zip((h.grad, w.grad, b.grad), want, ("h", "weight", "bias")):
        assert_close(got.numpy(), r.numpy(), 1e-10, f"grad {what}")


def _reference_grads(h, w, y, b, opts, upstream):
    from fastreg._torch_linear_cross_entropy import _reference

    o = {"ignore_index": -100, "label_smoothing": 0.0, "reduction": "mean", "lse_square_scale": 0.0, "softcap": None}
    o.update(opts)
    loss = _reference(
        h, w, y, b, o["ignore_index"], o["label_smoothing"], o["reduction"], o["lse_square_scale"], o["softcap"]
    )
    (loss * upstream).sum().backward()
    return h.grad, w.grad, b.grad


def test_torch_none_reduction_summed_uses_the_kernel_and_3d_inputs(rng):
    from fastreg.torch import linear_cross_entropy as flce

    h, w, _, y = _leaves(rng, 24, 8, 50, bias=False)
    h3, y3 = h.detach().reshape(4, 6, 8).requires_grad_(), y.reshape(4, 6)
    rows = flce(h3, w, y3, reduction="none")
    assert rows.shape == (4, 6)
    rows.mean().backward()
    h2, w2 = _clones(h, w)
    F.cross_entropy(F.linear(h2, w2), y, reduction="none").mean().backward()
    assert_close(h3.grad.reshape(24, 8).numpy(), h2.grad.numpy(), 1e-10, "grad h")
    assert_close(w.grad.numpy(), w2.grad.numpy(), 1e-10, "grad weight")


def test_torch_module_retain_graph_and_no_double_backward(rng):
    from fastreg.torch import LinearCrossEntropyLoss

    h, w, b, y = _leaves(rng, 40, 6, 30, dtype=torch.float32)
    loss_fn = LinearCrossEntropyLoss(label_smoothing=0.1)
    assert "label_smoothing=0.1" in repr(loss_fn)
    loss = loss_fn(h, w, y, b)
    loss.backward(retain_graph=True)
    first = w.grad.clone()
    loss.backward()
    torch.testing.assert_close(w.grad, 2 * first)
    with pytest.raises(RuntimeError, match="does not support higher-order gradients"):
        torch.autograd.grad(loss_fn(h, w, y, b), h, create_graph=True)
    with pytest.raises(ValueError, match="reduction"):
        LinearCrossEntropyLoss(reduction="avg")


def test_torch_fallback_warns_and_matches(rng):
    from fastreg.torch import FastregFallbackWarning
    from fastreg.torch import linear_cross_entropy as flce

    h, w, _, y = _leaves(rng, 10, 4, 20, bias=False)
    with pytest.warns(FastregFallbackWarning, match="no fused kernel"):
        loss = flce(h.bfloat16(), w.bfloat16(), y)
    ref = F.cross_entropy(F.linear(h.bfloat16(), w.bfloat16()), y)
    torch.testing.assert_close(loss, ref)

"""cross_entropy: ops.cross_entropy / cross_entropy_with_grad and the _core kernels behind them,
against torch at every SIMD level (the small-C lane kernel and the row kernel included)."""

import itertools

import numpy as np
import pytest

import fastreg
from _helpers import TOL, _close
from fastreg import _core, ops

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _torch_xent(x, y, *, prob, weight=None, **kw):
    """Reference: torch in float64 on the same (dtype-rounded) inputs -> (loss, grad)."""
    xt = torch.tensor(x.astype(np.float64), requires_grad=True)
    yt = torch.tensor(y.astype(np.float64) if prob else y)
    wt = None if weight is None else torch.tensor(weight.astype(np.float64))
    loss = F.cross_entropy(xt, yt, weight=wt, **kw)
    loss.sum().backward()
    return loss.detach().numpy(), xt.grad.numpy()


def _make_xent(rng, dtype, prob, n=None, c=None, ignore_frac=0.2):
    n = int(rng.integers(1, 70)) if n is None else n
    c = int(rng.integers(1, 40)) if c is None else c
    x = (rng.standard_normal((n, c)) * 3).astype(dtype)
    if prob:
        y = rng.random((n, c)).astype(dtype)
        y /= y.sum(axis=1, keepdims=True)
        y[rng.random((n, c)) < 0.2] = 0  # some exact zeros, rows not normalised: both allowed
    else:
        y = rng.integers(0, c, n)
        y[rng.random(n) < ignore_frac] = -100
    return x, y


XENT_GRID = list(itertools.product([False, True], [False, True], [0.0, 0.3], ["mean", "sum", "none"]))


@pytest.mark.parametrize("weighted, prob, smoothing, reduction", XENT_GRID)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_matches_torch(rng, dtype, weighted, prob, smoothing, reduction, simd_levels):
    x, y = _make_xent(rng, dtype, prob)
    w = (rng.random(x.shape[1]) + 0.1).astype(dtype) if weighted else None
    kw = dict(reduction=reduction, label_smoothing=smoothing)
    ref_loss, ref_grad = _torch_xent(x, y, prob=prob, weight=w, **kw)
    for level in simd_levels:
        fastreg.set_simd_level(level)
        loss = ops.cross_entropy(x, y, weight=w, **kw)
        loss2, grad = ops.cross_entropy_with_grad(x, y, weight=w, **kw)
        assert np.asarray(loss).dtype == dtype and grad.dtype == dtype and grad.shape == x.shape
        _close(loss, ref_loss, dtype, f"loss {level}")
        _close(loss2, ref_loss, dtype, f"loss (with grad) {level}")
        _close(grad, ref_grad, dtype, f"grad {level}")


@pytest.mark.parametrize("ignore_index", [-100, 0, 3])
def test_ignore_index_and_mean_denominator(rng, ignore_index):
    x = rng.standard_normal((50, 5))
    y = rng.integers(0, 5, 50)
    w = rng.random(5) + 0.5
    for smoothing in (0.0, 0.4):
        ref, ref_g = _torch_xent(x, y, prob=False, weight=w, ignore_index=ignore_index, label_smoothing=smoothing)
        got, g = ops.cross_entropy_with_grad(x, y, weight=w, ignore_index=ignore_index, label_smoothing=smoothing)
        _close(got, ref, np.float64)
        _close(g, ref_g, np.float64)
        assert np.all(g[y == ignore_index] == 0)


def test_large_shapes_and_threads_agree(rng):
    x, y = _make_xent(rng, np.float32, False, n=3000, c=257)
    ref_loss, ref_grad = _torch_xent(x, y, prob=False, label_smoothing=0.1)
    default = fastreg.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            fastreg.set_num_threads(threads)
            results.append(ops.cross_entropy_with_grad(x, y, label_smoothing=0.1))
    finally:
        fastreg.set_num_threads(default)
    for loss, grad in results:
        _close(loss, ref_loss, np.float32)
        _close(grad, ref_grad, np.float32)
        assert loss == results[0][0]  # summation order does not depend on the thread count
        np.testing.assert_array_equal(grad, results[0][1])


def test_grad_in_place_over_logits(rng):
    x, y = _make_xent(rng, np.float32, False, n=40, c=13)
    ref_loss, ref_grad = _torch_xent(x, y, prob=False, label_smoothing=0.2)
    buf = x.copy()
    loss, g = ops.cross_entropy_with_grad(buf, y, label_smoothing=0.2, out=buf)
    assert g is buf
    _close(loss, ref_loss, np.float32)
    _close(buf, ref_grad, np.float32)


def test_out_buffer_and_grad_scale_tensor_io(rng):
    x, y = _make_xent(rng, np.float64, False, n=20, c=6)
    xt = torch.tensor(x, requires_grad=True)
    loss, g = ops.cross_entropy_with_grad(xt, torch.tensor(y))
    assert isinstance(loss, torch.Tensor) and isinstance(g, torch.Tensor)
    ref = F.cross_entropy(xt, torch.tensor(y))
    ref.backward()
    torch.testing.assert_close(loss, ref.detach())
    torch.testing.assert_close(g, xt.grad)
    out = np.full_like(x, 7.0)
    _, g2 = ops.cross_entropy_with_grad(x, y, out=out)
    assert g2 is out
    np.testing.assert_allclose(out, xt.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_unbatched_and_int32_labels(rng):
    x = rng.standard_normal(9)
    ref = F.cross_entropy(torch.tensor(x), torch.tensor(4))
    assert ops.cross_entropy(x, 4) == pytest.approx(ref.item(), rel=1e-12)
    xb, yb = _make_xent(rng, np.float64, False, n=10, c=4, ignore_frac=0)
    assert ops.cross_entropy(xb, yb.astype(np.int32)) == pytest.approx(ops.cross_entropy(xb, yb), rel=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_extreme_logits_stay_finite(rng, dtype, simd_levels):
    n, c = 64, 37
    x = rng.standard_normal((n, c)).astype(dtype)
    picks = rng.random((n, c))
    x[picks < 0.2] = 1e4
    x[(picks >= 0.2) & (picks < 0.4)] = -1e4
    x[(picks >= 0.4) & (picks < 0.5)] = -np.inf
    x[:, 0] = 50  # every row has a finite max; class 0 is never -inf
    y = np.where(rng.random(n) < 0.5, 0, rng.integers(0, c, n))
    y[np.isneginf(x[np.arange(n), y])] = 0  # targets at -inf give +inf, also in the math
    ref_loss, ref_grad = _torch_xent(x, y, prob=False, reduction="none")
    assert np.all(np.isfinite(ref_loss))
    for level in simd_levels:
        fastreg.set_simd_level(level)
        loss, grad = ops.cross_entropy_with_grad(x, y, reduction="none")
        assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
        _close(loss, ref_loss, dtype)
        _close(grad, ref_grad, dtype)


def test_nan_row_gives_nan_for_that_row_only(rng):
    x = rng.standard_normal((6, 11)).astype(np.float32)
    x[2, 5] = np.nan
    x[4, 0] = np.nan
    y = rng.integers(0, 11, 6)
    loss, grad = ops.cross_entropy_with_grad(x, y, reduction="none")
    bad = np.array([2, 4])
    assert np.all(np.isnan(loss[bad])) and np.all(np.isfinite(np.delete(loss, bad)))
    assert np.all(np.isnan(grad[bad])) and np.all(np.isfinite(np.delete(grad, bad, axis=0)))
    assert np.isnan(ops.cross_entropy(x, y))


def test_empty_batch_and_all_ignored_as_torch():
    for n in (0, 3):
        x = np.zeros((n, 4))
        y = np.full(n, -100)
        ref, ref_g = _torch_xent(x, y, prob=False)
        loss, g = ops.cross_entropy_with_grad(x, y)
        assert np.isnan(ref) and np.isnan(loss)
        np.testing.assert_array_equal(g, ref_g)
        assert ops.cross_entropy(x, y, reduction="sum") == 0
        assert ops.cross_entropy(x, y, reduction="none").shape == (n,)
    assert np.isnan(ops.cross_entropy(np.zeros((0, 3)), np.zeros((0, 3))))


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(y=np.array([0, 1, 5])), IndexError, "Target 5 at row 2"),
        (dict(y=np.array([-1, 1, 2])), IndexError, "Target -1 at row 0"),
        (dict(y=np.array([0.0, 1.0, 2.0])), TypeError, "integer class indices"),
        (dict(y=np.array([True, False, True])), TypeError, "int64 class indices"),
        (dict(x=np.zeros((3, 4), dtype=np.int64)), TypeError, "float32 or float64"),
        (dict(y=np.array([0, 1])), ValueError, r"shape \(3,\)"),
        (dict(weight=np.ones(3)), ValueError, "one weight per class"),
        (dict(weight=np.ones(4, dtype=np.float32)), TypeError, "weight must have the same dtype"),
        (dict(label_smoothing=-0.1), ValueError, "label_smoothing"),
        (dict(label_smoothing=1.5), ValueError, "label_smoothing"),
        (dict(reduction="avg"), ValueError, "reduction"),
        (dict(x=np.zeros((3, 4, 2))), ValueError, "logits must have shape"),
        (dict(x=np.zeros((3, 0))), ValueError, "at least one class"),
        (
            dict(y=np.zeros((3, 4), dtype=np.float32)),
            TypeError,
            "target .class probabilities. must have the same dtype",
        ),
        (dict(ignore_index=1.5), TypeError, "ignore_index"),
        (dict(x=[[1.0, 2.0]] * 3 + [[1.0]]), ValueError, "inhomogeneous"),
    ],
)
def test_cross_entropy_bad_input(rng, kwargs, exc, match):
    x = kwargs.pop("x", rng.standard_normal((3, 4)))
    y = kwargs.pop("y", np.array([0, 1, 2]))
    with pytest.raises(exc, match=match):
        ops.cross_entropy_with_grad(x, y, **kwargs)


def test_bad_out_buffers_are_refused_and_untouched(rng):
    x = rng.standard_normal((8, 5))
    y = rng.integers(0, 5, 8)
    cases = [
        (np.zeros((8, 5), dtype=np.float32), TypeError, "dtype"),
        (np.zeros((8, 4)), ValueError, "shape"),
        (np.zeros((5, 8)).T, ValueError, "C-contiguous"),
        (np.zeros((8, 5))[::-1], ValueError, "C-contiguous"),
        (x.reshape(-1)[5:].reshape(7, 5), ValueError, "share memory"),  # overlaps the logits
    ]
    ro = np.zeros((8, 5))
    ro.flags.writeable = False
    cases.append((ro, ValueError, "read-only"))
    big = np.zeros(41)
    cases.append((big[1:].reshape(8, 5), None, None))  # valid: a view into a larger buffer
    for out, exc, match in cases:
        before = out.copy()
        if exc is None:
            ops.cross_entropy_with_grad(x, y, out=out)
            assert big[0] == 0  # nothing written outside the view
            continue
        with pytest.raises(exc, match=match):
            ops.cross_entropy_with_grad(x, y, out=out)
        np.testing.assert_array_equal(out, before)
    # overlapping but not identical to the logits
    buf = rng.standard_normal(45)
    xs = buf[:40].reshape(8, 5)
    with pytest.raises(ValueError, match="share memory"):
        _core.cross_entropy(xs, y, None, -100, "mean", 0.0, buf[5:45].reshape(8, 5), None)


def test_non_contiguous_negative_stride_and_read_only_inputs(rng):
    base = rng.standard_normal((10, 12))
    x = base[::-1, ::2]
    y = rng.integers(0, 6, 10)[::-1]
    x.flags.writeable = False
    ref, ref_g = _torch_xent(np.ascontiguousarray(x), np.ascontiguousarray(y), prob=False)
    loss, g = ops.cross_entropy_with_grad(x, y)
    _close(loss, ref, np.float64)
    _close(g, ref_g, np.float64)


# ---------------- small C: the one-row-per-lane kernel (C <= 16) ----------------

LANE_C_MAX = 16  # cpp/cross_entropy_rows.inl kLaneMaxC; 17 takes the row kernel


def _lane_shape(rng):
    """C in 1..17 (both kernels, both sides of the switch); N never a multiple of 8 (or 4),
    with full 16-row (float32) / 8-row (float64) blocks plus a partial one (the avx512
    level runs the AVX2 lane kernel)."""
    c = int(rng.integers(1, LANE_C_MAX + 2))
    n = 8 * int(rng.integers(0, 13)) + int(rng.integers(1, 8))
    return n, c


@pytest.mark.parametrize("weighted, prob, smoothing, reduction", XENT_GRID)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_small_c_lane_kernel_matches_torch(rng, dtype, weighted, prob, smoothing, reduction, simd_levels):
    for _ in range(4):  # fresh shapes each round
        n, c = _lane_shape(rng)
        x, y = _make_xent(rng, dtype, prob, n=n, c=c, ignore_frac=0.25)
        ignore_index = -100
        if not prob and rng.random() < 0.5:  # an ignore_index that is also a valid class
            ignore_index = int(rng.integers(0, c))
            y[y == -100] = ignore_index
        w = (rng.random(c) + 0.1).astype(dtype) if weighted else None
        kw = dict(reduction=reduction, label_smoothing=smoothing)
        if not prob:
            kw["ignore_index"] = ignore_index
        ref_loss, ref_grad = _torch_xent(x, y, prob=prob, weight=w, **kw)
        for level in simd_levels:
            fastreg.set_simd_level(level)
            loss = ops.cross_entropy(x, y, weight=w, **kw)
            loss2, grad = ops.cross_entropy_with_grad(x, y, weight=w, **kw)
            what = f"{level} n={n} c={c} ignore_index={ignore_index}"
            _close(loss, ref_loss, dtype, f"loss {what}")
            _close(loss2, ref_loss, dtype, f"loss (with grad) {what}")
            _close(grad, ref_grad, dtype, f"grad {what}")
            if not prob:
                assert np.all(grad[y == ignore_index] == 0), what


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_small_c_every_class_count_matches_torch(rng, dtype, reduction, simd_levels):
    # The plain call (class indices, no weights, no smoothing) runs a copy of the lane
    # kernel per class count: each one, with and without the gradient, full blocks and a
    # partial one, an ignored row, and a row whose maximum is its target.
    for c in range(1, LANE_C_MAX + 2):
        n = 2 * 16 + 5
        x, y = _make_xent(rng, dtype, False, n=n, c=c, ignore_frac=0.0)
        y[4] = -100
        x[7, y[7]] = x[7].max() + 30.0  # a confident row: its loss is tiny, its gradient too
        ref_loss, ref_grad = _torch_xent(x, y, prob=False, reduction=reduction)
        for level in simd_levels:
            fastreg.set_simd_level(level)
            _close(ops.cross_entropy(x, y, reduction=reduction), ref_loss, dtype, f"loss {level} c={c}")
            loss, grad = ops.cross_entropy_with_grad(x, y, reduction=reduction)
            _close(loss, ref_loss, dtype, f"loss (with grad) {level} c={c}")
            _close(grad, ref_grad, dtype, f"grad {level} c={c}")
            assert np.all(grad[4] == 0), (level, c)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_small_c_vector_level_agrees_with_scalar(rng, dtype, vector_level):
    x, y = _make_xent(rng, dtype, False, n=203, c=10)
    x[3, 4] = 1e4
    x[5, :3] = -200  # exps that underflow to 0 (in float32)
    w = (rng.random(10) + 0.1).astype(dtype)
    tol = {np.float32: 4e-7, np.float64: 1e-15}[dtype]  # a few ulp: exp and log1p agree to ~1 ulp
    got = {}
    for level in ("scalar", vector_level):
        fastreg.set_simd_level(level)
        got[level] = ops.cross_entropy_with_grad(x, y, weight=w, label_smoothing=0.1, reduction="none")
    (l0, g0), (l1, g1) = got["scalar"], got[vector_level]
    np.testing.assert_allclose(l1, l0, rtol=tol, atol=tol * np.abs(l0).max())
    np.testing.assert_allclose(g1, g0, rtol=tol, atol=tol * np.abs(g0).max())


# Row kernel (C > 16): widths that leave every tail length at 8 and 16 lanes (AVX-512
# finishes a row with one masked step, AVX2 and scalar with a scalar loop).
ROW_TAIL_CS = [17, 23, 31, 33, 40, 47, 100, 1000, 1007]


@pytest.mark.parametrize("weighted, prob, smoothing", [(w, p, s) for w, p, s, r in XENT_GRID if r == "none"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_kernel_vector_level_agrees_with_scalar(rng, dtype, weighted, prob, smoothing, vector_level):
    # Same inputs on both paths: they differ only in summation order and the exp/log1p
    # ulp, so the tolerance is a few ulp of the row's scale, the same for every level.
    tol = {np.float32: 2e-6, np.float64: 1e-14}[dtype]
    for c in ROW_TAIL_CS:
        x, y = _make_xent(rng, dtype, prob, n=int(rng.integers(1, 40)), c=c)
        x[0, -1] = 30  # the max in a tail column
        w = (rng.random(c) + 0.1).astype(dtype) if weighted else None
        kw = dict(weight=w, label_smoothing=smoothing, reduction="none")
        got = {}
        for level in ("scalar", vector_level):
            fastreg.set_simd_level(level)
            loss, grad = ops.cross_entropy_with_grad(x, y, **kw)
            sm, lsm, lse = ops.softmax(x), ops.log_softmax(x), ops.logsumexp(x)
            got[level] = (loss, grad, sm, lsm, lse)
        for name, a, b in zip(
            ["loss", "grad", "softmax", "log_softmax", "logsumexp"], got["scalar"], got[vector_level]
        ):
            assert b.dtype == dtype
            np.testing.assert_allclose(b, a, rtol=tol, atol=tol * max(np.abs(a).max(), 1e-2), err_msg=f"{name} c={c}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_kernel_tails_write_only_their_rows(rng, dtype, simd_levels):
    # Outputs written into the front of a larger buffer: whatever follows the last row's
    # tail must keep its values (a store past the row's end would change it).
    for c in (17, 33, 1007):
        n = 3
        x = (rng.standard_normal((n, c)) * 3).astype(dtype)
        y = rng.integers(0, c, n)
        for level in simd_levels:
            fastreg.set_simd_level(level)
            for what in ("softmax", "log_softmax", "grad"):
                buf = rng.standard_normal(n * c + 40).astype(dtype)
                after = buf[n * c :].copy()
                out = buf[: n * c].reshape(n, c)
                if what == "grad":
                    _core.cross_entropy(x, y, None, -100, "mean", 0.0, out, None)
                    _, ref = _torch_xent(x, y, prob=False)
                else:
                    _core.softmax(x, out, what == "log_softmax")
                    ref = (F.softmax if what == "softmax" else F.log_softmax)(torch.tensor(x.astype(np.float64)), -1)
                _close(out, np.asarray(ref), dtype, f"{what} {level} c={c}")
                np.testing.assert_array_equal(buf[n * c :], after, err_msg=f"{what} {level} c={c}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_small_c_confident_rows_keep_relative_accuracy(rng, dtype, simd_levels):
    # The target logit leads by 8..30: the loss log1p(sum_{j != y} e^(x_j - x_y)) is down to
    # ~1e-12, which log(1 + t) rounds away (torch's float64 result is off by ~1e-4 relative
    # here); log1p(t) keeps it. Reference: that formula in long double.
    n, c = 29, 7
    x = rng.standard_normal((n, c)).astype(dtype)
    y = rng.integers(0, c, n)
    x[np.arange(n), y] += rng.uniform(8, 30, n).astype(dtype)
    xl = x.astype(np.longdouble)
    others = np.exp(xl - xl[np.arange(n), y][:, None])
    others[np.arange(n), y] = 0
    ref_loss = np.log1p(others.sum(axis=1)).astype(np.float64)
    _, ref_grad = _torch_xent(x, y, prob=False, reduction="none")
    assert ref_loss.min() < 1e-10
    for level in simd_levels:
        fastreg.set_simd_level(level)
        loss, grad = ops.cross_entropy_with_grad(x, y, reduction="none")
        np.testing.assert_allclose(loss, ref_loss, rtol=10 * TOL[dtype], err_msg=level)  # per row, relative
        _close(grad, ref_grad, dtype, level)


def test_small_c_in_place_nan_extremes_and_threads(rng, simd_levels):
    x, y = _make_xent(rng, np.float32, False, n=8 * 3 + 5, c=6)
    x[2, 1] = np.nan  # a full block
    y[2] = 3
    x[27, 0] = np.nan  # the partial last block
    x[4] = [1e4, -1e4, -np.inf, 0, 50, -50]
    y[4] = 0
    y[27] = -100  # ignored: 0 loss and 0 gradient despite the NaN
    ref_loss, ref_grad = _torch_xent(x, y, prob=False, reduction="none")
    for level in simd_levels:
        fastreg.set_simd_level(level)
        buf = x.copy()
        loss, g = ops.cross_entropy_with_grad(buf, y, reduction="none", out=buf)
        assert g is buf
        assert np.isnan(loss[2]) and np.all(np.isnan(g[2]))
        assert loss[27] == 0 and np.all(g[27] == 0)
        ok = np.ones(len(y), bool)
        ok[[2, 27]] = False  # torch: NaN gradient for the ignored NaN row (0 * NaN); ours is 0
        _close(loss[ok], ref_loss[ok], np.float32, level)
        _close(g[ok], ref_grad[ok], np.float32, level)
    # Enough rows for two threads: same bits as one thread.
    x, y = _make_xent(rng, np.float32, False, n=20_003, c=10)
    default = fastreg.get_num_threads()
    try:
        res = []
        for threads in (1, 2):
            fastreg.set_num_threads(threads)
            res.append(ops.cross_entropy_with_grad(x, y))
    finally:
        fastreg.set_num_threads(default)
    assert res[0][0] == res[1][0]
    np.testing.assert_array_equal(res[0][1], res[1][1])


def test_fast_path_and_general_path_agree(rng):
    # ops takes NumPy int64 / contiguous inputs straight to C++; other inputs are converted
    # first. Both routes give the same results and the same errors.
    x, y = _make_xent(rng, np.float64, False, n=19, c=5)
    ref = ops.cross_entropy_with_grad(x, y, label_smoothing=0.2)
    for xx, yy, ls in [
        (x, y.astype(np.int32), 0.2),
        (np.asfortranarray(x), y, 0.2),
        (x, y, np.float64(0.2)),
        (torch.tensor(x), torch.tensor(y), 0.2),
    ]:
        loss, g = ops.cross_entropy_with_grad(xx, yy, label_smoothing=ls)
        assert float(loss) == pytest.approx(float(ref[0]), rel=1e-7)
        np.testing.assert_allclose(np.asarray(g), ref[1], rtol=1e-7, atol=1e-12)
    bad_y = y.copy()
    bad_y[7] = 5
    with pytest.raises(IndexError, match="Target 5 at row 7"):
        ops.cross_entropy(x, bad_y)
    with pytest.raises(ValueError, match="reduction"):
        ops.cross_entropy(x, y, reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing"):
        ops.cross_entropy(x, y, label_smoothing=1.5)
    with pytest.raises(TypeError, match="weight must have the same dtype"):
        ops.cross_entropy(x, y, weight=np.ones(5, dtype=np.float32))
    w = rng.random(10) + 0.5
    assert ops.cross_entropy(x, y, weight=w[::2]) == ops.cross_entropy(x, y, weight=w[::2].copy())
    out = np.empty((19, 5), dtype=np.float32)
    with pytest.raises(TypeError, match="dtype"):
        ops.cross_entropy_with_grad(x, y, out=out)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_fast_entry_matches_general_path(rng, dtype):
    # _core.cross_entropy, the op's one entry, runs plain C-contiguous arrays with int64 labels
    # on its header-only fast path and converts everything else itself; both give the answer
    # of the general path.
    x, y = _make_xent(rng, dtype, False, n=37, c=7)
    w = (rng.random(7) + 0.1).astype(dtype)
    y3 = np.where(y == -100, 3, y)  # ignore_index 3, a valid class
    for yl, kw in [
        (y, dict()),
        (y, dict(weight=w, reduction="sum")),
        (y, dict(reduction="none", label_smoothing=0.3)),
        (y3, dict(ignore_index=3, weight=w)),
    ]:
        args = (
            kw.get("weight"),
            kw.get("ignore_index", -100),
            kw.get("reduction", "mean"),
            kw.get("label_smoothing", 0.0),
        )
        out = np.empty_like(x)
        fast_loss, fast_g = _core.cross_entropy(x, yl, *args, out, None, 1.0, True)
        assert fast_g is out
        fast_only = _core.cross_entropy(x, yl, *args, None, None, 1.0, False)
        slow_loss, slow_g = ops.cross_entropy_with_grad(torch.tensor(x), torch.tensor(yl), **kw)  # general path
        assert type(fast_only) is type(fast_loss) and type(fast_loss) in (np.ndarray, np.dtype(dtype).type)
        np.testing.assert_array_equal(fast_loss, slow_loss.numpy())
        np.testing.assert_array_equal(fast_only, fast_loss)
        np.testing.assert_array_equal(fast_g, slow_g.numpy())
        loss, g = ops.cross_entropy_with_grad(x, yl, **kw)
        assert np.asarray(loss).dtype == dtype and g.dtype == dtype and g.shape == x.shape
        np.testing.assert_array_equal(loss, fast_loss)
    y = yl  # what follows runs on the loop's last labels (y3), as before the loop variable was renamed
    # Anything that needs a conversion is converted by the same entry, never a wrong answer.
    args = (None, -100, "mean", 0.0, None, None, 1.0, True)

    def converted(xx, yy):
        return _core.cross_entropy(np.ascontiguousarray(xx), np.ascontiguousarray(yy, dtype=np.int64), *args)

    for xx, yy in [
        (x, y.astype(np.int32)),
        (x[:, ::2], y % 4),
        (np.asfortranarray(x), y),
        (x, y.astype(y.dtype.newbyteorder())),
    ]:
        (loss, g), (ref_loss, ref_g) = _core.cross_entropy(xx, yy, *args), converted(xx, yy)
        np.testing.assert_array_equal(loss, ref_loss)
        np.testing.assert_array_equal(g, ref_g)
    loss, g = _core.cross_entropy(x[0], y[:1].reshape(()), *args)  # unbatched: logits [C], target []
    ref_loss, ref_g = converted(x[:1], y[:1])
    np.testing.assert_array_equal(loss, ref_loss)
    np.testing.assert_array_equal(g, ref_g[0])
    with pytest.raises(TypeError, match="numpy.ndarray"):  # tensors are converted by fastreg.ops
        _core.cross_entropy(torch.tensor(x), y, *args)
    # An out that shares memory with the labels is refused, never written.
    mem = np.zeros(x.nbytes + y.nbytes, dtype=np.uint8)
    y_shared = mem[: y.nbytes].view(np.int64)
    y_shared[:] = y
    out_shared = mem[8 : 8 + x.nbytes].view(x.dtype).reshape(x.shape)
    with pytest.raises(ValueError, match="share memory"):
        _core.cross_entropy(x, y_shared, None, -100, "mean", 0.0, out_shared, None, 1.0, True)
    np.testing.assert_array_equal(y_shared, y)
    # Scalar options of other types are checked and converted as fastreg.ops documents.
    plain = _core.cross_entropy(x, y, None, -100, "mean", 0.1, None, None, 1.0, False)
    for ii, ls in [(np.int64(-100), 0.1), (-100, np.float64(0.1)), (np.int32(-100), 0.1)]:
        assert _core.cross_entropy(x, y, None, ii, "mean", ls, None, None, 1.0, False) == plain
    assert _core.cross_entropy(x, y, None, -100, "mean", 0, None, None, 1.0, False) == ops.cross_entropy(x, y)
    with pytest.raises(TypeError, match="ignore_index must be an int, got bool"):
        _core.cross_entropy(x, y, None, True, "mean", 0.0, None, None, 1.0, True)
    with pytest.raises(OverflowError, match="ignore_index must fit"):
        _core.cross_entropy(x, y, None, 2**70, "mean", 0.0, None, None, 1.0, True)
    with pytest.raises(ValueError, match="reduction"):
        _core.cross_entropy(x, y, None, -100, 3, 0.0, None, None, 1.0, True)
    # Bad values are still caught (by the same C++ checks as the general path).
    args = (None, -100, "mean", 0.0, None, None, 1.0, True)
    bad = y.copy()
    bad[5] = 7
    with pytest.raises(IndexError, match="Target 7 at row 5"):
        _core.cross_entropy(x, bad, *args)
    with pytest.raises(ValueError, match="reduction"):
        _core.cross_entropy(x, y, None, -100, "avg", 0.0, None, None, 1.0, True)
    with pytest.raises(ValueError, match="label_smoothing"):
        _core.cross_entropy(x, y, None, -100, "mean", 1.5, None, None, 1.0, True)


def test_probability_targets_with_ignore_index_raise_as_torch(rng):
    x = rng.standard_normal((5, 3))
    p = rng.dirichlet(np.ones(3), 5)
    for ii in (0, 2):
        with pytest.raises(ValueError, match="ignore_index is not supported for floating point target"):
            ops.cross_entropy(x, p, ignore_index=ii)
        with pytest.raises(ValueError, match="ignore_index is not supported for floating point target"):
            ops.cross_entropy_with_grad(x, p, ignore_index=ii)
        with pytest.raises(ValueError, match="ignore_index is not supported for floating point target"):
            ops.cross_entropy(torch.tensor(x, requires_grad=True), torch.tensor(p), ignore_index=ii)
    want = F.cross_entropy(torch.tensor(x), torch.tensor(p), ignore_index=-5)
    np.testing.assert_allclose(ops.cross_entropy(x, p, ignore_index=-5), want.numpy(), rtol=1e-12)

"""The training epoch's paths by number of outputs c, each against a float64 NumPy reference of
torch's SGD loop.
- few outputs (c <= 32, cpp/linear.cpp + few_outputs.inl): at the AVX2 and AVX-512 levels the
  epoch's two products run on fastreg's own SIMD kernels instead of the BLAS. Every level is
  compared, over output counts around the kernels' register blocks (6 for AVX2, 12 for AVX-512)
  and the 32-output limit, feature counts around the vector widths (masked tails), batch tails and
  a weight array that is not on a cache-line boundary (the epoch then reads an aligned copy).
- many classes (c >= 512, cpp/epoch.cpp): each batch through the fused linear + cross-entropy
  kernel, with one weight gradient."""

import numpy as np
import pytest

import fastreg
import fastreg._core as _core
import fastreg.linear

_ALL_LEVELS = ["scalar", "avx2", "avx512"]
LEVELS = _ALL_LEVELS[: _ALL_LEVELS.index(_core.cpu_simd_level()) + 1]  # every level this CPU runs


@pytest.fixture(autouse=True)
def _restore_level():
    fastreg.linear._ensure_blas()
    before = fastreg.simd_level()
    yield
    fastreg.set_simd_level(before)


def _reference(X, y, order, w, b, *, lr, momentum, wd, batch, kind):
    """torch.optim.SGD over minibatches of `order`, in float64: mean loss per batch, weight decay
    on w only, momentum buffers filled by the first step."""
    w, b = w.astype(np.float64), b.astype(np.float64)
    X = X.astype(np.float64)
    bw = bb = None
    for s in range(0, len(order), batch):
        idx = order[s : s + batch]
        xb = X[idx]
        z = xb @ w.T + b
        if kind == "softmax":
            p = np.exp(z - z.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            p[np.arange(len(idx)), y[idx]] -= 1.0
            gz = p / len(idx)
        else:  # squared: 0.5 r^2
            gz = (z[:, 0] - y[idx])[:, None] / len(idx)
        gw = gz.T @ xb + wd * w
        gb = gz.sum(axis=0)
        if momentum:
            bw = gw if bw is None else momentum * bw + gw
            bb = gb if bb is None else momentum * bb + gb
            gw, gb = bw, bb
        w = w - lr * gw
        b = b - lr * gb
    return w, b


def _misaligned(shape, dtype):
    """A C-contiguous zero array whose data does not start on a 64-byte boundary."""
    n = int(np.prod(shape))
    raw = np.zeros(n + 64, dtype)
    start = next(i for i in range(1, 64) if (raw[i:].ctypes.data % 64) != 0)
    return raw[start : start + n].reshape(shape)


def _run(level, c, d, dtype, batch, *, n=300, momentum=0.9, wd=1e-3, misaligned=False, kind="softmax", seed=0, lr=0.2):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(dtype)
    y = rng.integers(0, c, n) if kind == "softmax" else rng.standard_normal(n).astype(dtype)
    order = rng.permutation(n)
    w0 = (0.1 * rng.standard_normal((c, d))).astype(dtype)
    b0 = (0.1 * rng.standard_normal(c)).astype(dtype)
    w = _misaligned((c, d), dtype) if misaligned else np.empty((c, d), dtype)
    w[...] = w0
    b = b0.copy()
    wbuf, bbuf = np.zeros_like(w0), np.zeros_like(b0)
    fastreg.set_simd_level(level)
    epoch = _core.softmax_epoch if kind == "softmax" else _core.regression_epoch
    res = epoch(
        X, y, order, w, b, wbuf, bbuf, lr=lr, momentum=momentum, weight_decay=wd, batch_size=batch, first_step=True
    )
    assert res[2] == n and res[3]
    rw, rb = _reference(X, y, order, w0, b0, lr=lr, momentum=momentum, wd=wd, batch=batch, kind=kind)
    tol = dict(rtol=2e-4, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(w, rw, **tol)
    np.testing.assert_allclose(b, rb, **tol)
    return w, b


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d", [1, 7, 17, 33, 100])
@pytest.mark.parametrize("c", [1, 2, 5, 6, 7, 10, 12, 13, 25, 32, 33])
def test_softmax_epoch_matches_reference(level, dtype, d, c):
    _run(level, c, d, dtype, batch=64)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("batch", [1, 2, 3, 31, 100, 256])
def test_batch_tails(level, batch):
    # a small lr: 257 single-row steps with momentum would amplify float32 rounding
    _run(level, 10, 40, np.float32, batch=batch, n=257, lr=0.01)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("c,d", [(10, 784), (3, 16), (32, 65), (10, 5)])
def test_weight_not_on_a_cache_line(level, dtype, c, d):
    w, b = _run(level, c, d, dtype, batch=128, n=400, misaligned=True)
    assert w.ctypes.data % 64 != 0  # the caller's array itself was updated


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d", [1, 16, 17, 300])
def test_regression_epoch_matches_reference(level, dtype, d):
    _run(level, 1, d, dtype, batch=50, kind="regression")


@pytest.mark.parametrize("level", LEVELS)
def test_large_weight_updated_in_chunks(level):
    # c * d large enough that the update runs as its own team phase in chunks of W
    # (each chunk refreshes its part of the aligned copy).
    _run(level, 10, 20000, np.float32, batch=64, n=256, misaligned=True)


def test_levels_agree_and_threads_do_not_change_results():
    rng = np.random.default_rng(3)
    X = rng.random((3000, 784), dtype=np.float32)
    y = rng.integers(0, 10, 3000)
    order = rng.permutation(3000)
    out = {}
    before = _core.num_threads()
    try:
        for level in LEVELS:
            for threads in (1, 2):
                _core.set_num_threads(threads)
                fastreg.set_simd_level(level)
                w, b = np.zeros((10, 784), np.float32), np.zeros(10, np.float32)
                _core.softmax_epoch(
                    X, y, order, w, b, None, None, lr=0.1, momentum=0.0, weight_decay=0.0, batch_size=256
                )
                out[level, threads] = w, b
    finally:
        _core.set_num_threads(before)
    for level in LEVELS:  # bit-identical for any team size at one level
        np.testing.assert_array_equal(out[level, 1][0], out[level, 2][0])
        np.testing.assert_array_equal(out[level, 1][1], out[level, 2][1])
        np.testing.assert_allclose(out[level, 1][0], out["scalar", 1][0], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("c,d,batch", [(1024, 8, 64), (1500, 33, 100), (2100, 3, 1)])
@pytest.mark.parametrize("momentum,wd", [(0.0, 0.0), (0.9, 1e-3)])
def test_many_classes_epoch_matches_reference(dtype, c, d, batch, momentum, wd):
    assert _core.epoch_many_classes(c, False)
    _run(
        "avx512" if "avx512" in LEVELS else LEVELS[-1],
        c,
        d,
        dtype,
        batch=batch,
        n=200,
        momentum=momentum,
        wd=wd,
        lr=0.5,
    )


def test_many_classes_loss_accuracy_and_nonfinite_rows():
    rng = np.random.default_rng(5)
    n, c, d = 300, 1200, 16
    X = rng.standard_normal((n, d)).astype(np.float32)
    y = rng.integers(0, c, n)
    order = rng.permutation(n)
    w = (0.5 * rng.standard_normal((c, d))).astype(np.float32)
    b = np.zeros(c, np.float32)
    z = X[order[:128]].astype(np.float64) @ w.T.astype(np.float64)
    lse = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
    want_loss = float(np.sum(lse - z[np.arange(128), y[order[:128]]]))
    want_correct = int(np.sum(z.argmax(1) == y[order[:128]]))
    loss, correct, rows, finite, bad = _core.softmax_epoch(
        X, y, order[:128], w.copy(), b.copy(), None, None, lr=0.1, momentum=0.0, weight_decay=0.0, batch_size=128
    )
    assert (rows, finite, bad) == (128, True, -1)
    assert correct == want_correct
    assert loss == pytest.approx(want_loss, rel=1e-5)
    # A NaN in a row of the second batch: the first batch trains, the epoch stops before the second.
    X[order[200]] = np.nan
    w1 = w.copy()
    res = _core.softmax_epoch(
        X, y, order, w1, b.copy(), None, None, lr=0.1, momentum=0.0, weight_decay=0.0, batch_size=128, check_finite=True
    )
    assert res[4] == order[200] and res[2] == 128
    assert np.isfinite(w1).all() and not np.array_equal(w1, w)


def test_many_classes_estimator_matches_the_general_path():
    # The same model trained with sample weights of 1 (the general team path) and without (the
    # many-classes path): equal to float32 rounding.
    rng = np.random.default_rng(6)
    n, c, d = 2000, 1100, 12
    centers = rng.standard_normal((c, d))
    y = rng.integers(0, c, n)
    X = (centers[y] + 0.1 * rng.standard_normal((n, d))).astype(np.float32)
    kw = dict(epochs=2, lr=0.5, batch_size=100, random_state=0)
    a = fastreg.SoftmaxRegression(**kw).fit(X, y)
    b = fastreg.SoftmaxRegression(**kw).fit(X, y, sample_weight=np.ones(n))
    np.testing.assert_allclose(a.coef_, b.coef_, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(a.history_["train_loss"], b.history_["train_loss"], rtol=1e-5)


def test_many_classes_predict_and_eval_without_logits():
    # predict and the per-epoch evaluation use the fused kernel (argmax, mean loss) for many
    # classes: equal to the logits' argmax and the float64 log-softmax loss.
    rng = np.random.default_rng(8)
    n, c, d = 3000, 800, 24
    centers = rng.standard_normal((c, d))
    y = np.arange(n) % c  # every class occurs in training
    X = (centers[y] + 0.3 * rng.standard_normal((n, d))).astype(np.float32)
    m = fastreg.SoftmaxRegression(epochs=2, lr=1.0, batch_size=64, random_state=0, verbose=False)
    m.fit(X[:2400], y[:2400], eval_set=(X[2400:], y[2400:]))
    assert m._many_classes()
    z = X[2400:].astype(np.float64) @ m.coef_.T.astype(np.float64) + m.intercept_
    np.testing.assert_array_equal(m.predict(X[2400:]), m.classes_[np.argmax(m.decision_function(X[2400:]), 1)])
    assert np.mean(m.predict(X[2400:]) == m.classes_[z.argmax(1)]) > 0.99  # float32 vs float64 near-ties aside
    lse = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
    want = float(np.mean(lse - z[np.arange(600), y[2400:]]))
    assert m.history_["eval_loss"][-1] == pytest.approx(want, rel=1e-4)
    assert m.history_["eval_acc"][-1] == pytest.approx(m.score(X[2400:], y[2400:]))

import re

import numpy as np
import pytest

import fastreg
from fastreg import LinearRegression, SoftmaxRegression, _core

torch = pytest.importorskip("torch")


def _seed(rng) -> int:
    return int(rng.integers(2**31))


def _blobs(rng, n=600, d=12, c=4, dtype=np.float32):
    centers = rng.normal(0, 2.0, (c, d))
    y = rng.integers(0, c, n)
    X = (centers[y] + rng.normal(0, 1.0, (n, d))).astype(dtype)
    return X, y


def _torch_reference(X, y, seed, *, c, lr, batch_size, epochs, momentum, weight_decay, loss_fn, dtype, metrics=None):
    """The d2l concise loop (nn.Linear + loss + optim.SGD), fed fastreg's documented
    init and batch order: one numpy Generator(seed) draws the N(0, 0.01^2) weights,
    then, per epoch, the seed of fastreg's shuffle. Weight decay on the weight only.
    `metrics` (a list) receives each epoch's (mean loss, accuracy), taken from every
    batch's output before its update, as d2l's train_epoch_ch3."""
    gen = np.random.default_rng(seed)
    w0 = gen.normal(0.0, 0.01, size=(c, X.shape[1]))
    net = torch.nn.Linear(X.shape[1], c, dtype=dtype)
    with torch.no_grad():
        net.weight.copy_(torch.from_numpy(w0))
        net.bias.zero_()
    opt = torch.optim.SGD(
        [{"params": [net.weight], "weight_decay": weight_decay}, {"params": [net.bias]}],
        lr=lr,
        momentum=momentum,
    )
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    for _ in range(epochs):
        order = torch.from_numpy(_core.random_permutation(len(X), int(gen.integers(2**63)), 0))
        loss_sum = right = 0.0
        for s in range(0, len(X), batch_size):
            idx = order[s : s + batch_size]
            out = net(Xt[idx])
            loss = loss_fn(out, yt[idx])
            loss_sum += float(loss.detach()) * len(idx)
            if c > 1:
                right += float((out.argmax(1) == yt[idx]).sum())
            opt.zero_grad()
            loss.backward()
            opt.step()
        if metrics is not None:
            metrics.append((loss_sum / len(X), right / len(X)))
    return net.weight.detach().numpy(), net.bias.detach().numpy()


# --- numeric contract ------------------------------------------------------


def test_d2l_3_2_synthetic_recovers_w_and_b(rng):
    true_w, true_b = np.array([2.0, -3.4]), 4.2
    X = rng.normal(0, 1, (1000, 2))
    y = X @ true_w + true_b + rng.normal(0, 0.01, 1000)
    m = LinearRegression(random_state=_seed(rng)).fit(X.astype(np.float32), y.astype(np.float32))
    assert m.coef_.dtype == np.float32
    assert np.abs(m.coef_ - true_w).max() < 2e-3
    assert abs(m.intercept_ - true_b) < 2e-3
    assert m.n_iter_ == 3 and len(m.history_["train_loss"]) == 3
    assert m.history_["train_loss"][-1] < 1e-3 < m.history_["train_loss"][0]


def test_normal_solver_matches_lstsq(rng):
    X = rng.standard_normal((200, 7))
    y = rng.standard_normal(200)
    m = LinearRegression(solver="normal").fit(X, y)
    A = np.hstack([X, np.ones((200, 1))])
    ref = np.linalg.lstsq(A, y, rcond=None)[0]
    np.testing.assert_allclose(m.coef_, ref[:-1], rtol=1e-10, atol=1e-12)
    assert abs(m.intercept_ - ref[-1]) < 1e-10
    np.testing.assert_allclose(m.predict(X), A @ ref, rtol=1e-10, atol=1e-12)


def test_normal_solver_rank_deficient_gives_min_norm_and_warns(rng):
    X = rng.standard_normal((50, 3))
    X = np.hstack([X, X[:, :1] * 2.0])  # a duplicated direction
    y = rng.standard_normal(50)
    with pytest.warns(RuntimeWarning, match="rank-deficient"):
        m = LinearRegression(solver="normal").fit(X, y)
    ref = np.linalg.pinv(np.hstack([X, np.ones((50, 1))])) @ y
    np.testing.assert_allclose(np.append(m.coef_, m.intercept_), ref, rtol=1e-9, atol=1e-11)


def test_digits_accuracy():
    datasets = pytest.importorskip("sklearn.datasets")
    X, y = datasets.load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    X, y = X[order], y[order]
    k = int(0.8 * len(y))
    mu, sd = X[:k].mean(0), X[:k].std(0) + 1e-8
    Xtr, Xte = ((X[:k] - mu) / sd).astype(np.float32), ((X[k:] - mu) / sd).astype(np.float32)
    m = SoftmaxRegression(epochs=20, batch_size=32, random_state=1).fit(Xtr, y[:k], eval_set=(Xte, y[k:]))
    assert m.score(Xte, y[k:]) >= 0.94
    assert m.history_["eval_acc"][-1] == pytest.approx(m.score(Xte, y[k:]))


@pytest.mark.parametrize("momentum, weight_decay", [(0.0, 0.0), (0.9, 0.0), (0.5, 1e-2)])
def test_softmax_epoch_matches_torch_loop(rng, momentum, weight_decay):
    X, y = _blobs(rng, n=777, d=20, c=5)
    seed = _seed(rng)
    kw = dict(lr=0.1, batch_size=64, epochs=2, momentum=momentum, weight_decay=weight_decay)
    m = SoftmaxRegression(random_state=seed, **kw).fit(X, y)
    metrics = []
    w_ref, b_ref = _torch_reference(
        X, y, seed, c=5, loss_fn=torch.nn.functional.cross_entropy, dtype=torch.float32, metrics=metrics, **kw
    )
    np.testing.assert_allclose(m.coef_, w_ref, rtol=1e-5, atol=1e-5 * np.abs(w_ref).max())
    np.testing.assert_allclose(m.intercept_, b_ref, rtol=1e-5, atol=1e-5 * np.abs(b_ref).max())
    # the epoch's mean loss and accuracy are d2l's: each batch's, before its update
    # (float32 logits from different summation orders: ~1e-7 of a logit apart)
    np.testing.assert_allclose(m.history_["train_loss"], [loss for loss, _ in metrics], rtol=1e-5, atol=1e-6)
    assert m.history_["train_acc"] == [acc for _, acc in metrics]


@pytest.mark.parametrize("n_threads", [1, 2])
def test_train_accuracy_breaks_ties_as_torch_argmax(rng, threads, n_threads):
    # zero weights: every logit of the one batch is 0, a 10-way tie; torch.argmax (and
    # scikit-learn's predict) take the first class, so the accuracy is that class's share
    threads(n_threads)
    X, y = _team_data(rng, 1000, 300, 10)
    m = SoftmaxRegression(init="zeros", batch_size=len(X), epochs=1, lr=0.1).fit(X, y)
    assert m.history_["train_acc"] == [np.mean(y == 0)]
    torch_pred = torch.zeros(len(X), 10).argmax(1).numpy()
    assert m.history_["train_acc"][0] == np.mean(torch_pred == y)


@pytest.mark.parametrize("loss", ["squared", "huber", "l1"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_regression_epoch_matches_torch_loop(rng, loss, dtype):
    X = rng.standard_normal((301, 6)).astype(dtype)
    y = (X @ rng.standard_normal(6) + 0.5 + rng.normal(0, 2.0, 301)).astype(dtype)
    seed = _seed(rng)
    fns = {
        "squared": lambda p, t: ((p[:, 0] - t) ** 2 / 2).mean(),
        "huber": lambda p, t: torch.nn.functional.huber_loss(p[:, 0], t, delta=1.0),
        "l1": lambda p, t: torch.nn.functional.l1_loss(p[:, 0], t),
    }
    kw = dict(lr=0.03, batch_size=10, epochs=2, momentum=0.9, weight_decay=1e-3)
    m = LinearRegression(random_state=seed, loss=loss, **kw).fit(X, y)
    w_ref, b_ref = _torch_reference(X, y, seed, c=1, loss_fn=fns[loss], dtype=torch.from_numpy(X).dtype, **kw)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(m.coef_, w_ref[0], rtol=tol, atol=tol * np.abs(w_ref).max())
    assert m.intercept_ == pytest.approx(float(b_ref[0]), rel=tol, abs=tol * float(np.abs(w_ref).max()))


def test_uint8_source_equals_float_source_scaled(rng):
    X8 = rng.integers(0, 256, (300, 16), dtype=np.uint8)
    y = rng.integers(0, 3, 300)
    seed = _seed(rng)
    a = SoftmaxRegression(epochs=2, batch_size=32, random_state=seed).fit(X8, y)
    b = SoftmaxRegression(epochs=2, batch_size=32, random_state=seed).fit(
        X8.astype(np.float32) * np.float32(1 / 255), y
    )
    assert a.coef_.dtype == np.float32
    np.testing.assert_allclose(a.coef_, b.coef_, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(a.predict_proba(X8), b.predict_proba(X8.astype(np.float32) / 255), rtol=1e-5)


def test_zeros_init_trains_too(rng):
    X, y = _blobs(rng)
    m = SoftmaxRegression(init="zeros", epochs=5, random_state=_seed(rng)).fit(X, y)
    assert m.score(X, y) > 0.9
    assert m.history_["train_loss"][0] > m.history_["train_loss"][-1]


# --- estimator API -----------------------------------------------------------


def test_history_predict_proba_and_label_encoding(rng):
    X, y_idx = _blobs(rng, c=3)
    names = np.array(["cat", "dog", "emu"])
    y = names[y_idx]
    Xe, ye_idx = _blobs(rng, n=100, c=3)
    m = SoftmaxRegression(epochs=4, random_state=_seed(rng)).fit(X, y, eval_set=(Xe, names[ye_idx]))
    assert list(m.classes_) == ["cat", "dog", "emu"]
    h = m.history_
    assert set(h) == {"epoch", "train_loss", "train_acc", "eval_loss", "eval_acc", "seconds"}
    assert all(len(v) == 4 for v in h.values()) and h["epoch"] == [1, 2, 3, 4]
    assert m.coef_.shape == (3, 12) and m.intercept_.shape == (3,)
    proba = m.predict_proba(Xe)
    logits = Xe.astype(np.float64) @ m.coef_.T.astype(np.float64) + m.intercept_
    ref = np.exp(logits - logits.max(1, keepdims=True))
    ref /= ref.sum(1, keepdims=True)
    np.testing.assert_allclose(proba, ref, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-6)
    assert (m.predict(Xe) == names[ref.argmax(1)]).all()
    nll = -np.log(ref[np.arange(100), ye_idx]).mean()
    assert h["eval_loss"][-1] == pytest.approx(nll, rel=1e-4)
    assert h["eval_acc"][-1] == pytest.approx(np.mean(ref.argmax(1) == ye_idx))


def test_partial_fit_continues_like_more_epochs(rng):
    X, y = _blobs(rng)
    seed = _seed(rng)
    full = SoftmaxRegression(epochs=3, momentum=0.9, random_state=seed).fit(X, y)
    part = SoftmaxRegression(epochs=1, momentum=0.9, random_state=seed).fit(X, y)
    part.partial_fit(X, y)
    part.partial_fit(X, y)
    np.testing.assert_array_equal(part.coef_, full.coef_)
    assert part.n_iter_ == 3 and part.history_["epoch"] == [1, 2, 3]
    fresh = SoftmaxRegression(random_state=seed).partial_fit(X[:50], y[:50], classes=np.unique(y))
    assert fresh.n_iter_ == 1 and len(fresh.classes_) == len(np.unique(y))


def test_get_set_params_and_sklearn_clone(rng):
    m = LinearRegression(lr=0.01, loss="huber")
    p = m.get_params()
    assert p["lr"] == 0.01 and p["loss"] == "huber" and p["solver"] == "sgd" and p["batch_size"] == 10
    assert set(SoftmaxRegression().get_params()) == {
        "lr",
        "batch_size",
        "epochs",
        "momentum",
        "weight_decay",
        "init",
        "shuffle",
        "random_state",
        "verbose",
        "warm_start",
        "device",
    }
    assert p["device"] == "cpu"
    assert m.set_params(epochs=7) is m and m.epochs == 7
    with pytest.raises(ValueError, match="Invalid parameter"):
        m.set_params(alpha=1.0)
    base = pytest.importorskip("sklearn.base")
    c = base.clone(m)
    assert c.get_params() == m.get_params() and c is not m


def test_regression_score_and_eval_history(rng):
    X = rng.standard_normal((400, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 3.0
    m = LinearRegression(epochs=5, random_state=_seed(rng)).fit(X, y, eval_set=(X[:50], y[:50]))
    assert set(m.history_) == {"epoch", "train_loss", "eval_loss", "seconds"}
    assert m.score(X, y) > 0.999
    assert m.coef_.dtype == np.float64 and isinstance(m.intercept_, float)


def test_verbose_reports_each_epoch(rng, capsys):
    X, y = _blobs(rng, n=100)
    SoftmaxRegression(epochs=2, verbose=True, random_state=0).fit(X, y)
    err = capsys.readouterr().err
    assert "train_loss" in err and "train_acc" in err


def test_torch_tensor_inputs(rng):
    X, y = _blobs(rng)
    a = SoftmaxRegression(epochs=1, random_state=3).fit(torch.from_numpy(X), torch.from_numpy(y))
    b = SoftmaxRegression(epochs=1, random_state=3).fit(X, y)
    np.testing.assert_array_equal(a.coef_, b.coef_)


def test_show_config_names_the_blas():
    import io

    buf = io.StringIO()
    fastreg.show_config(file=buf)
    assert "cython_blas" in buf.getvalue()


# --- bad input -------------------------------------------------------------------


def test_diverging_run_raises_naming_epoch_and_keeps_finite_params(rng):
    X = rng.normal(0, 100, (200, 5))
    y = X @ rng.standard_normal(5)
    m = LinearRegression(lr=10.0, epochs=5, random_state=0)
    with pytest.raises(fastreg.models.TrainingDivergedError, match=r"epoch (\d+).*smaller lr") as info:
        m.fit(X, y)
    assert int(re.search(r"epoch (\d+)", str(info.value)).group(1)) >= 1
    # a failed fit leaves the estimator as it was: here, unfitted (issue 21 item 3)
    assert not hasattr(m, "n_iter_") and not hasattr(m, "coef_")
    assert isinstance(info.value, ValueError) and isinstance(info.value, FloatingPointError)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_X_or_y_names_the_row(rng, bad):
    X, y = _blobs(rng, n=50)
    X[17, 3] = bad
    with pytest.raises(ValueError, match="row 17"):
        SoftmaxRegression().fit(X, y)
    Xr = rng.standard_normal((30, 2))
    yr = rng.standard_normal(30)
    yr[5] = bad
    with pytest.raises(ValueError, match="row 5"):
        LinearRegression().fit(Xr, yr)


@pytest.mark.parametrize(
    "make, exc, match",
    [
        (lambda: SoftmaxRegression(lr=0), ValueError, "lr"),
        (lambda: SoftmaxRegression(lr=-0.1), ValueError, "lr"),
        (lambda: SoftmaxRegression(lr=float("nan")), ValueError, "lr"),
        (lambda: SoftmaxRegression(epochs=0), ValueError, "epochs"),
        (lambda: SoftmaxRegression(batch_size=0), ValueError, "batch_size"),
        (lambda: SoftmaxRegression(batch_size=2.5), TypeError, "batch_size"),
        (lambda: SoftmaxRegression(momentum=-1), ValueError, "momentum"),
        (lambda: SoftmaxRegression(init="xavier"), ValueError, "init"),
        (lambda: LinearRegression(loss="hinge"), ValueError, "loss"),
        (lambda: LinearRegression(solver="qr"), ValueError, "solver"),
        (lambda: LinearRegression(solver="normal", loss="l1"), ValueError, "squared"),
    ],
)
def test_bad_hyper_parameters(rng, make, exc, match):
    X, y = _blobs(rng, n=20)
    with pytest.raises(exc, match=match):
        make().fit(X, y)


@pytest.mark.parametrize(
    "X, y, exc, match",
    [
        (np.ones(5), np.zeros(5), ValueError, "2-D"),
        (np.ones((5, 2)), np.zeros(4), ValueError, "4 entries but X has 5 rows"),
        (np.ones((5, 2)), np.zeros((5, 2)), ValueError, "1-D"),
        (np.ones((0, 2)), np.zeros(0), ValueError, r"0 sample\(s\)"),
        (np.array([["a", "b"]]), np.zeros(1), TypeError, "numeric"),
    ],
)
def test_bad_shapes(X, y, exc, match):
    with pytest.raises(exc, match=match):
        SoftmaxRegression().fit(X, y)


def test_predict_checks(rng):
    X, y = _blobs(rng, n=50)
    with pytest.raises(fastreg.models.NotFittedError, match="not fitted"):
        SoftmaxRegression().predict(X)
    m = SoftmaxRegression(epochs=1).fit(X, y)
    with pytest.raises(ValueError, match="features"):
        m.predict(X[:, :3])
    with pytest.raises(ValueError, match="not one of classes_"):
        m.fit(X, y, eval_set=(X, y + 100))
    with pytest.raises(TypeError, match="tuple"):
        m.fit(X, y, eval_set=[X, y])


def test_epoch_binding_rejects_bad_arguments(rng):
    X = rng.standard_normal((10, 3)).astype(np.float32)
    y = rng.integers(0, 2, 10)
    w, b = np.zeros((2, 3), np.float32), np.zeros(2, np.float32)
    kw = dict(lr=0.1, momentum=0.0, weight_decay=0.0, batch_size=4)
    order = np.arange(10)
    with pytest.raises(IndexError, match=r"order\[2\] = 10"):
        _core.softmax_epoch(X, y, np.array([0, 1, 10]), w, b, None, None, **kw)
    with pytest.raises(ValueError, match="at row 4"):
        y_bad = y.copy()
        y_bad[4] = 2
        _core.softmax_epoch(X, y_bad, order, w, b, None, None, **kw)
    with pytest.raises(TypeError, match="float32"):
        _core.softmax_epoch(X, y, order, w.astype(np.float64), b, None, None, **kw)
    w_ro = w.copy()
    w_ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        _core.softmax_epoch(X, y, order, w_ro, b, None, None, **kw)
    with pytest.raises(ValueError, match="momentum buffers"):
        _core.softmax_epoch(X, y, order, w, b, None, None, **{**kw, "momentum": 0.9})
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.softmax_epoch(np.asfortranarray(X), y, order, w, b, None, None, **kw)
    with pytest.raises(ValueError, match="batch_size"):
        _core.softmax_epoch(X, y, order, w, b, None, None, **{**kw, "batch_size": 0})
    with pytest.raises(ValueError, match=r"y must have shape \(10,\) like X's rows, got \(9,\)"):
        _core.softmax_epoch(X, y[:9], order, w, b, None, None, **kw)
    with pytest.raises(TypeError, match="y must have dtype int64"):
        _core.softmax_epoch(X, y.astype(np.int32), order, w, b, None, None, **kw)
    with pytest.raises(ValueError, match="y must be C-contiguous"):
        _core.softmax_epoch(X, np.repeat(y, 2)[::2], order, w, b, None, None, **kw)
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(10,\) like X's rows"):
        _core.softmax_epoch(X, y, order, w, b, None, None, **kw, sample_weight=np.ones(3, np.float32))
    np.testing.assert_array_equal(w, 0)  # nothing was written by any refused call
    # Regression: targets of weight's dtype, one per row, a weight of one row, a known loss.
    t = X[:, 0].copy()
    w1, b1 = w[:1].copy(), b[:1].copy()
    with pytest.raises(ValueError, match="loss must be 'squared', 'huber' or 'l1', got 'hinge'"):
        _core.regression_epoch(X, t, order, w1, b1, None, None, **kw, loss="hinge")
    with pytest.raises(ValueError, match=r"weight must have shape \(1, n_features\)"):
        _core.regression_epoch(X, t, order, w, b, None, None, **kw)
    with pytest.raises(TypeError, match="float32"):
        _core.regression_epoch(X, t.astype(np.float64), order, w1, b1, None, None, **kw)
    with pytest.raises(ValueError, match=r"y must have shape \(10,\) like X's rows, got \(10, 1\)"):
        _core.regression_epoch(X, t[:, None], order, w1, b1, None, None, **kw)
    np.testing.assert_array_equal(w1, 0)
    _core.regression_epoch(X, t, order, w1, b1, None, None, **kw, loss="huber")  # the valid call runs
    assert np.all(np.isfinite(w1)) and np.any(w1 != 0)


@pytest.mark.parametrize("d", [37, 64])  # whole lines and a tail; rows are checked 4 at a time
def test_epoch_gather_check_finds_the_first_non_finite_row(rng, simd_levels, d):
    # The first epoch's gather flags the first NaN/inf row it copies (any column, any
    # place in a group of rows) and stops before any update; the largest finite
    # values, negative zeros and denormals are not flagged.
    fastreg.linear._ensure_blas()
    n = 23  # a last group of three rows
    y = rng.integers(0, 3, n)
    order = rng.permutation(n)
    kw = dict(lr=0.1, momentum=0.0, weight_decay=0.0, batch_size=n, check_finite=True)
    for level in simd_levels:
        fastreg.set_simd_level(level)
        X = (rng.standard_normal((n, d)) * 1e-3).astype(np.float32)
        X[order[1], 0], X[order[2], d - 1], X[order[3], 1] = np.float32(-0.0), np.finfo(np.float32).tiny / 4, 1e30
        w, b = np.zeros((3, d), np.float32), np.zeros(3, np.float32)
        assert _core.softmax_epoch(X, y, order, w, b, None, None, **kw)[4] == -1  # nothing flagged
        for pos in (0, 2, 3, 5, 9, n - 1):
            for col in {0, 15, 16, d // 2, d - 1}:
                for bad in (np.nan, np.inf, -np.inf):
                    Xb = X.copy()
                    Xb[order[pos], col] = bad
                    Xb[order[n - 1 if pos < n - 1 else 0], 3] = np.nan  # a later (or earlier) bad row
                    w, b = np.ones((3, d), np.float32), np.ones(3, np.float32)
                    got = _core.softmax_epoch(Xb, y, order, w, b, None, None, **kw)[4]
                    first = order[min(pos, n - 1 if pos < n - 1 else 0)]
                    assert got == first, (level, pos, col, bad, got)
                    assert (w == 1).all() and (b == 1).all()  # stopped before the update


def test_concurrent_fits_release_the_gil_and_agree(rng):
    import threading

    X, y = _blobs(rng, n=3000, d=64, c=5)
    ref = SoftmaxRegression(epochs=2, random_state=5).fit(X, y).coef_
    models = [SoftmaxRegression(epochs=2, random_state=5) for _ in range(3)]
    threads = [threading.Thread(target=m.fit, args=(X, y)) for m in models]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for m in models:
        np.testing.assert_array_equal(m.coef_, ref)


def test_float64_training_path_agrees_with_float32(rng):
    X, y = _blobs(rng, n=500, d=8, c=3, dtype=np.float64)
    seed = _seed(rng)
    a = SoftmaxRegression(epochs=3, momentum=0.5, random_state=seed).fit(X, y)
    b = SoftmaxRegression(epochs=3, momentum=0.5, random_state=seed).fit(X.astype(np.float32), y)
    assert a.coef_.dtype == np.float64 and b.coef_.dtype == np.float32
    np.testing.assert_allclose(a.coef_, b.coef_, rtol=1e-4, atol=1e-5 * np.abs(a.coef_).max())


# --- the epoch's thread team -------------------------------------------------


@pytest.fixture
def threads():
    """Set fastreg's thread count inside a test; restored afterwards."""
    before = fastreg.get_num_threads()
    yield fastreg.set_num_threads
    fastreg.set_num_threads(before)


def _team_data(rng, n, d, c, dtype=np.float32):
    X, y = _blobs(rng, n=n, d=d, c=c, dtype=dtype)
    return X / np.float32(4), y


@pytest.mark.parametrize("n", [1500, 1537, 1281])  # last batch full, 1 row (member 0 has none), 1 row short
@pytest.mark.parametrize("momentum, weight_decay", [(0.0, 0.0), (0.9, 1e-2)])
def test_softmax_epoch_two_threads_equals_one_thread(rng, threads, n, momentum, weight_decay):
    d, c, batch = 300, 7, 256
    threads(2)
    assert _core.epoch_team_size(batch, d, c) == 2  # this size takes the two-thread path
    X, y = _team_data(rng, n, d, c)
    seed = _seed(rng)
    kw = dict(lr=0.1, batch_size=batch, epochs=2, momentum=momentum, weight_decay=weight_decay, random_state=seed)
    two = SoftmaxRegression(**kw).fit(X, y)
    threads(1)
    assert _core.epoch_team_size(batch, d, c) == 1
    one = SoftmaxRegression(**kw).fit(X, y)
    # the chunks and every sum's order are fixed by the shapes: bit-identical results
    np.testing.assert_array_equal(two.coef_, one.coef_)
    np.testing.assert_array_equal(two.intercept_, one.intercept_)
    assert two.history_["train_loss"] == one.history_["train_loss"]
    assert two.history_["train_acc"] == one.history_["train_acc"]


def test_softmax_two_thread_epoch_matches_torch_loop(rng, threads):
    threads(2)
    X, y = _team_data(rng, 1111, 300, 10)
    assert _core.epoch_team_size(128, 300, 10) == 2
    seed = _seed(rng)
    kw = dict(lr=0.1, batch_size=128, epochs=2, momentum=0.9, weight_decay=1e-3)
    m = SoftmaxRegression(random_state=seed, **kw).fit(X, y)
    w_ref, b_ref = _torch_reference(
        X, y, seed, c=10, loss_fn=torch.nn.functional.cross_entropy, dtype=torch.float32, **kw
    )
    np.testing.assert_allclose(m.coef_, w_ref, rtol=1e-5, atol=1e-5 * np.abs(w_ref).max())
    np.testing.assert_allclose(m.intercept_, b_ref, rtol=1e-5, atol=1e-5 * np.abs(b_ref).max())


def test_uint8_two_thread_epoch_equals_float_source(rng, threads):
    threads(2)
    X = rng.integers(0, 256, (900, 256)).astype(np.uint8)
    y = rng.integers(0, 10, 900)
    assert _core.epoch_team_size(256, 256, 10) == 2
    a = SoftmaxRegression(epochs=1, random_state=3).fit(X, y)
    b = SoftmaxRegression(epochs=1, random_state=3).fit(X.astype(np.float32) * np.float32(1 / 255), y)
    np.testing.assert_allclose(a.coef_, b.coef_, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("loss", ["squared", "huber", "l1"])
def test_regression_two_threads_equals_one_thread_and_torch(rng, threads, loss):
    d, batch = 600, 256
    X = rng.standard_normal((1000, d)).astype(np.float32)
    y = (X @ rng.standard_normal(d) / 10 + 0.5 + rng.normal(0, 1.0, 1000)).astype(np.float32)
    seed = _seed(rng)
    kw = dict(lr=0.01, batch_size=batch, epochs=2, momentum=0.9, weight_decay=1e-3, loss=loss, random_state=seed)
    threads(2)
    assert _core.epoch_team_size(batch, d, 1) == 2
    two = LinearRegression(**kw).fit(X, y)
    threads(1)
    one = LinearRegression(**kw).fit(X, y)
    np.testing.assert_array_equal(two.coef_, one.coef_)
    assert two.intercept_ == one.intercept_
    fns = {
        "squared": lambda p, t: ((p[:, 0] - t) ** 2 / 2).mean(),
        "huber": lambda p, t: torch.nn.functional.huber_loss(p[:, 0], t, delta=1.0),
        "l1": lambda p, t: torch.nn.functional.l1_loss(p[:, 0], t),
    }
    kw.pop("loss"), kw.pop("random_state")
    w_ref, _ = _torch_reference(X, y, seed, c=1, loss_fn=fns[loss], dtype=torch.float32, **kw)
    np.testing.assert_allclose(two.coef_, w_ref[0], rtol=1e-5, atol=1e-5 * np.abs(w_ref).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_big_batch_epoch_sums_several_blocks_per_chunk(rng, threads, dtype):
    # c * d = 50 * 2000: at most 10 partial gradients, so a 1024-row batch is cut into
    # chunks of two 64-row blocks each; still the torch loop, and the same for 1 and 2 threads.
    n, d, c = 1100, 2000, 50
    X = rng.standard_normal((n, d)).astype(dtype) / 8
    y = rng.integers(0, c, n)
    seed = _seed(rng)
    kw = dict(lr=0.5, batch_size=1024, epochs=2, momentum=0.9, weight_decay=1e-3)
    threads(2)
    assert _core.epoch_team_size(1024, d, c) == 2
    two = SoftmaxRegression(random_state=seed, **kw).fit(X, y)
    threads(1)
    one = SoftmaxRegression(random_state=seed, **kw).fit(X, y)
    np.testing.assert_array_equal(two.coef_, one.coef_)
    w_ref, b_ref = _torch_reference(
        X, y, seed, c=c, loss_fn=torch.nn.functional.cross_entropy, dtype=torch.from_numpy(X).dtype, **kw
    )
    tol = 1e-5 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(two.coef_, w_ref, rtol=tol, atol=tol * np.abs(w_ref).max())
    np.testing.assert_allclose(two.intercept_, b_ref, rtol=tol, atol=tol * np.abs(b_ref).max())


def test_epoch_chunks_cover_each_batch_and_end_small():
    # A team's batch ends on smaller chunks (the last two blocks' rows cut 3/8, 3/8, 1/4),
    # so a slower member holds it up less; one-member shapes and one-chunk batches stay whole.
    assert _core.epoch_chunk_rows(256, 256, 784, 10) == [64, 64, 48, 48, 32]
    assert _core.epoch_chunk_rows(96, 256, 784, 10) == [36, 36, 24]  # 60000 rows: the last batch
    assert _core.epoch_chunk_rows(1, 256, 784, 10) == [1]
    assert _core.epoch_chunk_rows(0, 256, 784, 10) == []
    assert _core.epoch_chunk_rows(64, 64, 100, 50) == [16, 16, 12, 12, 8]  # 16-row blocks (c = 50)
    assert _core.epoch_chunk_rows(20, 64, 100, 50) == [20]  # a tail under 24 rows stays one chunk
    assert _core.epoch_chunk_rows(256, 256, 2, 1) == [64] * 4  # too little work for a team: untouched
    assert _core.epoch_chunk_rows(32, 32, 64, 10) == [32]
    for batch, d, c in [(256, 784, 10), (64, 100, 50), (1024, 2000, 50), (128, 300, 7), (50, 4000, 3)]:
        most = len(_core.epoch_chunk_rows(batch, batch, d, c))
        for rows in range(batch + 1):
            sizes = _core.epoch_chunk_rows(rows, batch, d, c)
            assert sum(sizes) == rows and all(s > 0 for s in sizes) and len(sizes) <= most, (rows, sizes)
    with pytest.raises(ValueError, match="rows <= batch"):
        _core.epoch_chunk_rows(300, 256, 784, 10)


@pytest.mark.parametrize("n", [360, 340, 384])  # last batch 40 rows (tapered), 20 (one chunk), 64
def test_tapered_chunks_two_threads_equal_one_thread_and_torch(rng, threads, n):
    d, c, batch = 100, 50, 64
    threads(2)
    assert _core.epoch_team_size(batch, d, c) == 2
    X, y = _team_data(rng, n, d, c)
    seed = _seed(rng)
    kw = dict(lr=0.2, batch_size=batch, epochs=2, momentum=0.9, weight_decay=1e-3)
    two = SoftmaxRegression(random_state=seed, **kw).fit(X, y)
    threads(1)
    one = SoftmaxRegression(random_state=seed, **kw).fit(X, y)
    np.testing.assert_array_equal(two.coef_, one.coef_)
    np.testing.assert_array_equal(two.intercept_, one.intercept_)
    assert two.history_["train_loss"] == one.history_["train_loss"]
    w_ref, b_ref = _torch_reference(
        X, y, seed, c=c, loss_fn=torch.nn.functional.cross_entropy, dtype=torch.float32, **kw
    )
    np.testing.assert_allclose(two.coef_, w_ref, rtol=1e-5, atol=1e-5 * np.abs(w_ref).max())
    np.testing.assert_allclose(two.intercept_, b_ref, rtol=1e-5, atol=1e-5 * np.abs(b_ref).max())


def test_two_thread_epoch_divergence_stops_cleanly(rng, threads):
    threads(2)
    X, y = _team_data(rng, 1200, 300, 7)
    X[::10] = 1e30  # finite, but the first update overflows the weights: the loss turns inf/nan
    m = SoftmaxRegression(epochs=1, lr=1.0, random_state=0)
    with pytest.raises(fastreg.models.TrainingDivergedError, match="epoch 1"):
        m.fit(X, y)
    assert not hasattr(m, "coef_")  # left as it was: unfitted
    X[::10] = 0
    m.fit(X, y)
    w = m.coef_.copy()
    X[::10] = 1e30
    with pytest.raises(fastreg.models.TrainingDivergedError, match="epoch 1"):
        m.fit(X, y)
    np.testing.assert_array_equal(m.coef_, w)


def test_epoch_team_size_rules(threads):
    threads(2)
    assert _core.epoch_team_size(10, 2, 1) == 1  # d2l 3.2: far too small to split
    assert _core.epoch_team_size(256, 784, 10) == 2
    assert _core.epoch_team_size(64, 784, 10) == 1  # one chunk of 64 rows: nothing to share
    assert _core.epoch_team_size(100, 784, 10) == 2  # chunks of 64 and 36 rows
    assert _core.epoch_team_size(256, 200, 10) == 2  # the team splits rows, not feature columns
    threads(1)
    assert _core.epoch_team_size(256, 784, 10) == 1  # set_num_threads(1): the single-thread loop
    with pytest.raises(ValueError, match="must be >= 1"):
        _core.epoch_team_size(0, 784, 10)


def test_two_thread_epochs_leave_no_threads(rng, threads):
    from _proc import os_threads, wait_for_threads

    threads(2)
    X, y = _team_data(rng, 600, 300, 7)
    SoftmaxRegression(epochs=1, random_state=0).fit(X, y)
    tasks = os_threads()
    SoftmaxRegression(epochs=3, random_state=0).fit(X, y)
    assert wait_for_threads(tasks) <= tasks


def test_epoch_with_no_features_or_no_rows_terminates(threads):
    # Every phase of the epoch must have a chunk to finish, even with d = 0.
    for n in (1, 2):
        threads(n)
        X, y = np.zeros((5, 0), np.float32), np.array([0, 1, 0, 1, 1])
        w, b = np.zeros((2, 0), np.float32), np.zeros(2, np.float32)
        kw = dict(lr=0.1, momentum=0.0, weight_decay=0.0, batch_size=2)
        loss_sum, _, rows, finite, bad = _core.softmax_epoch(X, y, np.arange(5), w, b, None, None, **kw)
        assert rows == 5 and finite and bad == -1 and loss_sum == pytest.approx(5 * np.log(2))
        # the bias still learns the class balance: 3 of 5 rows are class 1 after the first batch
        assert b[1] > 0 > b[0]
        assert _core.softmax_epoch(X, y, np.arange(0), w, b, None, None, **kw) == (0.0, 0, 0, True, -1)


# --- NaN/inf in X found by the first epoch (no separate scan in fit) ---------


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_fit_reports_the_first_non_finite_row_and_leaves_the_estimator_as_it_was(rng, threads, n_threads, bad):
    threads(n_threads)
    X, y = _team_data(rng, 1500, 300, 7)
    rows = np.sort(rng.choice(1500, 3, replace=False))
    for r in rows:
        X[r, rng.integers(300)] = bad
    fresh = SoftmaxRegression(epochs=2, random_state=0)
    with pytest.raises(ValueError, match=f"X contains NaN or infinity at row {rows[0]}$"):
        fresh.fit(X, y)
    assert not hasattr(fresh, "classes_") and not hasattr(fresh, "n_iter_")
    with pytest.raises(fastreg.models.NotFittedError, match="not fitted"):
        fresh.predict(X[:1])
    good = X.copy()
    good[rows] = 0
    fitted = SoftmaxRegression(epochs=1, momentum=0.9, random_state=0).fit(good, y)
    before = {k: np.copy(v) for k, v in vars(fitted).items() if isinstance(v, np.ndarray)}
    hist = {k: list(v) for k, v in fitted.history_.items()}
    for call in (lambda: fitted.fit(X, y), lambda: fitted.partial_fit(X, y)):
        with pytest.raises(ValueError, match=f"row {rows[0]}$"):
            call()
        for k, v in before.items():
            np.testing.assert_array_equal(getattr(fitted, k), v, err_msg=k)
        assert fitted.n_iter_ == 1 and fitted.history_ == hist
    np.testing.assert_array_equal(
        fitted.predict(good), SoftmaxRegression(epochs=1, momentum=0.9, random_state=0).fit(good, y).predict(good)
    )


@pytest.mark.parametrize("n_threads", [1, 2])
def test_regression_fit_reports_non_finite_X_row(rng, threads, n_threads):
    threads(n_threads)
    X = rng.standard_normal((900, 600)).astype(np.float32)
    y = rng.standard_normal(900).astype(np.float32)
    X[611, 5] = np.inf
    X[700, 0] = np.nan
    m = LinearRegression(lr=0.01, batch_size=256, random_state=0)
    with pytest.raises(ValueError, match="row 611$"):
        m.fit(X, y)
    with pytest.raises(fastreg.models.NotFittedError, match="not fitted"):
        m.predict(X[:1])
    with pytest.raises(ValueError, match="row 611$"):  # the closed form still scans X first
        LinearRegression(solver="normal").fit(X, y)


@pytest.mark.parametrize("n_threads", [1, 2])
def test_epoch_check_finite_stops_before_the_bad_batch(rng, threads, n_threads):
    threads(n_threads)
    X, y = _team_data(rng, 1024, 300, 7)
    order = np.arange(1024)
    X[600, 7] = np.nan  # batch 2 of 4 (rows 512..767)
    w0 = rng.normal(0, 0.01, (7, 300)).astype(np.float32)
    kw = dict(lr=0.1, momentum=0.0, weight_decay=0.0, batch_size=256)
    w, b = w0.copy(), np.zeros(7, np.float32)
    loss_sum, correct, rows, finite, bad = _core.softmax_epoch(X, y, order, w, b, None, None, check_finite=True, **kw)
    assert bad == 600 and rows == 512 and finite
    # exactly the first two batches were applied: the same as an epoch over rows 0..511
    w2, b2 = w0.copy(), np.zeros(7, np.float32)
    _core.softmax_epoch(X, y, order[:512], w2, b2, None, None, **kw)
    np.testing.assert_array_equal(w, w2)
    np.testing.assert_array_equal(b, b2)
    # without the check the NaN reaches the loss: the epoch reports a non-finite loss
    w3, b3 = w0.copy(), np.zeros(7, np.float32)
    *_, finite, bad = _core.softmax_epoch(X, y, order, w3, b3, None, None, **kw)
    assert not finite and bad == -1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d", [1, 5, 8, 16, 37, 300])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_epoch_check_finite_finds_a_value_anywhere_in_the_row(rng, simd_levels, dtype, d, bad):
    # The check runs while the row is copied: whole cache lines in vectors, the rest one by one.
    fastreg.linear._ensure_blas()
    n, c = 64, 3
    X = rng.standard_normal((n, d)).astype(dtype)
    X[5, :] = np.finfo(dtype).max  # huge but finite values pass
    y = rng.integers(0, c, n)
    kw = dict(lr=0.1, momentum=0.0, weight_decay=0.0, batch_size=16)
    for level in simd_levels:
        fastreg.set_simd_level(level)
        w, b = np.zeros((c, d), dtype), np.zeros(c, dtype)
        assert _core.softmax_epoch(X, y, np.arange(n), w, b, None, None, check_finite=True, **kw)[4] == -1
        for col in sorted({0, d // 2, d - 1, int(rng.integers(d))}):
            Xb = X.copy()
            Xb[40, col] = bad
            w, b = np.zeros((c, d), dtype), np.zeros(c, dtype)
            *_, bad_row = _core.softmax_epoch(Xb, y, np.arange(n), w, b, None, None, check_finite=True, **kw)
            assert bad_row == 40, (level, col, bad_row)
        # The same huge row with nonzero weights: its products overflow to inf, which the
        # fused gather + forward must tell from a NaN/inf in the row (it reads the row
        # again): not flagged, and the loss is what stops the epoch.
        w, b = np.full((c, d), 4, dtype), np.zeros(c, dtype)
        *_, rows, finite, bad_row = _core.softmax_epoch(X, y, np.arange(n), w, b, None, None, check_finite=True, **kw)
        assert bad_row == -1 and not finite and rows == 0, (level, rows, finite, bad_row)


@pytest.mark.parametrize(
    "labels",
    [
        np.arange(10),
        np.arange(10, dtype=np.uint8),
        np.array([0, 3, 7]),
        np.array([0, 3, 7], dtype=np.int32),
        np.array([2, 5], dtype=np.uint8),
        np.array([-1, 4]),
        np.array([1, 2**40]),
        np.array([1.0, 2.0]),
        np.array(["cat", "dog", "emu"]),
        np.array([True, False]),
    ],
    ids=lambda a: f"{a.dtype}:{a.tolist()}",
)
def test_fit_label_encoding_matches_np_unique(rng, labels):
    X, yi = _blobs(rng, n=300, d=6, c=len(labels))
    y = labels[yi]
    m = SoftmaxRegression(epochs=3, random_state=0).fit(X, y)
    np.testing.assert_array_equal(m.classes_, np.unique(y))
    assert m.classes_.dtype == np.unique(y).dtype
    # the same training as on np.unique's codes 0..C-1, and predictions map back to labels
    ref_codes = np.unique(y, return_inverse=True)[1].ravel()
    ref = SoftmaxRegression(epochs=3, random_state=0).fit(X, ref_codes)
    np.testing.assert_array_equal(m.coef_, ref.coef_)
    np.testing.assert_array_equal(m.predict(X), np.unique(y)[ref.predict(X)])
    codes = fastreg.models._classes_and_codes(y)[1]
    np.testing.assert_array_equal(codes, ref_codes)
    assert codes.dtype == np.int64


def test_team_epoch_error_in_a_member_is_raised_not_hung():
    # In a fresh interpreter that never loaded SciPy's BLAS, every member's first GEMM
    # throws: the team must stop, join, and raise, leaving the weights untouched.
    # 40 classes: more than kFewOutputs (32), so the epoch's products go to the BLAS.
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        """
        import numpy as np
        import fastreg._core as c
        assert not c.blas_ready()
        c.set_num_threads(2)
        assert c.epoch_team_size(256, 300, 40) == 2
        X = np.random.rand(1000, 300).astype(np.float32)
        y = np.random.randint(0, 40, 1000)
        w, b = np.zeros((40, 300), np.float32), np.zeros(40, np.float32)
        try:
            c.softmax_epoch(X, y, np.arange(1000), w, b, None, None, lr=0.1, momentum=0.0,
                            weight_decay=0.0, batch_size=256)
        except RuntimeError as e:
            assert "no BLAS" in str(e), e
        else:
            raise AssertionError("no error")
        assert (w == 0).all() and (b == 0).all()
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], timeout=120, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# --- sample_weight: the weighted loss in the C++ epoch ----------------------------


def _numpy_weighted_softmax_sgd(X, y, sw, w, b, lr, batch_size, order):
    """float64 reference: per batch, loss = sum_i w_i CE_i / rows, plain SGD."""
    w, b = w.astype(np.float64).copy(), b.astype(np.float64).copy()
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        z = X[idx] @ w.T + b
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        p[np.arange(len(idx)), y[idx]] -= 1
        g = p * sw[idx, None] / len(idx)
        w -= lr * g.T @ X[idx]
        b -= lr * g.sum(0)
    return w, b


def test_sample_weight_matches_a_float64_reference(rng):
    X, y = _blobs(rng, n=300, d=6, c=3, dtype=np.float64)
    sw = rng.uniform(0, 3, 300)
    m = SoftmaxRegression(epochs=1, batch_size=32, shuffle=False, init="zeros", lr=0.3).fit(X, y, sample_weight=sw)
    w, b = _numpy_weighted_softmax_sgd(X, y, sw, np.zeros((3, 6)), np.zeros(3), 0.3, 32, np.arange(300))
    np.testing.assert_allclose(m.coef_, w, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(m.intercept_, b, rtol=1e-10, atol=1e-12)
    # weights of one are the unweighted fit, bit for bit; a strided weight array is taken
    one = SoftmaxRegression(epochs=2, random_state=0).fit(X, y, sample_weight=np.ones(600)[::2])
    np.testing.assert_array_equal(one.coef_, SoftmaxRegression(epochs=2, random_state=0).fit(X, y).coef_)


def test_regression_sample_weight_sgd_and_normal(rng):
    X = rng.standard_normal((200, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 0.3 * rng.standard_normal(200)
    sw = rng.uniform(0, 2, 200)
    m = LinearRegression(epochs=1, batch_size=200, shuffle=False, init="zeros", lr=0.1).fit(X, y, sample_weight=sw)
    g = (sw * (0 - y))[:, None] * X  # d/dw of sum w_i 0.5 r_i^2 at w = 0
    np.testing.assert_allclose(m.coef_, -0.1 * g.sum(0) / 200, rtol=1e-12)
    exact = LinearRegression(solver="normal").fit(X, y, sample_weight=sw)
    A = np.c_[X, np.ones(200)] * np.sqrt(sw)[:, None]
    ref = np.linalg.lstsq(A, y * np.sqrt(sw), rcond=None)[0]
    np.testing.assert_allclose(np.r_[exact.coef_, exact.intercept_], ref, rtol=1e-10)
    # score takes sample_weight as scikit-learn's r2_score does
    sk = pytest.importorskip("sklearn.metrics")
    assert exact.score(X, y, sample_weight=sw) == pytest.approx(sk.r2_score(y, exact.predict(X), sample_weight=sw))


@pytest.mark.parametrize(
    "sw, exc, match",
    [
        (np.ones(5), ValueError, r"shape == \(5,\), expected \(600,\)"),
        (-np.ones(600), ValueError, ">= 0"),
        (np.full(600, np.nan), ValueError, "finite"),
        (np.zeros(600), ValueError, "non-zero"),
        (np.array(["a"] * 600), TypeError, "numeric"),
    ],
)
def test_bad_sample_weight(rng, sw, exc, match):
    X, y = _blobs(rng)
    with pytest.raises(exc, match=match):
        SoftmaxRegression().fit(X, y, sample_weight=sw)


# --- issue 21 item 2: any layout -------------------------------------------------


def test_any_layout_of_X_y_and_weights(rng):
    X, y = _blobs(rng, n=600)
    ref = SoftmaxRegression(epochs=2, random_state=0).fit(X[::2], y[::2].copy())
    for Xv, yv in [
        (X[::2], y[::2]),
        (np.asfortranarray(X)[::2], np.repeat(y[::2], 2)[::2]),
        (X[::-1][::-2], y[::-1][::-2]),
    ]:
        m = SoftmaxRegression(epochs=2, random_state=0).fit(Xv, yv, sample_weight=np.ones(600)[::2])
        np.testing.assert_array_equal(m.coef_, ref.coef_)
        m.partial_fit(Xv, yv)
        assert m.score(Xv, yv) > 0.5
    yr = X[:, 0].astype(np.float64)
    r = LinearRegression(epochs=2, random_state=0).fit(X[::2], yr[::2])
    np.testing.assert_array_equal(
        r.coef_, LinearRegression(epochs=2, random_state=0).fit(X[::2].copy(), yr[::2].copy()).coef_
    )


# --- issue 21 item 3: a failed refit or partial_fit changes nothing ----------------


def _state(m):
    out = {}
    for k, v in vars(m).items():
        if isinstance(v, np.ndarray):
            out[k] = v.copy()
        elif isinstance(v, dict):
            out[k] = {kk: list(vv) if isinstance(vv, list) else vv for kk, vv in v.items()}
        elif isinstance(v, np.random.Generator):
            out[k] = v.bit_generator.state
        else:
            out[k] = v
    return out


def _assert_same_state(m, before, coef_obj):
    after = _state(m)
    assert after.keys() == before.keys()
    for k in before:
        if isinstance(before[k], np.ndarray):
            np.testing.assert_array_equal(after[k], before[k], err_msg=k)
        else:
            assert after[k] == before[k], k
    assert m.coef_ is coef_obj or m.coef_.base is coef_obj.base  # arrays the caller holds keep their identity


def _failures(X, y):
    Xnan = X.copy()
    Xnan[7, 1] = np.nan
    ybad = y.copy()
    ybad[3] = 99
    return {
        "bad eval_set": lambda m: m.fit(X, y, eval_set=(X[:, :2], y)),
        "bad eval labels": lambda m: m.fit(X, y, eval_set=(X, y + 100)),
        "divergence": lambda m: m.set_params(lr=1e30, batch_size=16).fit(X * 1e15, np.roll(y, 1)),
        "NaN in X": lambda m: m.fit(Xnan, y),
        "bad y length": lambda m: m.fit(X, y[:-1]),
        "bad sample_weight": lambda m: m.fit(X, y, sample_weight=-np.ones(len(y))),
        "partial_fit unknown label": lambda m: m.partial_fit(X, ybad),
        "partial_fit NaN": lambda m: m.partial_fit(Xnan, y),
        "partial_fit divergence": lambda m: m.set_params(lr=1e30, batch_size=16).partial_fit(X * 1e15, np.roll(y, 1)),
        "partial_fit features": lambda m: m.partial_fit(X[:, :3], y),
        "partial_fit classes": lambda m: m.partial_fit(X, y, classes=[0, 1]),
        "warm fit new label": lambda m: m.set_params(warm_start=True).fit(X, ybad),
    }


@pytest.mark.parametrize("failure", list(_failures(np.ones((10, 4)), np.zeros(10, int))))
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_failed_refit_leaves_the_fitted_estimator_as_it_was(rng, failure, momentum):
    X, y = _blobs(rng, n=300, d=6, c=3)
    m = SoftmaxRegression(epochs=2, momentum=momentum, random_state=0).fit(X, y, eval_set=(X, y))
    params, before, coef, pred = m.get_params(), _state(m), m.coef_, m.predict_proba(X)
    with pytest.raises((ValueError, TypeError)):
        _failures(X, y)[failure](m)
    m.set_params(**params)
    _assert_same_state(m, before, coef)
    np.testing.assert_array_equal(m.predict_proba(X), pred)
    # and it trains on exactly as an estimator that never saw the failure
    twin = SoftmaxRegression(epochs=2, momentum=momentum, random_state=0).fit(X, y, eval_set=(X, y))
    np.testing.assert_array_equal(m.partial_fit(X, y).coef_, twin.partial_fit(X, y).coef_)


@pytest.mark.parametrize("failure", ["divergence", "NaN in X", "bad y", "partial_fit features"])
def test_failed_regression_refit_leaves_it_as_it_was(rng, failure):
    X = rng.standard_normal((200, 4))
    y = X @ np.array([1.0, 2.0, -1.0, 0.5])
    m = LinearRegression(epochs=2, random_state=0).fit(X, y)
    before, coef = _state(m), m.coef_
    Xnan = X.copy()
    Xnan[3, 0] = np.inf
    call = {
        "divergence": lambda: m.set_params(lr=1e30).fit(X * 1e10, y),
        "NaN in X": lambda: m.fit(Xnan, y),
        "bad y": lambda: m.fit(X, np.r_[y[:-1], np.nan]),
        "partial_fit features": lambda: m.partial_fit(X[:, :2], y),
    }[failure]
    with pytest.raises(ValueError):
        call()
    m.set_params(lr=0.03)
    _assert_same_state(m, before, coef)


# --- issue 21 item 9: uint8 X is x / 255 for LinearRegression too -------------------


def test_linear_regression_reads_uint8_as_x_over_255(rng):
    X8 = rng.integers(0, 256, (300, 5), dtype=np.uint8)
    Xf = X8.astype(np.float32) / np.float32(255)
    y = (Xf @ np.array([1.0, -2.0, 0.5, 0.0, 3.0], np.float32) + 0.5).astype(np.float32)
    m8 = LinearRegression(epochs=3, random_state=0).fit(X8, y)
    mf = LinearRegression(epochs=3, random_state=0).fit(Xf, y)
    assert m8.coef_.dtype == np.float32
    np.testing.assert_allclose(m8.coef_, mf.coef_, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m8.predict(X8), mf.predict(Xf), rtol=1e-5, atol=1e-5)
    exact = LinearRegression(solver="normal").fit(X8, y)
    np.testing.assert_allclose(exact.coef_, [1.0, -2.0, 0.5, 0.0, 3.0], atol=1e-3)


# --- warm_start, n_iter_, random_state, partial_fit classes ----------------------------


def test_warm_start_continues_and_random_state_reproduces(rng):
    X, y = _blobs(rng, n=300)
    a = SoftmaxRegression(epochs=2, random_state=3).fit(X, y)
    b = SoftmaxRegression(epochs=2, random_state=3).fit(X, y)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    assert a.n_iter_ == 2
    warm = SoftmaxRegression(epochs=2, random_state=3, warm_start=True).fit(X, y)
    coef = warm.coef_.copy()
    warm.fit(X, y)
    assert warm.n_iter_ == 4 and len(warm.history_["epoch"]) == 4
    long = SoftmaxRegression(epochs=4, random_state=3).fit(X, y)
    np.testing.assert_array_equal(warm.coef_, long.coef_)  # 2 + 2 warm epochs = 4 epochs
    assert not np.array_equal(coef, warm.coef_)
    cold = SoftmaxRegression(epochs=2, random_state=3).fit(X, y)
    cold.fit(X, y)  # without warm_start a refit starts again
    np.testing.assert_array_equal(cold.coef_, a.coef_)


def test_partial_fit_classes_as_sgdclassifier(rng):
    X, y = _blobs(rng, n=300, c=4)
    m = SoftmaxRegression(random_state=0).partial_fit(X[y < 2], y[y < 2], classes=[0, 1, 2, 3])
    np.testing.assert_array_equal(m.classes_, [0, 1, 2, 3])
    m.partial_fit(X, y)  # later calls may leave classes out, or repeat them
    m.partial_fit(X, y, classes=np.array([3, 2, 1, 0]))
    with pytest.raises(ValueError, match="not the same as on the first call"):
        m.partial_fit(X, y, classes=[0, 1, 2])
    with pytest.raises(ValueError, match="Unknown label type"):
        SoftmaxRegression().fit(X, y + 0.5)


def test_predict_log_proba_and_decision_function(rng):
    X, y = _blobs(rng, n=300, d=5, c=3, dtype=np.float64)
    m = SoftmaxRegression(epochs=3, random_state=0).fit(X, y)
    z = X @ m.coef_.T + m.intercept_
    ref = z - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)) - z.max(1, keepdims=True)
    np.testing.assert_allclose(m.predict_log_proba(X), ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m.decision_function(X), z, rtol=1e-12)
    binary = SoftmaxRegression(epochs=3, random_state=0).fit(X, np.where(y == 0, "a", "b"))
    d = binary.decision_function(X)
    assert d.shape == (300,)
    np.testing.assert_array_equal(binary.predict(X), np.where(d > 0, "b", "a"))


# --- persistence: save / load without pickle ---------------------------------------


@pytest.mark.parametrize("kind", ["softmax", "linear", "strings", "momentum"])
def test_save_load_round_trip(rng, tmp_path, kind):
    X, y = _blobs(rng, n=300)
    if kind == "linear":
        m = LinearRegression(epochs=2, random_state=0).fit(X, X[:, 0])
    else:
        labels = np.array(["ant", "bee", "cat", "dog"]) if kind == "strings" else np.arange(4)
        m = SoftmaxRegression(epochs=2, random_state=0, momentum=0.9 if kind == "momentum" else 0.0)
        m.fit(X, labels[y])
        y = labels[y]
    path = tmp_path / "model.bin"  # written as given: no ".npz" appended
    m.save(path)
    assert path.exists()
    back = fastreg.models.load(path)
    assert type(back) is type(m) and back.get_params() == m.get_params() and back.n_iter_ == m.n_iter_
    np.testing.assert_array_equal(back.predict(X), m.predict(X))
    assert back.history_ == m.history_
    # it trains on exactly as the original would (momentum buffers and the Generator saved)
    target = X[:, 0] if kind == "linear" else y
    np.testing.assert_array_equal(back.partial_fit(X, target).coef_, m.partial_fit(X, target).coef_)
    assert type(m).load(path).n_iter_ == m.n_iter_ - 1
    # W starts on a cache line after fit and load, so the epoch reads it without a copy
    assert m._w.ctypes.data % 64 == 0 and back._w.ctypes.data % 64 == 0
    other = LinearRegression if kind != "linear" else SoftmaxRegression
    with pytest.raises(TypeError, match="not a"):
        other.load(path)


def test_load_refuses_what_is_not_a_model(tmp_path):
    np.savez(tmp_path / "other.npz", a=np.ones(3))
    with pytest.raises(ValueError, match="not a saved fastreg model"):
        fastreg.models.load(tmp_path / "other.npz")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="not a saved fastreg model"):
        fastreg.models.load(tmp_path / "junk.npz")
    np.savez(tmp_path / "obj.npz", format=np.array([{"x": 1}], dtype=object))  # a pickle inside: never loaded
    with pytest.raises(ValueError, match="not a saved fastreg model"):
        fastreg.models.load(tmp_path / "obj.npz")
    with pytest.raises(fastreg.models.NotFittedError):
        SoftmaxRegression().save(tmp_path / "unfitted.npz")


def test_load_refuses_a_newer_format(rng, tmp_path):
    X, y = _blobs(rng, n=100)
    SoftmaxRegression(epochs=1).fit(X, y).save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as z:
        data = dict(z)
    data["format_version"] = np.array(99)
    np.savez(tmp_path / "new.npz", **data)
    with pytest.raises(ValueError, match="format 99.*upgrade"):
        fastreg.models.load(tmp_path / "new.npz")


def test_momentum_and_lr_rules_are_shared():
    for bad in (1.0, 1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match="momentum"):
            fastreg.models.check_momentum(bad)
    assert fastreg.models.check_momentum(0.9) == 0.9
    with pytest.raises(ValueError, match="momentum"):
        SoftmaxRegression(momentum=1.0).fit(np.ones((2, 2)), [0, 1])
    for bad in (0, -1, float("inf")):
        with pytest.raises(ValueError, match="lr"):
            fastreg.models.check_lr(bad)


def test_hyper_parameter_messages_use_torchs_words():
    """One message per hyper-parameter: torch.optim.SGD's words, then the rule that was broken."""
    with pytest.raises(ValueError, match=r"^Invalid learning rate: 0 \(lr must be a finite number > 0\)$"):
        SoftmaxRegression(lr=0).fit(np.ones((2, 2)), [0, 1])
    with pytest.raises(ValueError, match=r"^Invalid learning rate: -1.0 \(lr must be a finite number >= 0\)$"):
        fastreg.optim.sgd([], lr=-1.0, batch_size=1)
    with pytest.raises(ValueError, match=r"^Invalid weight_decay value: -1 \(weight_decay must be"):
        LinearRegression(weight_decay=-1).fit(np.ones((2, 2)), [0.0, 1.0])
    with pytest.raises(TypeError, match="momentum must be a number, got str"):
        fastreg.models.check_momentum("0.9")


@pytest.mark.parametrize("Est", [SoftmaxRegression, LinearRegression])
def test_device_parameter_validated_and_cuda_refused_with_reason(Est, rng):
    X = rng.standard_normal((40, 3)).astype(np.float32)
    y = rng.integers(0, 3, 40) if Est is SoftmaxRegression else rng.standard_normal(40)
    # stored unchanged (scikit-learn convention), checked at fit
    for bad in ["gpu", "cuda:", "cuda:x", "CPU", 0, None]:
        m = Est(device=bad, epochs=1)
        assert m.device is bad or m.device == bad
        with pytest.raises(ValueError, match="device must be 'cpu', 'cuda' or 'cuda:N'"):
            m.fit(X, y)
    ref = Est(epochs=1, random_state=0).fit(X, y)
    cpu = Est(device="cpu", epochs=1, random_state=0).fit(X, y)
    np.testing.assert_array_equal(cpu.coef_, ref.coef_)
    import fastreg.cuda

    reason = fastreg.cuda.unavailable_reason()
    for dev in ["cuda", "cuda:1"]:
        m = Est(device=dev, epochs=1)
        if reason is not None:
            with pytest.raises(RuntimeError, match="unavailable") as err:
                m.fit(X, y)
            assert reason in str(err.value)
        else:
            with pytest.raises(NotImplementedError, match="issue 16"):
                m.fit(X, y)
        assert not hasattr(m, "coef_")

"""Arrays whose dtype equals NumPy's but is another object are accepted everywhere.

An array that was unpickled, came back from multiprocessing or joblib, or carries dtype
metadata has a dtype *equal* to ``np.float32`` (or uint8, int64) without being the same
object. fastreg compares dtypes by value, so such arrays give exactly the results of
their canonical copies; a non-native byte order is refused with a TypeError that says
how to convert (never read as native).
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastreg
from fastreg import ops


def _pickled(a: np.ndarray) -> np.ndarray:
    return pickle.loads(pickle.dumps(a))


def _with_metadata(a: np.ndarray) -> np.ndarray:
    return a.astype(np.dtype(a.dtype, metadata={"units": "m"}))


def _fortran_pickled(a: np.ndarray) -> np.ndarray:
    return _pickled(np.asfortranarray(a))


def _strided_pickled(a: np.ndarray) -> np.ndarray:
    wide = np.repeat(a, 2, axis=0)  # every other row is a copy: a[::2] is a strided view of the same values
    return _pickled(wide)[::2]


VARIANTS = {
    "pickled": _pickled,
    "metadata": _with_metadata,
    "fortran-pickled": _fortran_pickled,
    "strided-pickled": _strided_pickled,
}


def _noncanonical(a: np.ndarray, how: str) -> np.ndarray:
    b = VARIANTS[how](a)
    np.testing.assert_array_equal(b, a)
    assert b.dtype == a.dtype
    if how in ("pickled", "metadata"):
        assert b.dtype is not a.dtype or b.dtype.metadata is not None
    return b


variant = st.sampled_from(sorted(VARIANTS))
float_dtype = st.sampled_from([np.float32, np.float64])


@settings(max_examples=40, deadline=None)
@given(how=variant, dtype=float_dtype, n=st.integers(1, 9), c=st.integers(1, 7), seed=st.integers(0, 2**32 - 1))
def test_ops_give_the_canonical_result(how, dtype, n, c, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, c)) * 5).astype(dtype)
    y = rng.integers(0, c, n)
    xv, yv = _noncanonical(x, how), _noncanonical(y, how)
    np.testing.assert_array_equal(ops.softmax(xv), ops.softmax(x))
    np.testing.assert_array_equal(ops.log_softmax(xv, axis=0), ops.log_softmax(x, axis=0))
    np.testing.assert_array_equal(ops.logsumexp(xv, 1), ops.logsumexp(x, 1))
    assert ops.cross_entropy(xv, yv) == ops.cross_entropy(x, y)
    loss_v, grad_v = ops.cross_entropy_with_grad(xv, yv, label_smoothing=0.1)
    loss, grad = ops.cross_entropy_with_grad(x, y, label_smoothing=0.1)
    assert loss_v == loss
    np.testing.assert_array_equal(grad_v, grad)
    t = rng.standard_normal((n, c)).astype(dtype)
    tv = _noncanonical(t, how)
    for fn in (ops.squared_loss, ops.l1_loss, ops.huber_loss, ops.smooth_l1_loss):
        np.testing.assert_array_equal(fn(xv, tv), fn(x, t))


@pytest.mark.parametrize("how", sorted(VARIANTS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sgd_step_updates_noncanonical_params(how, dtype):
    rng = np.random.default_rng(3)
    p = rng.standard_normal((6, 4)).astype(dtype)
    g = rng.standard_normal((6, 4)).astype(dtype)
    ref = p.copy()
    buf_ref = [None]
    fastreg.optim.sgd_step([ref], [g], buf_ref, lr=0.1, momentum=0.9, weight_decay=0.01)
    pv = _noncanonical(p, how)
    buf = [None]
    fastreg.optim.sgd_step([pv], [_noncanonical(g, how)], buf, lr=0.1, momentum=0.9, weight_decay=0.01)
    np.testing.assert_array_equal(pv, ref)
    np.testing.assert_array_equal(buf[0], buf_ref[0])


@pytest.mark.parametrize("how", sorted(VARIANTS))
@pytest.mark.parametrize("source", ["float32", "uint8"])
def test_estimators_fit_and_predict_noncanonical(how, source):
    rng = np.random.default_rng(5)
    if source == "uint8":
        X = rng.integers(0, 256, (64, 5)).astype(np.uint8)
    else:
        X = rng.standard_normal((64, 5)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    ref = fastreg.SoftmaxRegression(epochs=3, batch_size=16, random_state=0).fit(X, y)
    est = fastreg.SoftmaxRegression(epochs=3, batch_size=16, random_state=0).fit(_noncanonical(X, how), y)
    np.testing.assert_array_equal(est.coef_, ref.coef_)
    np.testing.assert_array_equal(est.predict_proba(_noncanonical(X, how)), ref.predict_proba(X))

    Xr = rng.standard_normal((64, 5)).astype(np.float32)
    yr = (Xr @ np.arange(1, 6) + 0.5).astype(np.float32)
    lin_ref = fastreg.LinearRegression(epochs=3, random_state=0).fit(Xr, yr)
    lin = fastreg.LinearRegression(epochs=3, random_state=0).fit(_noncanonical(Xr, how), _noncanonical(yr, how))
    np.testing.assert_array_equal(lin.coef_, lin_ref.coef_)
    np.testing.assert_array_equal(lin.predict(_noncanonical(Xr, how)), lin_ref.predict(Xr))


def test_pickled_estimator_keeps_predicting_and_training():
    rng = np.random.default_rng(7)
    X = rng.standard_normal((90, 4)).astype(np.float32)
    y = rng.integers(0, 3, 90)
    est = fastreg.SoftmaxRegression(epochs=2, batch_size=16, random_state=0).fit(X, y)
    copy = _pickled(est)
    np.testing.assert_array_equal(copy.predict_proba(X), est.predict_proba(X))
    est.partial_fit(X, y)
    copy.partial_fit(X, y)
    np.testing.assert_array_equal(copy.coef_, est.coef_)


@pytest.mark.parametrize("how", sorted(VARIANTS))
def test_loader_uint8_conversion_and_labels(how):
    rng = np.random.default_rng(11)
    X = rng.integers(0, 256, (20, 3)).astype(np.uint8)
    y = rng.integers(0, 10, 20)
    ref = list(fastreg.DataLoader((X, y), 6, dtype=np.float32, scale=1 / 255))
    got = list(fastreg.DataLoader((_noncanonical(X, how), _noncanonical(y, how)), 6, dtype=np.float32, scale=1 / 255))
    assert len(got) == len(ref)
    for (xb, yb), (xr, yr) in zip(got, ref):
        np.testing.assert_array_equal(xb, xr)
        np.testing.assert_array_equal(yb, yr)


def test_non_native_byte_order_is_refused_with_the_fix():
    x = np.arange(6, dtype=">f4").reshape(2, 3)
    with pytest.raises(TypeError, match="byte order"):
        ops.softmax(x)
    with pytest.raises(TypeError, match="byte order"):
        ops.squared_loss(x, x)
    # The conversion the message names gives the native result.
    native = x.astype(x.dtype.newbyteorder("="))
    np.testing.assert_allclose(ops.softmax(native), ops.softmax(np.arange(6, dtype=np.float32).reshape(2, 3)))

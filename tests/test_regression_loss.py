"""Regression losses: ops.squared_loss, l1_loss, huber_loss, smooth_l1_loss and their
_with_grad twins, against a NumPy reference at every SIMD level and against torch."""

import numpy as np
import pytest

import fastreg
from _helpers import _close
from fastreg import ops

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _reg_ref(kind, d, param):
    a = np.abs(d)
    if kind == "squared":
        return d * d / 2, d
    if kind == "l1":
        return a, np.sign(d)
    if kind == "huber":
        return np.where(a < param, d * d / 2, param * (a - param / 2)), np.clip(d, -param, param)
    if param == 0:
        return a, np.sign(d)
    return np.where(a < param, d * d / (2 * param), a - param / 2), np.clip(d / param, -1, 1)


REG_CASES = [
    ("squared", None),
    ("l1", None),
    ("huber", 1.0),
    ("huber", 0.3),
    ("smooth_l1", 1.0),
    ("smooth_l1", 2.5),
    ("smooth_l1", 0.0),
]


@pytest.mark.parametrize("kind, param", REG_CASES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_regression_losses_match_reference(rng, kind, param, reduction, dtype, simd_levels):
    n = int(rng.integers(1, 100_000))
    p = (rng.standard_normal(n) * 2).astype(dtype)
    t = (rng.standard_normal(n) * 2).astype(dtype)
    p[: min(n, 5)] = t[: min(n, 5)]  # exact zeros of d (sign 0)
    d = p.astype(np.float64) - t.astype(np.float64)
    l_ref, g_ref = _reg_ref(kind, d, param)
    red = {"mean": lambda v: v.mean(), "sum": lambda v: v.sum(), "none": lambda v: v}[reduction]
    gscale = 1 / n if reduction == "mean" else 1.0
    extra = {} if param is None else {"huber": {"delta": param}, "smooth_l1": {"beta": param}}[kind]
    fn = getattr(ops, f"{kind}_loss")
    fn_g = getattr(ops, f"{kind}_loss_with_grad")
    for level in simd_levels:
        fastreg.set_simd_level(level)
        loss = fn(p, t, reduction=reduction, **extra)
        loss2, grad = fn_g(p, t, reduction=reduction, **extra)
        assert np.asarray(loss).dtype == dtype and grad.dtype == dtype
        _close(loss, red(l_ref), dtype, level)
        _close(loss2, red(l_ref), dtype, level)
        _close(grad, g_ref * gscale, dtype, level)


@pytest.mark.parametrize(
    "kind, tfn, extra",
    [
        ("l1", F.l1_loss, {}),
        ("huber", F.huber_loss, {"delta": 0.7}),
        ("smooth_l1", F.smooth_l1_loss, {"beta": 0.4}),
    ],
)
def test_regression_matches_torch_autograd(rng, kind, tfn, extra):
    p = rng.standard_normal((30, 2))
    t = rng.standard_normal((30, 2))
    pt = torch.tensor(p, requires_grad=True)
    ref = tfn(pt, torch.tensor(t), **extra)
    ref.backward()
    loss, g = getattr(ops, f"{kind}_loss_with_grad")(p, t, **extra)
    assert loss == pytest.approx(ref.item(), rel=1e-12)
    np.testing.assert_allclose(g, pt.grad.numpy(), rtol=1e-12)


def test_squared_loss_reshapes_like_d2l_and_never_broadcasts(rng):
    y_hat = rng.standard_normal((10, 1))
    y = rng.standard_normal(10)
    l = ops.squared_loss(y_hat, y, reduction="none")
    assert l.shape == (10, 1)
    np.testing.assert_allclose(l, (y_hat - y.reshape(10, 1)) ** 2 / 2)
    with pytest.raises(ValueError, match="same number of elements"):
        ops.squared_loss(y_hat, y[:9])
    with pytest.raises(ValueError, match="same number of elements"):
        ops.l1_loss(rng.standard_normal((10, 1)), rng.standard_normal((1, 10, 2)))


def test_regression_in_place_nan_empty_and_errors(rng):
    p = rng.standard_normal(50)
    t = rng.standard_normal(50)
    expected = p - t
    buf = p.copy()
    loss, g = ops.squared_loss_with_grad(buf, t, reduction="sum", out=buf)
    assert g is buf and loss == pytest.approx(((p - t) ** 2 / 2).sum())
    np.testing.assert_allclose(buf, expected)
    p[3] = np.nan
    assert np.isnan(ops.huber_loss(p, t))
    assert np.isnan(ops.l1_loss(np.zeros(0), np.zeros(0)))
    assert ops.l1_loss(np.zeros(0), np.zeros(0), reduction="sum") == 0
    with pytest.raises(TypeError, match="same dtype"):
        ops.l1_loss(p, t.astype(np.float32))
    with pytest.raises(TypeError, match="float32 or float64"):
        ops.l1_loss(np.arange(5), np.arange(5))
    with pytest.raises(ValueError, match="delta"):
        ops.huber_loss(p, t, delta=0.0)
    with pytest.raises(ValueError, match="beta"):
        ops.smooth_l1_loss(p, t, beta=-1.0)
    with pytest.raises(ValueError, match="reduction"):
        ops.l1_loss(p, t, reduction="max")
    with pytest.raises(TypeError, match="delta"):
        ops.huber_loss(p, t, delta="1")
    with pytest.raises(ValueError, match="share memory"):
        ops.l1_loss_with_grad(p, t, out=t)
    ro = np.zeros(50)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        ops.l1_loss_with_grad(p, t, out=ro)

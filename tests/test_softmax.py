"""The softmax family: ops.softmax, log_softmax, softmin and logsumexp, against torch
at every SIMD level, and called the way torch callers call them."""

import numpy as np
import pytest

import fastreg
from _helpers import _close
from fastreg import ops

torch = pytest.importorskip("torch")
F = torch.nn.functional


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("axis", [-1, 0, 1, None])
def test_softmax_family_matches_torch(rng, dtype, axis, simd_levels):
    x = (rng.standard_normal((int(rng.integers(1, 30)), int(rng.integers(1, 50)), 3)) * 5).astype(dtype)
    xt = torch.tensor(x.astype(np.float64))
    if axis is None:
        flat = xt.reshape(-1)
        refs = (
            F.softmax(flat, 0).reshape(x.shape),
            F.log_softmax(flat, 0).reshape(x.shape),
            torch.logsumexp(flat, 0),
            F.softmin(flat, 0).reshape(x.shape),
        )
    else:
        refs = (F.softmax(xt, axis), F.log_softmax(xt, axis), torch.logsumexp(xt, axis), F.softmin(xt, axis))
    for level in simd_levels:
        fastreg.set_simd_level(level)
        got = (ops.softmax(x, axis), ops.log_softmax(x, axis), ops.logsumexp(x, axis), ops.softmin(x, axis))
        for g, r, name in zip(got, refs, ["softmax", "log_softmax", "logsumexp", "softmin"]):
            assert np.asarray(g).dtype == dtype and np.shape(g) == tuple(r.shape), name
            _close(g, r.numpy(), dtype, f"{name} {level}")


def test_softmax_extremes():
    x = np.array([[1e4, -1e4, 0.0], [-np.inf, 0.0, 1.0], [-np.inf] * 3, [np.inf, 0.0, 1.0], [np.nan, 0.0, 1.0]])
    ref = torch.tensor(x)
    np.testing.assert_allclose(ops.softmax(x), F.softmax(ref, -1).numpy(), rtol=1e-14)
    np.testing.assert_allclose(ops.log_softmax(x)[:2], F.log_softmax(ref, -1).numpy()[:2], rtol=1e-14)
    lse = ops.logsumexp(x)
    np.testing.assert_allclose(lse, torch.logsumexp(ref, -1).numpy(), rtol=1e-14)
    assert lse[2] == -np.inf and lse[3] == np.inf and np.isnan(lse[4])
    assert ops.logsumexp(np.zeros((2, 0))).tolist() == [-np.inf, -np.inf]


def test_logsumexp_temperature(rng):
    x = rng.standard_normal((7, 9)) * 4
    for t in (3.0, 1.0, 0.1, 1e-3):
        np.testing.assert_allclose(
            ops.logsumexp(x, temperature=t), t * torch.logsumexp(torch.tensor(x / t), -1).numpy(), rtol=1e-12
        )
    np.testing.assert_allclose(ops.logsumexp(x, temperature=1e-4), x.max(axis=1), rtol=1e-3)
    np.testing.assert_array_equal(ops.logsumexp(x, temperature=0), x.max(axis=1))
    assert ops.logsumexp(x, axis=0, keepdims=True).shape == (1, 9)
    for bad in (-1.0, np.inf, np.nan):
        # One rule and one message, from the binding (arrays) and the torch path alike.
        for arg in (x, torch.tensor(x)):
            with pytest.raises(
                ValueError, match=rf"^Invalid temperature value: {bad!r} \(temperature must be a finite"
            ):
                ops.logsumexp(arg, temperature=bad)
    with pytest.raises(TypeError, match="float32 or float64"):
        ops.softmax(np.arange(6).reshape(2, 3))
    with pytest.raises(np.exceptions.AxisError if hasattr(np, "exceptions") else ValueError):
        ops.softmax(x, axis=2)


def test_logsumexp_over_all_axes_is_0d_like_torch(rng):
    x = torch.tensor(rng.standard_normal((3, 4)))
    for got, want in (
        (ops.logsumexp(x, None), torch.logsumexp(x, (0, 1))),
        (ops.logsumexp(x[0], 0), torch.logsumexp(x[0], 0)),
        (ops.logsumexp(x, (0, 1)), torch.logsumexp(x, (0, 1))),
        (ops.logsumexp(torch.tensor(2.0, dtype=torch.float64), 0), torch.tensor(2.0, dtype=torch.float64)),
    ):
        assert isinstance(got, torch.Tensor) and got.shape == want.shape == ()
        torch.testing.assert_close(got, want)
    assert np.ndim(ops.logsumexp(x.numpy(), None)) == 0


def test_logsumexp_called_torchs_way(rng):
    """logsumexp(x, dim, keepdim) as torch: the third positional is keepdim, never temperature."""
    x = torch.tensor(rng.standard_normal((3, 4, 5)))
    for dim in (0, 1, -1, (0, 2), (1, 2), [0, 1, 2]):
        for keepdim in (False, True):
            want = torch.logsumexp(x, dim, keepdim)
            for got in (
                ops.logsumexp(x, dim, keepdim),
                ops.logsumexp(x, dim=dim, keepdim=keepdim),
                ops.logsumexp(x.numpy(), dim, keepdim),
            ):
                assert tuple(np.shape(got)) == tuple(want.shape)
                np.testing.assert_allclose(np.asarray(got), want.numpy(), rtol=1e-12)
    with pytest.raises(TypeError, match="dim"):
        ops.logsumexp(x, 0, dim=1)
    with pytest.raises(TypeError, match="keepdim"):
        ops.logsumexp(x, 0, True, keepdim=True)
    with pytest.raises(TypeError):
        ops.logsumexp(x, 0, False, 0.5)  # temperature is keyword-only
    np.testing.assert_allclose(ops.logsumexp(x, dim=1, temperature=0.5), 0.5 * torch.logsumexp(x / 0.5, 1), rtol=1e-12)


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "softmin"])
def test_softmax_family_takes_torchs_dim_dtype_and_scalars(rng, name):
    x = torch.tensor(rng.standard_normal((4, 6)), dtype=torch.float32)
    ours, ref = getattr(ops, name), getattr(F, name)
    torch.testing.assert_close(ours(x, dim=0), ref(x, dim=0))
    got = ours(x, 1, dtype=torch.float64)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, ref(x, 1, dtype=torch.float64))
    s = torch.tensor(1.5)
    torch.testing.assert_close(ours(s, 0), ref(s, 0))  # a 0-d tensor along dim 0, as torch
    with pytest.raises(TypeError, match="dim"):
        ours(x, 0, dim=1)

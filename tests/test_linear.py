import numpy as np
import pytest

from fastreg.linear import linear, linear_backward


def _ref(x, w, b, gy):
    x, w, gy = (a.astype(np.float64) for a in (x, w, gy))
    y = x @ w.T + (0 if b is None else b.astype(np.float64))
    return y, gy.T @ x, gy.sum(0), gy @ w


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 2e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("n, d, c", [(1, 1, 1), (7, 3, 5), (256, 784, 10), (33, 65, 1), (0, 4, 3), (5, 0, 2)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_forward_backward_match_numpy_float64(rng, dtype, rtol, n, d, c, with_bias):
    x = rng.standard_normal((n, d)).astype(dtype)
    w = rng.standard_normal((c, d)).astype(dtype)
    b = rng.standard_normal(c).astype(dtype) if with_bias else None
    gy = rng.standard_normal((n, c)).astype(dtype)
    y_ref, gw_ref, gb_ref, gx_ref = _ref(x, w, b, gy)
    scale = max(1.0, np.sqrt(d), np.sqrt(n))
    y = linear(x, w, b)
    assert y.dtype == dtype and y.shape == (n, c)
    np.testing.assert_allclose(y, y_ref, rtol=rtol, atol=rtol * scale)
    gw, gb, gx = linear_backward(x, w, gy, bias=with_bias, input_grad=True)
    assert gw.shape == (c, d) and gx.shape == (n, d)
    np.testing.assert_allclose(gw, gw_ref, rtol=rtol, atol=rtol * scale)
    np.testing.assert_allclose(gx, gx_ref, rtol=rtol, atol=rtol * scale)
    if with_bias:
        np.testing.assert_allclose(gb, gb_ref, rtol=rtol, atol=rtol * scale)
    else:
        assert gb is None


def test_optional_grads_are_none(rng):
    x, w, gy = rng.standard_normal((4, 3)), rng.standard_normal((2, 3)), rng.standard_normal((4, 2))
    gw, gb, gx = linear_backward(x, w, gy)
    assert gx is None and gb is not None
    np.testing.assert_allclose(gw, gy.T @ x, rtol=1e-12)


def test_non_contiguous_and_negative_strides(rng):
    x = rng.standard_normal((10, 12))[::-2, ::3]  # (5, 4), negative row stride
    w = rng.standard_normal((4, 3)).T  # (3, 4), Fortran order
    b = rng.standard_normal(6)[::2]
    np.testing.assert_allclose(linear(x, w, b), x @ w.T + b, rtol=1e-12)


def test_matches_torch_autograd(rng):
    torch = pytest.importorskip("torch")
    x = torch.tensor(rng.standard_normal((9, 6)), requires_grad=True)
    w = torch.tensor(rng.standard_normal((4, 6)), requires_grad=True)
    b = torch.tensor(rng.standard_normal(4), requires_grad=True)
    y = torch.nn.functional.linear(x, w, b)
    gy = torch.tensor(rng.standard_normal((9, 4)))
    y.backward(gy)
    ours = linear(x, w, b)
    assert isinstance(ours, torch.Tensor)
    torch.testing.assert_close(ours, y.detach())
    gw, gb, gx = linear_backward(x, w, gy, input_grad=True)
    torch.testing.assert_close(gw, w.grad)
    torch.testing.assert_close(gb, b.grad)
    torch.testing.assert_close(gx, x.grad)


@pytest.mark.parametrize(
    "args, exc, match",
    [
        ((np.ones((2, 3)), np.ones((4, 2))), ValueError, "in_features"),
        ((np.ones(3), np.ones((4, 3))), ValueError, "2-D"),
        ((np.ones((2, 3)), np.ones(3)), ValueError, "2-D"),
        ((np.ones((2, 3)), np.ones((4, 3)), np.ones(3)), ValueError, "bias must have shape"),
        ((np.ones((2, 3)), np.ones((4, 3), np.float32)), TypeError, "same dtype"),
        ((np.ones((2, 3), np.int64), np.ones((4, 3), np.int64)), TypeError, "float32 or float64"),
        (([[1.0, 2.0]], np.ones((1, 2))), TypeError, "numpy.ndarray or a torch.Tensor"),
    ],
)
def test_bad_input(args, exc, match):
    with pytest.raises(exc, match=match):
        linear(*args)


def test_backward_bad_grad_output_shape():
    with pytest.raises(ValueError, match="grad_output must have shape"):
        linear_backward(np.ones((2, 3)), np.ones((4, 3)), np.ones((2, 3)))

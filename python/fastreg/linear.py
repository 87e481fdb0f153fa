"""Linear layer on a real BLAS: ``y = x @ weight.T + bias`` and its backward.

The layout is ``torch.nn.functional.linear``'s: ``weight`` is ``[out_features,
in_features]``. The products run in C++ on SciPy's BLAS (``sgemm``/``dgemm`` taken
from ``scipy.linalg.cython_blas``, as scikit-learn does), so fastreg links no BLAS of
its own. Inputs are NumPy arrays or CPU torch tensors; outputs are NumPy arrays, or
torch tensors sharing their memory when ``input`` is a tensor.
"""

from __future__ import annotations

import numpy as np

from . import _core
from ._interop import as_numpy_view, is_tensor, torch_module
from ._typing import ArrayLike, ArrayOrTensor

__all__ = ["linear", "linear_backward"]

_BLAS_NAMES = ("sgemm", "dgemm", "sgemv", "dgemv")


def _ensure_blas() -> None:
    """Hand SciPy's BLAS entry points to the C++ kernels (once per process)."""
    if _core.blas_ready():
        return
    try:
        from scipy.linalg import cython_blas
    except ImportError as exc:  # pragma: no cover - scipy is a dependency
        raise ImportError("fastreg's linear algebra needs SciPy's BLAS: pip install scipy") from exc
    capi = cython_blas.__pyx_capi__
    _core.set_blas(*(capi[name] for name in _BLAS_NAMES))


def _float_array(x, name: str, dtype=None) -> np.ndarray:
    a = as_numpy_view(x, name)
    if dtype is None and a.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name} must have dtype float32 or float64, got {a.dtype}")
    if dtype is not None and a.dtype != dtype:
        raise TypeError(f"{name} must have the same dtype as input ({dtype}), got {a.dtype}")
    return np.ascontiguousarray(a)


def _wrap(out: np.ndarray | None, like):
    if out is None or not is_tensor(like):
        return out
    return torch_module().from_numpy(out)


def linear(input: ArrayLike, weight: ArrayLike, bias: ArrayLike | None = None) -> ArrayOrTensor:
    """``input @ weight.T + bias``, as ``torch.nn.functional.linear``.

    input: float32/float64 ``[n, in_features]``; weight: same dtype ``[out_features,
    in_features]``; bias: same dtype ``[out_features]`` or None.
    Returns ``[n, out_features]`` of input's dtype (a NumPy array, or a torch tensor
    when ``input`` is one). Non-contiguous inputs are copied first.
    """
    _ensure_blas()
    x = _float_array(input, "input")
    w = _float_array(weight, "weight", x.dtype)
    b = None if bias is None else _float_array(bias, "bias", x.dtype)
    return _wrap(_core.linear_forward(x, w, b), input)


def linear_backward(
    input: ArrayLike, weight: ArrayLike, grad_output: ArrayLike, *, bias: bool = True, input_grad: bool = False
) -> tuple[ArrayOrTensor, ArrayOrTensor | None, ArrayOrTensor | None]:
    """Gradients of ``linear(input, weight, bias)`` given ``grad_output = dL/dy``.

    input: ``[n, in_features]``, weight: ``[out_features, in_features]``,
    grad_output: ``[n, out_features]``, all the same float dtype.
    Returns ``(grad_weight [out, in] = grad_output.T @ input,
    grad_bias [out] = grad_output.sum(0) or None when bias=False,
    grad_input [n, in] = grad_output @ weight or None unless input_grad=True)``.
    """
    _ensure_blas()
    x = _float_array(input, "input")
    w = _float_array(weight, "weight", x.dtype)
    gy = _float_array(grad_output, "grad_output", x.dtype)
    gw, gb, gx = _core.linear_backward(x, w, gy, bool(bias), bool(input_grad))
    return _wrap(gw, input), _wrap(gb, input), _wrap(gx, input)

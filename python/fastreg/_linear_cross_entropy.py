"""Fused linear + softmax cross-entropy that never builds the [N, V] logits.

``linear_cross_entropy(h, weight, target, bias)`` equals
``torch.nn.functional.cross_entropy(torch.nn.functional.linear(h, weight, bias), target)``
(plus Liger-Kernel's z-loss and logit soft-capping), computed over chunks of rows and
tiles of the vocabulary by BLAS GEMMs into cache-sized buffers. See docs/ops.md.
"""

from __future__ import annotations

import numpy as np

from . import _core
from ._checks import check_int, check_real, labels_as_int64
from ._interop import is_tensor, torch_module
from .linear import _ensure_blas

__all__ = ["linear_cross_entropy", "linear_cross_entropy_with_grad"]

_REDUCTIONS = ("mean", "sum", "none")


def _array(x, name: str) -> tuple[np.ndarray, bool]:
    """(C-contiguous ndarray sharing x's memory where possible, whether x was a torch tensor)."""
    if is_tensor(x):
        if x.device.type != "cpu":
            raise ValueError(f"{name} is on device {x.device}; fastreg.ops takes CPU tensors")
        a, tensor = x.detach().numpy(), True
    elif isinstance(x, np.ndarray):
        a, tensor = x, False
    else:
        raise TypeError(f"{name} must be a numpy.ndarray or a torch.Tensor, got {type(x).__name__}")
    return (a if a.flags.c_contiguous else np.ascontiguousarray(a)), tensor


def _run(
    h,
    weight,
    target,
    bias,
    ignore_index,
    label_smoothing,
    reduction,
    lse_square_scale,
    softcap,
    want_grad,
    return_lse,
    return_argmax,
    grad_scale=1.0,
):
    _ensure_blas()
    x, as_tensor = _array(h, "input")
    w, _ = _array(weight, "weight")
    y, _ = _array(target, "target")
    b = None if bias is None else _array(bias, "bias")[0]
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    ignore_index = check_int(ignore_index, "ignore_index")
    label_smoothing = check_real(label_smoothing, "label_smoothing")
    lse_square_scale = check_real(lse_square_scale, "lse_square_scale")
    if softcap is not None:
        softcap = check_real(softcap, "softcap")
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"input must have dtype float32 or float64, got {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"input must have shape (N, D), got {x.shape}")
    if y.dtype.kind in "iu":
        y = labels_as_int64(y, w.shape[0] if w.ndim == 2 else 0, ignore_index)
    elif y.dtype.kind not in "iu":
        raise TypeError(f"target must hold integer class indices, got dtype {y.dtype}")
    n, d = x.shape
    v = w.shape[0] if w.ndim == 2 else 0
    grads = (None, None, None)
    if want_grad and w.ndim == 2:
        grads = (np.empty_like(x), np.empty((v, d), x.dtype), None if b is None else np.empty(v, x.dtype))
    rows = np.empty(n, x.dtype) if reduction == "none" else None
    lse = np.empty(n, x.dtype) if return_lse else None
    am = np.empty(n, np.int64) if return_argmax else None
    loss = _core.linear_cross_entropy(
        x,
        w,
        y,
        b,
        int(ignore_index),
        reduction,
        label_smoothing,
        lse_square_scale,
        softcap,
        *grads,
        rows,
        lse,
        am,
        float(grad_scale),
    )

    def out(a):
        return torch_module().from_numpy(a) if as_tensor and a is not None else a

    if reduction == "none":
        res = out(rows)
    elif as_tensor:
        torch = torch_module()
        res = torch.tensor(loss, dtype=torch.float32 if x.dtype == np.float32 else torch.float64)
    else:
        res = x.dtype.type(loss)
    result = (res,)
    if want_grad:
        result += tuple(out(g) for g in grads)
    if return_lse:
        result += (out(lse),)
    if return_argmax:
        result += (out(am),)
    return result[0] if len(result) == 1 else result


def linear_cross_entropy(
    input,
    weight,
    target,
    bias=None,
    *,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    lse_square_scale: float = 0.0,
    softcap: float | None = None,
    return_lse: bool = False,
    return_argmax: bool = False,
):
    """``cross_entropy(input @ weight.T + bias, target)`` without materialising the logits.

    input: float32/float64 ``[N, D]``; weight: same dtype ``[V, D]`` (``torch.nn.Linear``'s
    layout); target: integer class indices ``[N]``; bias: ``[V]`` or None. NumPy arrays or CPU
    torch tensors (viewed, not copied; results come back in input's type).

    Same semantics as ``F.cross_entropy(F.linear(input, weight, bias), target, ignore_index=,
    label_smoothing=, reduction=)``, with two options from Liger-Kernel's fused linear
    cross-entropy: ``softcap`` replaces the logits z by ``softcap * tanh(z / softcap)`` before the
    softmax, and ``lse_square_scale`` adds the z-loss ``lse_square_scale * lse**2`` to the loss of
    every row that is not ignored (so ``reduction='mean'`` adds ``lse_square_scale * mean(lse**2)``
    over those rows), where ``lse = logsumexp(z)`` of the row.

    Returns the loss (a scalar of input's dtype; ``reduction='none'``: the ``[N]`` row losses).
    With ``return_lse`` / ``return_argmax`` a tuple instead, in this order: the loss, the ``[N]``
    per-row log-sum-exp of the (capped) logits, the ``[N]`` int64 per-row argmax (first maximum;
    first NaN in a row holding one), as ``numpy.unique``'s ``return_*`` flags do. Ignored rows
    get their lse and argmax too.
    """
    return _run(
        input,
        weight,
        target,
        bias,
        ignore_index,
        label_smoothing,
        reduction,
        lse_square_scale,
        softcap,
        False,
        return_lse,
        return_argmax,
    )


def linear_cross_entropy_with_grad(
    input,
    weight,
    target,
    bias=None,
    *,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    lse_square_scale: float = 0.0,
    softcap: float | None = None,
    return_lse: bool = False,
    return_argmax: bool = False,
):
    """``(loss, grad_input, grad_weight, grad_bias)`` of :func:`linear_cross_entropy` in one sweep.

    grad_input: ``[N, D]``, grad_weight: ``[V, D]``, grad_bias: ``[V]`` (None when ``bias`` is
    None), the gradients of the loss (for ``reduction='none'``: of the summed row losses).
    ``return_lse`` / ``return_argmax`` append the per-row lse / argmax after grad_bias.
    """
    return _run(
        input,
        weight,
        target,
        bias,
        ignore_index,
        label_smoothing,
        reduction,
        lse_square_scale,
        softcap,
        True,
        return_lse,
        return_argmax,
    )

"""Numerically stable softmax family, fused softmax cross-entropy and regression losses.

NumPy-level API backed by C++ kernels (AVX2 exp, rows in parallel). Inputs are float32 or
float64 NumPy arrays or CPU torch tensors (viewed, not copied); results come back in the
input's type (a tensor in, a tensor out) and dtype. Semantics follow
``torch.nn.functional`` (cross_entropy, l1_loss, huber_loss, smooth_l1_loss) and
``scipy.special`` (softmax, log_softmax, logsumexp). See docs/ops.md.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from . import _core
from ._cuda_ops import is_cuda_array  # CUDA hook (fastreg/_cuda_ops.py)
from ._interop import is_tensor, torch_module

__all__ = [
    "cross_entropy",
    "cross_entropy_with_grad",
    "huber_loss",
    "huber_loss_with_grad",
    "l1_loss",
    "l1_loss_with_grad",
    "log_softmax",
    "logsumexp",
    "smooth_l1_loss",
    "smooth_l1_loss_with_grad",
    "softmax",
    "softmin",
    "squared_loss",
    "squared_loss_with_grad",
]

_REDUCTIONS = ("mean", "sum", "none")


def _view(x, name: str):
    """(ndarray sharing x's memory where possible, whether x was a torch tensor)."""
    if type(x) is np.ndarray:  # the common case first: no further checks
        return x, False
    if is_tensor(x):
        if x.device.type != "cpu":
            raise ValueError(f"{name} is on device {x.device}; fastreg.ops takes CPU tensors")
        return x.detach().numpy(), True
    return np.asarray(x), False


def _contig(a: np.ndarray) -> np.ndarray:
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def _wrap(a, as_tensor: bool):
    return torch_module().from_numpy(a) if as_tensor else a


def _scalar(value: float, dtype, as_tensor: bool):
    if as_tensor:
        torch = torch_module()
        return torch.tensor(value, dtype=torch.float32 if dtype == np.float32 else torch.float64)
    return dtype.type(value)


def _check_reduction(reduction) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return float(value)


def _rows(x, axis, name: str):
    """x as a C-contiguous [rows, axis length] array, with what is needed to undo it."""
    a, as_tensor = _view(x, name)
    if axis is None:
        shape = a.shape
        a2 = _contig(a).reshape(1, a.size)
        return a2, shape, None, as_tensor
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"axis must be an int or None, got {type(axis).__name__}")
    if a.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension, got a scalar")
    if not -a.ndim <= axis < a.ndim:
        raise getattr(np, "exceptions", np).AxisError(int(axis), a.ndim)
    axis = int(axis) % a.ndim
    if axis != a.ndim - 1:
        a = np.moveaxis(a, axis, -1)
    a = _contig(a)
    shape = a.shape
    return a.reshape(math.prod(shape[:-1]), shape[-1]), shape, axis, as_tensor


def _softmax(x, axis, log: bool, name: str = "x"):
    a2, shape, axis, as_tensor = _rows(x, axis, name)
    out = np.empty_like(a2)
    _core.softmax(a2, out, log)
    out = out.reshape(shape)
    if axis is not None and axis != len(shape) - 1:
        out = np.moveaxis(out, -1, axis)
    return _wrap(out, as_tensor)


def softmax(x, axis: int | None = -1):
    """Softmax along ``axis``: ``exp(x - max) / sum(exp(x - max))``, exact for huge entries.

    x: float32/float64 array or CPU tensor of any shape; returns the same shape and dtype.
    ``axis=None`` normalises over all entries. A slice with a NaN, or all -inf, gives NaN
    (as torch and SciPy do).
    """
    return _softmax(x, axis, False)


def log_softmax(x, axis: int | None = -1):
    """``x - logsumexp(x)`` along ``axis`` (finite wherever the softmax is nonzero)."""
    return _softmax(x, axis, True)


def softmin(x, axis: int | None = -1):
    """Softmin along ``axis``: ``softmax(-x)`` (torch.nn.functional.softmin)."""
    a, as_tensor = _view(x, "x")
    return _wrap(_softmax(np.negative(a), axis, False), as_tensor)


def logsumexp(x, axis: int | None = -1, temperature: float = 1.0, keepdims: bool = False):
    """``temperature * log(sum(exp(x / temperature)))`` along ``axis`` (d2l's RealSoftMax).

    x: float32/float64 array or CPU tensor; the result drops ``axis`` (kept with size 1 when
    ``keepdims``). ``temperature`` must be finite and >= 0; as it tends to 0 the result tends
    to the max, and ``temperature=0`` returns the max. All -inf (or an empty axis) gives
    -inf, any +inf gives +inf, any NaN gives NaN.
    """
    temperature = _number(temperature, "temperature")
    a2, shape, axis, as_tensor = _rows(x, axis, "x")
    out = np.empty(a2.shape[0], dtype=a2.dtype)
    _core.logsumexp(a2, out, temperature)
    if axis is None:
        out = out.reshape((1,) * len(shape) if keepdims else ())
    else:
        out = out.reshape(shape[:-1])
        if keepdims:
            out = np.expand_dims(out, axis)
    if out.ndim == 0 and not as_tensor:
        return out[()]
    return _wrap(np.ascontiguousarray(out), as_tensor)


def _cross_entropy(logits, target, weight, ignore_index, reduction, label_smoothing, want_grad, out):
    # The general path. The public functions first try _core.cross_entropy_fast, which checks
    # and runs plain C-contiguous arrays with int64 labels in one C++ call (small batches are
    # mostly overhead) and returns None for anything that needs the conversions below. Either
    # way C++ validates every argument.
    x, as_tensor = _view(logits, "logits")
    y, _ = _view(target, "target")
    _check_reduction(reduction)
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"ignore_index must be an int, got {type(ignore_index).__name__}")
    label_smoothing = _number(label_smoothing, "label_smoothing")
    unbatched = x.ndim == 1
    if unbatched:  # torch's unbatched form: logits [C], target [] or probabilities [C]
        x = x.reshape(1, -1)
        y = y.reshape(1) if y.ndim == 0 else y.reshape(1, *y.shape)
    elif x.ndim != 2:
        raise ValueError(f"logits must have shape (N, C) or (C,), got {x.shape}")
    x = _contig(x)
    if y.dtype.kind in "iu" and y.dtype != np.int64:
        y = y.astype(np.int64)
    elif y.dtype.kind == "f" and y.shape != x.shape:
        raise TypeError(
            f"target must hold integer class indices of shape {x.shape[:1]} (or float class "
            f"probabilities of shape {x.shape}), got {y.dtype} of shape {y.shape}"
        )
    y = _contig(y)
    w = None
    if weight is not None:
        w = _contig(_view(weight, "weight")[0])
    g = None
    if want_grad:
        if out is None:
            g = np.empty_like(x)
        else:
            g = _view(out, "out")[0]
            if unbatched:
                g = g.reshape(1, -1)
    row = np.empty(x.shape[0], dtype=x.dtype) if reduction == "none" else None
    loss = _core.cross_entropy(x, y, w, int(ignore_index), reduction, label_smoothing, g, row)
    if reduction == "none":
        res = _wrap(row, as_tensor) if not unbatched else _scalar(float(row[0]), x.dtype, as_tensor)
    else:
        res = _scalar(loss, x.dtype, as_tensor)
    if not want_grad:
        return res
    if out is not None:
        return res, out
    return res, _wrap(g.reshape(-1) if unbatched else g, as_tensor)


def cross_entropy(
    logits,
    target,
    *,
    weight=None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
):
    """Softmax cross-entropy with ``torch.nn.functional.cross_entropy``'s semantics.

    logits: float32/float64 [N, C] (or [C]). target: integer class indices [N] (or a scalar),
    or float class probabilities [N, C] of the logits' dtype. weight: [C] class weights or None.
    Rows whose target equals ``ignore_index`` count 0; ``reduction='mean'`` divides by the summed
    weights of the other rows (probability targets: by N), ``'sum'`` sums, ``'none'`` returns the
    [N] row losses. ``label_smoothing`` in [0, 1] mixes the target with the uniform distribution.
    Returns a scalar of the logits' dtype (``'none'``: an [N] array).
    """
    if type(logits) is not np.ndarray and is_cuda_array(logits):  # CUDA hook: CuPy / CUDA torch arrays
        from ._cuda_ops import cross_entropy_with_grad as cuda_xent

        return cuda_xent(logits, target, weight=weight, ignore_index=ignore_index, reduction=reduction,
                         label_smoothing=label_smoothing, want_grad=False)
    res = _core.cross_entropy_fast(logits, target, weight, ignore_index, reduction, label_smoothing, None, False)
    if res is not None:
        return res
    return _cross_entropy(logits, target, weight, ignore_index, reduction, label_smoothing, False, None)


def cross_entropy_with_grad(
    logits,
    target,
    *,
    weight=None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    out=None,
):
    """``(loss, grad)``: :func:`cross_entropy` and its gradient w.r.t. ``logits`` in one fused pass.

    grad: [N, C] like ``logits``, ``d loss / d logits`` (for ``reduction='none'``, the gradient of
    the summed row losses). ``out``: a C-contiguous, writeable [N, C] buffer of the logits' dtype to
    write the gradient into (it may be ``logits`` itself: the logits are then overwritten); it is
    returned as the second element.
    """
    if type(logits) is not np.ndarray and is_cuda_array(logits):  # CUDA hook: CuPy / CUDA torch arrays
        from ._cuda_ops import cross_entropy_with_grad as cuda_xent

        return cuda_xent(logits, target, weight=weight, ignore_index=ignore_index, reduction=reduction,
                         label_smoothing=label_smoothing, out=out)
    res = _core.cross_entropy_fast(logits, target, weight, ignore_index, reduction, label_smoothing, out, True)
    if res is not None:
        return res
    return _cross_entropy(logits, target, weight, ignore_index, reduction, label_smoothing, True, out)


def _regression(kind: str, input, target, param: float, reduction: str, want_grad: bool, out):
    p, as_tensor = _view(input, "input")
    t, _ = _view(target, "target")
    _check_reduction(reduction)
    if t.shape != p.shape:
        # d2l's y.reshape(y_hat.shape): same number of elements only, never a broadcast.
        if t.size != p.size:
            raise ValueError(
                f"target of shape {t.shape} cannot be matched to input of shape {p.shape}: "
                f"they must have the same number of elements ({t.size} != {p.size})"
            )
        t = t.reshape(p.shape)
    p, t = _contig(p), _contig(t)
    loss_buf = np.empty_like(p) if reduction == "none" else None
    g = None
    if want_grad:
        g = np.empty_like(p) if out is None else _view(out, "out")[0]
    loss = _core.regression_loss(kind, p, t, param, reduction, loss_buf, g)
    res = _wrap(loss_buf, as_tensor) if reduction == "none" else _scalar(loss, p.dtype, as_tensor)
    if not want_grad:
        return res
    return res, (out if out is not None else _wrap(g, as_tensor))


_REG_DOC = """

    input: float32/float64 array or CPU tensor; target: same dtype and number of elements (it
    is reshaped to input's shape, as d2l's ``y.reshape(y_hat.shape)``; anything else is a
    ValueError, never a broadcast). reduction: 'mean' (default), 'sum' or 'none' (element-wise,
    input's shape). The ``_with_grad`` twin returns ``(loss, d loss / d input)``; ``out`` is an
    optional C-contiguous buffer for the gradient (it may be ``input`` itself).
"""


def squared_loss(y_hat, y, *, reduction: str = "mean"):
    return _regression("squared", y_hat, y, 1.0, reduction, False, None)


def squared_loss_with_grad(y_hat, y, *, reduction: str = "mean", out=None):
    return _regression("squared", y_hat, y, 1.0, reduction, True, out)


def l1_loss(input, target, *, reduction: str = "mean"):
    return _regression("l1", input, target, 1.0, reduction, False, None)


def l1_loss_with_grad(input, target, *, reduction: str = "mean", out=None):
    return _regression("l1", input, target, 1.0, reduction, True, out)


def huber_loss(input, target, *, reduction: str = "mean", delta: float = 1.0):
    return _regression("huber", input, target, _number(delta, "delta"), reduction, False, None)


def huber_loss_with_grad(input, target, *, reduction: str = "mean", delta: float = 1.0, out=None):
    return _regression("huber", input, target, _number(delta, "delta"), reduction, True, out)


def smooth_l1_loss(input, target, *, reduction: str = "mean", beta: float = 1.0):
    return _regression("smooth_l1", input, target, _number(beta, "beta"), reduction, False, None)


def smooth_l1_loss_with_grad(input, target, *, reduction: str = "mean", beta: float = 1.0, out=None):
    return _regression("smooth_l1", input, target, _number(beta, "beta"), reduction, True, out)


squared_loss.__doc__ = "d2l's squared loss ``(y_hat - y) ** 2 / 2`` (element-wise, then reduced)." + _REG_DOC
l1_loss.__doc__ = "``|input - target|`` (torch.nn.functional.l1_loss; gradient sign, 0 at 0)." + _REG_DOC
huber_loss.__doc__ = (
    "torch's HuberLoss: ``d**2 / 2`` if ``|d| < delta`` else ``delta * (|d| - delta / 2)``, "
    "``d = input - target``, delta > 0." + _REG_DOC
)
smooth_l1_loss.__doc__ = (
    "torch's SmoothL1Loss: ``d**2 / (2 beta)`` if ``|d| < beta`` else ``|d| - beta / 2``; "
    "beta >= 0 (0 is l1_loss)." + _REG_DOC
)
for _f, _base in (
    (squared_loss_with_grad, squared_loss),
    (l1_loss_with_grad, l1_loss),
    (huber_loss_with_grad, huber_loss),
    (smooth_l1_loss_with_grad, smooth_l1_loss),
):
    _f.__doc__ = f"``(loss, grad)`` of :func:`{_base.__name__}` in one fused pass." + _REG_DOC
del _f, _base

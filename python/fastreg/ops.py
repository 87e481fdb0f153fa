"""Numerically stable softmax family, fused softmax cross-entropy and regression losses.

NumPy-level API backed by C++ kernels (AVX2 exp, rows in parallel). Inputs are float32 or
float64 NumPy arrays or CPU torch tensors (viewed, not copied); results come back in the
input's type (a tensor in, a tensor out) and dtype. Semantics follow
``torch.nn.functional`` (cross_entropy, l1_loss, huber_loss, smooth_l1_loss) and
``scipy.special`` (softmax, log_softmax, logsumexp). See docs/ops.md.
"""

from __future__ import annotations

import math

import numpy as np

from . import _core
from ._checks import check_hyper, check_int, check_real
from ._cuda_ops import is_cuda_array  # CUDA hook (fastreg/_cuda_ops.py)
from ._interop import is_tensor, torch_module
from ._linear_cross_entropy import linear_cross_entropy, linear_cross_entropy_with_grad
from ._typing import ArrayLike, ArrayOrTensor, DTypeLike, Loss

__all__ = [
    "cross_entropy",
    "cross_entropy_with_grad",
    "huber_loss",
    "huber_loss_with_grad",
    "l1_loss",
    "l1_loss_with_grad",
    "linear_cross_entropy",
    "linear_cross_entropy_with_grad",
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
_ndarray = np.ndarray  # the plain-array type tests of the cross-entropy entries (one lookup less)


def _view(x, name: str):
    """(ndarray sharing x's memory where possible, whether x was a torch tensor)."""
    if type(x) is np.ndarray:  # the common case first: no further checks
        return x, False
    if is_tensor(x):
        if x.device.type != "cpu":
            raise ValueError(f"{name} is on device {x.device}; fastreg.ops takes CPU tensors")
        return x.detach().numpy(), True
    return np.asarray(x), False


def _torch_path(*xs):
    """fastreg.torch when one of xs is a tensor that autograd (it requires grad under grad
    mode), a torch.func transform, forward-mode AD or torch.compile must see; else None.
    Such a tensor cannot go through a NumPy view: the result would be detached (a silently
    wrong gradient) or the view would fail."""
    torch = torch_module()
    if torch is None or not any(isinstance(x, torch.Tensor) for x in xs):
        return None
    from . import torch as ft  # torch is imported already: a tensor exists

    return ft if ft._needs_autograd(*xs) else None


def _refuse_autograd(fn: str, *xs, out=None) -> None:
    """The _with_grad functions compute the gradient themselves and return plain values (no
    graph, also for inputs that require grad: the gradient is what they give). They cannot
    run on tensors traced by torch.compile or a torch.func transform (no memory to view),
    nor write into an ``out`` that autograd tracks (the write would be invisible to it)."""
    torch = torch_module()
    if torch is None or not any(isinstance(x, torch.Tensor) for x in (*xs, out)):
        return
    from . import torch as ft

    traced = ft._traced((*xs, out))
    if traced or (is_tensor(out) and out.requires_grad and torch_module().is_grad_enabled()):
        raise RuntimeError(
            f"fastreg.ops.{fn}() computes the gradient itself and does not support automatic differentiation, "
            + (
                "but an argument is traced by torch.compile or a torch.func transform / forward-mode AD"
                if traced
                else "but out= requires grad"
            )
            + f"; call fastreg.ops.{fn.removesuffix('_with_grad')}(), which autograd follows"
        )


def _contig(a: np.ndarray) -> np.ndarray:
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def _wrap(a, as_tensor: bool):
    # torch.from_numpy keeps a 0-d array 0-d (np.ascontiguousarray would make it [1]).
    return torch_module().from_numpy(a) if as_tensor else a


def _scalar(value: float, dtype, as_tensor: bool):
    if as_tensor:
        torch = torch_module()
        return torch.tensor(value, dtype=torch.float32 if dtype == np.float32 else torch.float64)
    return dtype.type(value)


def _check_reduction(reduction) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _rows(x, axis, name: str):
    """x as a C-contiguous [rows, axis length] array, with what is needed to undo it."""
    a, as_tensor = _view(x, name)
    if axis is None:
        shape = a.shape
        a2 = _contig(a).reshape(1, a.size)
        return a2, shape, None, as_tensor
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"axis must be an int or None, got {type(axis).__name__}")
    if a.ndim == 0:  # as torch: a scalar is one slice of one entry along axis 0 (or -1)
        if axis not in (0, -1):
            raise getattr(np, "exceptions", np).AxisError(int(axis), 0)
        return a.reshape(1, 1), (), None, as_tensor
    if not -a.ndim <= axis < a.ndim:
        raise getattr(np, "exceptions", np).AxisError(int(axis), a.ndim)
    axis = int(axis) % a.ndim
    if axis != a.ndim - 1:
        a = np.moveaxis(a, axis, -1)
    a = _contig(a)
    shape = a.shape
    return a.reshape(math.prod(shape[:-1]), shape[-1]), shape, axis, as_tensor


_UNSET = object()


def _axis(axis, dim, fn: str):
    """``axis``, or torch's name for it, ``dim`` (not both)."""
    if dim is _UNSET:
        return -1 if axis is _UNSET else axis
    if axis is not _UNSET:
        raise TypeError(f"{fn}() got both 'axis' and its torch alias 'dim'")
    return dim


def _cast(x, dtype):
    """torch's ``dtype=`` argument of softmax & co.: the input is cast before the operation."""
    if dtype is None:
        return x
    if is_tensor(x):
        return x.to(dtype)
    return np.asarray(x).astype(dtype, copy=False)


def _softmax_torch(x, axis, kind: str):
    """torch's own softmax family, for tensors autograd or a transform must see: the
    kernels have no backward, so torch's formula gives the gradient in every mode."""
    torch = torch_module()
    fn = {"softmax": torch.softmax, "log_softmax": torch.log_softmax, "softmin": lambda t, d: torch.softmax(-t, d)}
    if axis is None:
        return fn[kind](x.reshape(-1), 0).reshape(x.shape)
    return fn[kind](x, axis)


def _softmax(x, axis, log: bool, name: str = "x"):
    a2, shape, axis, as_tensor = _rows(x, axis, name)
    out = np.empty_like(a2)
    _core.softmax(a2, out, log)
    out = out.reshape(shape)
    if axis is not None and axis != len(shape) - 1:
        out = np.moveaxis(out, -1, axis)
    return _wrap(out, as_tensor)


def softmax(
    x: ArrayLike, axis: int | None = _UNSET, *, dim: int | None = _UNSET, dtype: DTypeLike = None
) -> ArrayOrTensor:
    """Softmax along ``axis``: ``exp(x - max) / sum(exp(x - max))``, exact for huge entries.

    x: float32/float64 array or CPU tensor of any shape; returns the same shape and dtype.
    ``axis`` defaults to -1; ``axis=None`` normalises over all entries. ``dim`` is torch's
    name for ``axis``; ``dtype`` casts x first (torch's ``dtype=``). A slice with a NaN, or
    all -inf, gives NaN (as torch and SciPy do). A tensor that requires grad gets torch's
    ``torch.softmax`` (the kernel has no backward).
    """
    x, axis = _cast(x, dtype), _axis(axis, dim, "softmax")
    if _torch_path(x) is not None:
        return _softmax_torch(x, axis, "softmax")
    return _softmax(x, axis, False)


def log_softmax(
    x: ArrayLike, axis: int | None = _UNSET, *, dim: int | None = _UNSET, dtype: DTypeLike = None
) -> ArrayOrTensor:
    """``x - logsumexp(x)`` along ``axis`` (finite wherever the softmax is nonzero); arguments
    as :func:`softmax`."""
    x, axis = _cast(x, dtype), _axis(axis, dim, "log_softmax")
    if _torch_path(x) is not None:
        return _softmax_torch(x, axis, "log_softmax")
    return _softmax(x, axis, True)


def softmin(
    x: ArrayLike, axis: int | None = _UNSET, *, dim: int | None = _UNSET, dtype: DTypeLike = None
) -> ArrayOrTensor:
    """Softmin along ``axis``: ``softmax(-x)`` (torch.nn.functional.softmin); arguments as
    :func:`softmax`."""
    x, axis = _cast(x, dtype), _axis(axis, dim, "softmin")
    if _torch_path(x) is not None:
        return _softmax_torch(x, axis, "softmin")
    a, as_tensor = _view(x, "x")
    return _wrap(_softmax(np.negative(a), axis, False), as_tensor)


def logsumexp(
    x: ArrayLike,
    axis: int | tuple[int, ...] | None = _UNSET,
    keepdims: bool = _UNSET,
    *,
    temperature: float = 1.0,
    dim: int | tuple[int, ...] | None = _UNSET,
    keepdim: bool = _UNSET,
) -> np.floating | ArrayOrTensor:
    """``temperature * log(sum(exp(x / temperature)))`` along ``axis`` (d2l's RealSoftMax).

    x: float32/float64 array or CPU tensor; the result drops ``axis`` (kept with size 1 when
    ``keepdims``); ``axis=None`` reduces over all entries to a 0-d result. ``dim`` and
    ``keepdim`` are torch's names, so ``logsumexp(x, dim, keepdim)`` works as
    ``torch.logsumexp``. ``temperature`` (keyword-only) must be finite and >= 0; as it tends
    to 0 the result tends to the max, and ``temperature=0`` returns the max. All -inf (or an
    empty axis) gives -inf, any +inf gives +inf, any NaN gives NaN. A tensor that requires
    grad gets ``temperature * torch.logsumexp(x / temperature)`` (torch's gradient).
    """
    temperature = check_real(temperature, "temperature")
    axis = _axis(axis, dim, "logsumexp")
    if keepdim is not _UNSET:
        if keepdims is not _UNSET:
            raise TypeError("logsumexp() got both 'keepdims' and its torch alias 'keepdim'")
        keepdims = keepdim
    keepdims = bool(keepdims) if keepdims is not _UNSET else False
    if _torch_path(x) is not None:
        return _logsumexp_torch(x, axis, temperature, keepdims)
    if isinstance(axis, (tuple, list)):
        return _logsumexp_axes(x, axis, temperature, keepdims)
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
    return _wrap(out if out.flags.c_contiguous else out.copy(), as_tensor)


def _logsumexp_axes(x, axes, temperature: float, keepdims: bool):
    """logsumexp over several axes (torch's ``dim`` tuple): those axes are moved to the end
    and merged into one, then reduced as one axis."""
    a, as_tensor = _view(x, "x")
    nd = max(a.ndim, 1)
    for ax in axes:
        if isinstance(ax, bool) or not isinstance(ax, (int, np.integer)):
            raise TypeError(f"axis must be an int, a tuple of ints or None, got an entry {type(ax).__name__}")
        if not -nd <= ax < nd:
            raise getattr(np, "exceptions", np).AxisError(int(ax), a.ndim)
    axes = sorted({int(ax) % nd for ax in axes})
    if a.ndim == 0 or len(axes) == a.ndim:
        return logsumexp(x, None, keepdims, temperature=temperature)
    rest = [d for d in range(a.ndim) if d not in axes]
    merged = np.moveaxis(a, axes, range(len(rest), a.ndim)).reshape([a.shape[d] for d in rest] + [-1])
    out = logsumexp(merged, -1, temperature=temperature)
    out = np.asarray(out)
    if keepdims:
        out = out.reshape([1 if d in axes else a.shape[d] for d in range(a.ndim)])
    if out.ndim == 0 and not as_tensor:
        return out[()]
    return _wrap(np.ascontiguousarray(out) if out.ndim else out, as_tensor)


def _logsumexp_torch(x, axis, temperature: float, keepdims: bool):
    temperature = check_hyper(temperature, "temperature")
    dims = tuple(range(x.dim())) if axis is None else tuple(axis) if isinstance(axis, list) else axis
    if temperature == 0:
        return x.amax(dims, keepdims) if x.numel() else x.logsumexp(dims, keepdims)
    if temperature == 1:
        return x.logsumexp(dims, keepdims)
    return (x / temperature).logsumexp(dims, keepdims) * temperature


def _cross_entropy(logits, target, weight, ignore_index, reduction, label_smoothing, want_grad, out):
    # Tensors and other array-likes as ndarrays (sharing memory where possible), then the
    # one binding, which converts layouts and label dtypes and checks every argument.
    x, as_tensor = _view(logits, "logits")
    y, _ = _view(target, "target")
    w = None if weight is None else _view(weight, "weight")[0]
    o = None if out is None else _view(out, "out")[0]
    res = _core.cross_entropy(x, y, w, ignore_index, reduction, label_smoothing, o, None, 1.0, want_grad)
    if not as_tensor:
        return res
    torch = torch_module()
    if not want_grad:
        return torch.from_numpy(np.asarray(res))
    loss, g = res
    return torch.from_numpy(np.asarray(loss)), out if out is not None else torch.from_numpy(g)


def _cross_entropy_autograd(ft, logits, target, weight, ignore_index, reduction, label_smoothing):
    """ops.cross_entropy's arguments, checked as on the NumPy path, through fastreg.torch."""
    torch = torch_module()
    _check_reduction(reduction)
    ignore_index = check_int(ignore_index, "ignore_index")
    label_smoothing = check_real(label_smoothing, "label_smoothing")
    target = torch.as_tensor(target)
    if not target.is_floating_point() and target.dtype != torch.int64:
        target = target.long()  # ops takes any integer label dtype; torch wants int64
    elif target.is_floating_point() and ignore_index >= 0:
        raise ValueError(f"ignore_index is not supported for floating point target (got {int(ignore_index)})")
    if weight is not None:
        weight = torch.as_tensor(weight)
    return ft.cross_entropy(
        logits,
        target,
        weight=weight,
        ignore_index=int(ignore_index),
        reduction=reduction,
        label_smoothing=label_smoothing,
    )


def cross_entropy(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Loss:
    """Softmax cross-entropy with ``torch.nn.functional.cross_entropy``'s semantics.

    logits: float32/float64 [N, C] (or [C]). target: integer class indices [N] (or a scalar),
    or float class probabilities [N, C] of the logits' dtype. weight: [C] class weights or None.
    Rows whose target equals ``ignore_index`` count 0; ``reduction='mean'`` divides by the summed
    weights of the other rows (probability targets: by N), ``'sum'`` sums, ``'none'`` returns the
    [N] row losses. ``label_smoothing`` in [0, 1] mixes the target with the uniform distribution.
    Returns a scalar of the logits' dtype (``'none'``: an [N] array). Tensors that require
    grad go through fastreg.torch.cross_entropy (fused, autograd-aware).
    """
    # Plain ndarrays go straight to the binding, which converts and checks them (the type
    # test also keeps torch.compile's trace, which cannot follow a pybind11 call, out).
    if type(logits) is type(target) is _ndarray and (weight is None or type(weight) is _ndarray):
        return _core.cross_entropy(
            logits, target, weight, ignore_index, reduction, label_smoothing, None, None, 1.0, False
        )
    ft = _torch_path(logits, target, weight)
    if ft is not None:
        return _cross_entropy_autograd(ft, logits, target, weight, ignore_index, reduction, label_smoothing)
    if is_cuda_array(logits):  # CUDA hook: CuPy / CUDA torch arrays (fastreg/_cuda_ops.py)
        from ._cuda_ops import cross_entropy_with_grad as cuda_xent

        return cuda_xent(
            logits,
            target,
            weight=weight,
            ignore_index=ignore_index,
            reduction=reduction,
            label_smoothing=label_smoothing,
            want_grad=False,
        )
    return _cross_entropy(logits, target, weight, ignore_index, reduction, label_smoothing, False, None)


def cross_entropy_with_grad(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    out: ArrayLike | None = None,
) -> tuple[Loss, ArrayOrTensor]:
    """``(loss, grad)``: :func:`cross_entropy` and its gradient w.r.t. ``logits`` in one fused pass.

    grad: [N, C] like ``logits``, ``d loss / d logits`` (for ``reduction='none'``, the gradient of
    the summed row losses). ``out``: a C-contiguous, writeable [N, C] buffer of the logits' dtype to
    write the gradient into (it may be ``logits`` itself: the logits are then overwritten); it is
    returned as the second element. Both results are plain values, without a graph, even
    for logits that require grad; under torch.compile or a torch.func transform, or with an
    ``out`` that requires grad, it raises RuntimeError: use :func:`cross_entropy` there.
    """
    if (
        type(logits) is type(target) is _ndarray
        and (weight is None or type(weight) is _ndarray)
        and (out is None or type(out) is _ndarray)
    ):  # plain ndarrays: straight to the binding, which converts and checks them
        return _core.cross_entropy(
            logits, target, weight, ignore_index, reduction, label_smoothing, out, None, 1.0, True
        )
    _refuse_autograd("cross_entropy_with_grad", logits, target, weight, out=out)
    if is_cuda_array(logits):  # CUDA hook: CuPy / CUDA torch arrays (fastreg/_cuda_ops.py)
        from ._cuda_ops import cross_entropy_with_grad as cuda_xent

        return cuda_xent(
            logits,
            target,
            weight=weight,
            ignore_index=ignore_index,
            reduction=reduction,
            label_smoothing=label_smoothing,
            out=out,
        )
    return _cross_entropy(logits, target, weight, ignore_index, reduction, label_smoothing, True, out)


def _regression(kind: str, input, target, param: float, reduction: str, want_grad: bool, out):
    if want_grad:
        _refuse_autograd(f"{kind}_loss_with_grad", input, target, out=out)
    else:
        ft = _torch_path(input, target)
        if ft is not None:
            return _regression_autograd(ft, kind, input, target, param, reduction)
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


def _regression_autograd(ft, kind: str, input, target, param: float, reduction: str):
    """A regression loss of tensors autograd must see, through fastreg.torch's fused op, with
    the NumPy path's target rule (same number of elements, reshaped; never broadcast)."""
    torch = torch_module()
    _check_reduction(reduction)
    if kind == "huber":
        check_hyper(param, "delta", positive=True)
    if kind == "smooth_l1":
        check_hyper(param, "beta")
    target = torch.as_tensor(target)
    if target.shape != input.shape:
        if target.numel() != input.numel():
            raise ValueError(
                f"target of shape {tuple(target.shape)} cannot be matched to input of shape {tuple(input.shape)}: "
                f"they must have the same number of elements ({target.numel()} != {input.numel()})"
            )
        target = target.reshape(input.shape)
    if target.dtype != input.dtype:
        raise TypeError(f"target must have the input's dtype {input.dtype}, got {target.dtype}")
    fn = {"squared": ft.squared_loss, "l1": ft.l1_loss}.get(kind)
    if fn is not None:
        return fn(input, target, reduction=reduction)
    if kind == "huber":
        return ft.huber_loss(input, target, reduction=reduction, delta=param)
    return ft.smooth_l1_loss(input, target, reduction=reduction, beta=param)


_REG_DOC = """

    input: float32/float64 array or CPU tensor; target: same dtype and number of elements (it
    is reshaped to input's shape, as d2l's ``y.reshape(y_hat.shape)``; anything else is a
    ValueError, never a broadcast). reduction: 'mean' (default), 'sum' or 'none' (element-wise,
    input's shape). The ``_with_grad`` twin returns ``(loss, d loss / d input)``; ``out`` is an
    optional C-contiguous buffer for the gradient (it may be ``input`` itself). Tensors that
    require grad: the plain function goes through fastreg.torch's fused op (autograd-aware);
    the ``_with_grad`` twin returns plain values (no graph), and raises RuntimeError under
    torch.compile or a torch.func transform, or for an ``out`` that requires grad.
"""


def squared_loss(y_hat: ArrayLike, y: ArrayLike, *, reduction: str = "mean") -> Loss:
    return _regression("squared", y_hat, y, 1.0, reduction, False, None)


def squared_loss_with_grad(
    y_hat: ArrayLike, y: ArrayLike, *, reduction: str = "mean", out: ArrayLike | None = None
) -> tuple[Loss, ArrayOrTensor]:
    return _regression("squared", y_hat, y, 1.0, reduction, True, out)


def l1_loss(input: ArrayLike, target: ArrayLike, *, reduction: str = "mean") -> Loss:
    return _regression("l1", input, target, 1.0, reduction, False, None)


def l1_loss_with_grad(
    input: ArrayLike, target: ArrayLike, *, reduction: str = "mean", out: ArrayLike | None = None
) -> tuple[Loss, ArrayOrTensor]:
    return _regression("l1", input, target, 1.0, reduction, True, out)


def huber_loss(input: ArrayLike, target: ArrayLike, *, reduction: str = "mean", delta: float = 1.0) -> Loss:
    return _regression("huber", input, target, check_real(delta, "delta"), reduction, False, None)


def huber_loss_with_grad(
    input: ArrayLike, target: ArrayLike, *, reduction: str = "mean", delta: float = 1.0, out: ArrayLike | None = None
) -> tuple[Loss, ArrayOrTensor]:
    return _regression("huber", input, target, check_real(delta, "delta"), reduction, True, out)


def smooth_l1_loss(input: ArrayLike, target: ArrayLike, *, reduction: str = "mean", beta: float = 1.0) -> Loss:
    return _regression("smooth_l1", input, target, check_real(beta, "beta"), reduction, False, None)


def smooth_l1_loss_with_grad(
    input: ArrayLike, target: ArrayLike, *, reduction: str = "mean", beta: float = 1.0, out: ArrayLike | None = None
) -> tuple[Loss, ArrayOrTensor]:
    return _regression("smooth_l1", input, target, check_real(beta, "beta"), reduction, True, out)


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

"""The Python side of fastreg's CUDA cross-entropy and SGD kernels.

Two kinds of caller reach here:

* ``fastreg.torch`` with CUDA tensors (``torch_cross_entropy``, ``torch_sgd``): the
  kernels run on ``torch.cuda.current_stream()``, outputs come from torch's caching
  allocator (so a CUDA graph can capture a step), and inputs the kernels do not cover
  are handed to torch with a ``FastregFallbackWarning``.
* ``fastreg.ops`` / ``fastreg.optim`` with any CUDA array: CuPy arrays (or anything
  with ``__cuda_array_interface__``, or DLPack through CuPy or torch), run on CuPy's
  current stream (torch's for torch tensors); torch is not needed.

Nothing here synchronises the host except ``take_error``. fastreg never links against
torch: the kernels take raw device pointers.
"""

from __future__ import annotations

import importlib
import math
import sys

import numpy as np

from . import cuda as _cuda_api
from ._checks import check_hyper, check_int

_REDUCTIONS = {"none": 0, "mean": 1, "sum": 2}
_CODES = {"float32": 0, "float16": 1, "bfloat16": 2}


# ---------------------------------------------------------------------------------
# Device arrays: torch tensors, __cuda_array_interface__ objects, DLPack objects


def is_cuda_array(x) -> bool:
    """True for a CUDA torch tensor or an object exposing ``__cuda_array_interface__``
    (CuPy, Numba) or a CUDA DLPack capsule. Cheap; never imports torch or CuPy."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        return x.is_cuda
    if hasattr(x, "__cuda_array_interface__"):
        return True
    dev = getattr(x, "__dlpack_device__", None)
    if dev is not None:
        try:
            return dev()[0] in (2, 13)  # kDLCUDA, kDLCUDAManaged
        except Exception:  # noqa: BLE001 - a foreign object's method; not CUDA then
            return False
    return False


class _Dev:
    """A device buffer's pointer, shape, dtype name, device and contiguity."""

    __slots__ = ("obj", "ptr", "shape", "dtype", "device", "contiguous", "kind", "readonly")

    def __init__(self, obj, name: str):
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(obj, torch.Tensor):
            if not obj.is_cuda:
                raise ValueError(f"{name} is on device {obj.device}; expected a CUDA array like the logits")
            self.kind = "torch"
            self.obj = obj
            self.ptr = obj.data_ptr()
            self.shape = tuple(obj.shape)
            self.dtype = str(obj.dtype).replace("torch.", "")
            self.device = obj.device.index
            self.contiguous = obj.is_contiguous()
            self.readonly = False
            return
        cai = getattr(obj, "__cuda_array_interface__", None)
        if cai is None and hasattr(obj, "__dlpack__"):
            obj = _from_dlpack(obj, name)
            if torch is not None and isinstance(obj, torch.Tensor):
                self.__init__(obj, name)
                return
            cai = obj.__cuda_array_interface__
        if cai is None:
            raise TypeError(
                f"{name} must be a CUDA array (a CUDA torch.Tensor, or an object with __cuda_array_interface__ "
                f"or DLPack, e.g. a CuPy array), got {type(obj).__name__}"
            )
        self.kind = "cupy" if type(obj).__module__.startswith("cupy") else "cai"
        self.obj = obj
        self.ptr, self.readonly = int(cai["data"][0]), bool(cai["data"][1])
        self.shape = tuple(int(s) for s in cai["shape"])
        dt = np.dtype(cai["typestr"])
        self.dtype = dt.name
        strides = cai.get("strides")
        self.contiguous = strides is None or tuple(strides) == _c_strides(self.shape, dt.itemsize)
        self.device = _cai_device(obj, self.ptr)

    def code(self, name: str) -> int:
        code = _CODES.get(self.dtype)
        if code is None:
            raise TypeError(f"{name} must be float32, float16 or bfloat16 on the GPU, got {self.dtype}")
        return code


def _c_strides(shape, itemsize):
    strides, acc = [], itemsize
    for s in reversed(shape):
        strides.append(acc)
        acc *= max(s, 1)
    return tuple(reversed(strides))


def _from_dlpack(obj, name):
    cupy = _cupy()
    if cupy is not None:
        return cupy.from_dlpack(obj)
    torch = sys.modules.get("torch")
    if torch is not None:
        return torch.from_dlpack(obj)
    raise TypeError(f"{name} offers only DLPack; install CuPy (or import torch) so fastreg can read it")


def _cupy():
    try:
        import cupy
    except ImportError:
        return None
    return cupy


def _cai_device(obj, ptr) -> int:
    dev = getattr(obj, "device", None)
    ident = getattr(dev, "id", None)
    if isinstance(ident, int):
        return ident
    cupy = _cupy()
    if cupy is not None and ptr:
        return cupy.cuda.runtime.pointerGetAttributes(ptr).device
    return 0


def _same_device(arrays, names):
    devs = {a.device for a in arrays}
    if len(devs) > 1:
        listing = ", ".join(f"{n} on cuda:{a.device}" for a, n in zip(arrays, names))
        raise ValueError(f"all arrays must be on one CUDA device, got {listing}")


# ---------------------------------------------------------------------------------
# Raw launch (shared by the torch and array paths)


def _require():
    reason = _cuda_api.unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"fastreg CUDA kernels are unavailable: {reason}")
    return _cuda_api._cuda


def take_error(device: int = 0):
    """Synchronises ``device`` and raises IndexError for the first out-of-range class
    index a CUDA cross-entropy met since the last check (then clears it)."""
    rec = _require().take_error(int(device))
    if rec is not None:
        row, label, c = rec
        raise IndexError(
            f"target must hold class indices in [0, {c}) or ignore_index, got {label} at row {row} "
            "(fastreg's CUDA cross-entropy gave that row a NaN loss and gradient)"
        )


def _check_options(reduction, label_smoothing, lse_square_scale, ignore_index):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    for nm, v in (("label_smoothing", label_smoothing), ("lse_square_scale", lse_square_scale)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
            raise TypeError(f"{nm} must be a number, got {type(v).__name__}")
    if not 0.0 <= float(label_smoothing) <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    if not (math.isfinite(float(lse_square_scale)) and float(lse_square_scale) >= 0.0):
        raise ValueError(f"lse_square_scale must be a finite number >= 0, got {lse_square_scale}")
    check_int(ignore_index, "ignore_index")


def _launch(
    mod,
    code,
    x_ptr,
    n,
    c,
    tgt_ptr,
    prob_ptr,
    w_ptr,
    ignore_index,
    eps,
    z,
    red,
    loss_ptr,
    rows_ptr,
    stats_ptr,
    grad_ptr,
    lse_out,
    lse_in,
    gscale_ptr,
    device,
    stream,
):
    mod.cross_entropy(
        code,
        x_ptr,
        n,
        c,
        tgt_ptr,
        prob_ptr,
        w_ptr,
        int(ignore_index),
        float(eps),
        float(z),
        red,
        loss_ptr,
        rows_ptr,
        stats_ptr,
        grad_ptr,
        lse_out,
        lse_in,
        gscale_ptr,
        1.0,
        device,
        stream,
    )


# ---------------------------------------------------------------------------------
# torch


def _fallback_reason(input, target, weight):
    """None when the CUDA kernel covers these torch inputs, else why not (raises for
    mixed devices, as torch does)."""
    torch = sys.modules["torch"]
    devices = {t.device for t in (input, target, weight) if isinstance(t, torch.Tensor)}
    if len(devices) > 1:
        raise RuntimeError(
            "Expected all tensors to be on the same device, but found at least two devices: "
            + ", ".join(sorted(str(d) for d in devices))
        )
    reason = _cuda_api.unavailable_reason()
    if reason is not None:
        return reason
    if input.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return f"no CUDA kernel for {input.dtype} logits (float32, float16 and bfloat16 only)"
    if input.dim() not in (1, 2):
        return f"no CUDA kernel for {input.dim()}-D logits (N, C) or (C,) only"
    if not input.is_contiguous():
        return "the logits are not contiguous"
    if not isinstance(target, torch.Tensor) or target.requires_grad:
        return "the target is not a tensor, or requires grad"
    if target.dtype == torch.int64:
        pass  # a wrong shape is a ValueError from torch_cross_entropy
    elif target.dtype != input.dtype or target.shape != input.shape:
        return f"no CUDA kernel for a {target.dtype} target of shape {tuple(target.shape)}"
    if not target.is_contiguous():
        return "the target is not contiguous"
    if weight is not None and (
        weight.dtype != input.dtype
        or weight.shape != input.shape[-1:]
        or weight.requires_grad
        or not weight.is_contiguous()
    ):
        return "the class weights are not a contiguous [C] tensor of the logits' dtype without grad"
    return None


def torch_cross_entropy(
    input,
    target,
    weight=None,
    ignore_index=-100,
    reduction="mean",
    label_smoothing=0.0,
    lse_square_scale=0.0,
    inplace_backward=False,
    grad_in_forward=True,
):
    """fastreg.torch.cross_entropy for CUDA logits (see fastreg.cuda.cross_entropy)."""
    torch = sys.modules["torch"]
    if not isinstance(input, torch.Tensor) or not input.is_cuda:
        where = input.device if isinstance(input, torch.Tensor) else type(input).__name__
        raise ValueError(
            f"fastreg.cuda.cross_entropy takes CUDA tensors, got {where} "
            "(fastreg.torch.cross_entropy takes CPU tensors)"
        )
    _check_options(reduction, label_smoothing, lse_square_scale, ignore_index)
    reason = _fallback_reason(input, target, weight)
    if reason is None and target.dtype == torch.int64 and target.shape != input.shape[:-1]:
        raise ValueError(
            f"target must have shape {tuple(input.shape[:-1])} for logits of shape {tuple(input.shape)}, "
            f"got {tuple(target.shape)}"
        )
    if reason is not None:
        if lse_square_scale != 0 or inplace_backward or not grad_in_forward:
            raise RuntimeError(
                f"fastreg.cuda.cross_entropy: lse_square_scale, inplace_backward and "
                f"grad_in_forward=False need the CUDA "
                f"kernel, which cannot run: {reason}"
            )
        import warnings

        from .torch import FastregFallbackWarning

        warnings.warn(
            f"fastreg.torch.cross_entropy: {reason}; using torch's implementation", FastregFallbackWarning, stacklevel=4
        )
        return torch.nn.functional.cross_entropy(
            input,
            target,
            weight=weight,
            ignore_index=ignore_index,
            reduction=reduction,
            label_smoothing=label_smoothing,
        )
    unbatched = input.dim() == 1
    x = input.unsqueeze(0) if unbatched else input
    t = target.reshape(1, *target.shape) if unbatched else target
    opts = (weight, int(ignore_index), reduction, float(label_smoothing), float(lse_square_scale))
    if input.requires_grad and torch.is_grad_enabled():
        loss = _function()(x, t, *opts, bool(inplace_backward), bool(grad_in_forward))
    else:
        loss = _torch_forward(x.detach(), t, *opts, want_lse=False)[0]
    return loss[0] if unbatched and reduction == "none" else loss


def _torch_forward(x, target, weight, ignore_index, reduction, eps, z, want_lse, grad=None):
    """Loss (and optionally the rows' lse, or the gradient into `grad`) on torch's stream."""
    torch = sys.modules["torch"]
    mod = _require()
    n, c = x.shape
    dev = x.device
    f32 = dict(dtype=torch.float32, device=dev)
    red = _REDUCTIONS[reduction]
    loss = torch.empty((n,) if red == 0 else (), dtype=x.dtype, device=dev)
    rows = torch.empty(n, **f32) if red != 0 else None
    stats = torch.empty(2, **f32)
    lse = torch.empty(n, **f32) if want_lse else None
    probs = target.dtype != torch.int64
    stream = torch.cuda.current_stream(dev).cuda_stream
    _launch(
        mod,
        _CODES[str(x.dtype)[6:]],
        x.data_ptr(),
        n,
        c,
        0 if probs else target.data_ptr(),
        target.data_ptr() if probs else 0,
        0 if weight is None else weight.data_ptr(),
        ignore_index,
        eps,
        z,
        red,
        loss.data_ptr(),
        0 if rows is None else rows.data_ptr(),
        stats.data_ptr(),
        0 if grad is None else grad.data_ptr(),
        0 if lse is None else lse.data_ptr(),
        0,
        0,
        dev.index,
        stream,
    )
    return loss, lse


_FUNCTION = None


def _function():
    """The autograd Function, defined on first use (torch is imported by then)."""
    global _FUNCTION
    if _FUNCTION is not None:
        return _FUNCTION
    torch = sys.modules["torch"]

    class _CudaCrossEntropy(torch.autograd.Function):
        """grad_in_forward (default): forward writes the loss and the gradient (for a
        grad_output of 1) in one fused sweep: the logits are read once from memory and
        once more from L2, the gradient written once; backward scales it by grad_output
        on the device, a launch that neither reads nor writes when grad_output is 1.
        inplace_backward puts that gradient over the logits (which are destroyed).
        grad_in_forward=False: forward reads the logits once (loss and each row's lse),
        backward reads them again and writes the scaled gradient: no [N, C] buffer
        lives between the two, for 1.5x the bytes. Backward runs once in the first two
        modes (the gradient is scaled in place)."""

        @staticmethod
        def forward(ctx, logits, target, weight, ignore_index, reduction, eps, z, inplace, fused):
            x = logits.detach()
            ctx.opts = (ignore_index, reduction, eps, z)
            ctx.fused = fused or inplace
            if ctx.fused:
                grad = x if inplace else torch.empty_like(x)
                loss, _ = _torch_forward(x, target, weight, ignore_index, reduction, eps, z, False, grad=grad)
                ctx.grad = grad
            else:
                loss, lse = _torch_forward(x, target, weight, ignore_index, reduction, eps, z, True)
                ctx.save_for_backward(x, target, weight, lse)
            return loss

        @staticmethod
        @torch.autograd.function.once_differentiable
        def backward(ctx, grad_output):
            ignore_index, reduction, eps, z = ctx.opts
            mod = _require()
            gout = grad_output.contiguous()
            if ctx.fused:
                grad = ctx.grad
                if grad is None:
                    raise RuntimeError(
                        "fastreg's CUDA cross_entropy scales its gradient in place, so backward "
                        "runs once; pass grad_in_forward=False to fastreg.cuda.cross_entropy "
                        "for retain_graph"
                    )
                ctx.grad = None
                n, c = grad.shape
                mod.cross_entropy_scale_grad(
                    _CODES[str(grad.dtype)[6:]],
                    grad.data_ptr(),
                    n,
                    c,
                    gout.data_ptr(),
                    reduction == "none",
                    grad.device.index,
                    torch.cuda.current_stream(grad.device).cuda_stream,
                )
                return grad, None, None, None, None, None, None, None, None
            x, target, weight, lse = ctx.saved_tensors
            n, c = x.shape
            grad = torch.empty_like(x)
            stats = torch.empty(2, dtype=torch.float32, device=x.device)
            probs = target.dtype != torch.int64
            stream = torch.cuda.current_stream(x.device).cuda_stream
            _launch(
                mod,
                _CODES[str(x.dtype)[6:]],
                x.data_ptr(),
                n,
                c,
                0 if probs else target.data_ptr(),
                target.data_ptr() if probs else 0,
                0 if weight is None else weight.data_ptr(),
                ignore_index,
                eps,
                z,
                _REDUCTIONS[reduction],
                0,
                0,
                stats.data_ptr(),
                grad.data_ptr(),
                0,
                lse.data_ptr(),
                gout.data_ptr(),
                x.device.index,
                stream,
            )
            return grad, None, None, None, None, None, None, None, None

    _FUNCTION = _CudaCrossEntropy.apply
    return _FUNCTION


def torch_sgd(params, grads, bufs, lr, momentum, dampening, weight_decay, nesterov, maximize):
    """fastreg.torch.SGD's update for a group holding CUDA parameters: one launch per
    dtype (up to 128 tensors a launch), filling `bufs` (torch's momentum_buffer list,
    None before the first step) in place. A group the kernel does not cover (float64,
    mixed devices, non-contiguous tensors), or no usable CUDA module, is updated by
    torch's own functional SGD with a FastregFallbackWarning saying why."""
    torch = sys.modules["torch"]
    opts = (lr, momentum, dampening, weight_decay, nesterov, maximize)
    if any(g is not None and g.is_sparse for g in grads):
        raise RuntimeError("fastreg.torch.SGD does not support sparse gradients")
    reason = _cuda_api.unavailable_reason()
    if reason is None:
        try:
            return _torch_sgd_kernel(params, grads, bufs, *opts)
        except (TypeError, ValueError) as err:  # raised before anything was written
            reason = str(err)
    import warnings

    from .torch import FastregFallbackWarning

    warnings.warn(
        f"fastreg.torch.SGD.step: {reason}; using torch's implementation", FastregFallbackWarning, stacklevel=4
    )
    live = [i for i, g in enumerate(grads) if g is not None]
    lbufs = [None] * len(live) if bufs is None else [bufs[i] for i in live]
    with torch.no_grad():
        torch_sgd_fn = importlib.import_module("torch.optim.sgd").sgd
        torch_sgd_fn(
            [params[i] for i in live],
            [grads[i] for i in live],
            lbufs,
            foreach=False,
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
        )
    if bufs is not None:
        for i, b in zip(live, lbufs):
            bufs[i] = b


def _torch_sgd_kernel(params, grads, bufs, lr, momentum, dampening, weight_decay, nesterov, maximize):
    torch = sys.modules["torch"]
    mod = _require()
    live = [i for i, g in enumerate(grads) if g is not None]
    if not live:
        return
    dev = params[live[0]].device
    for i in live:
        p, g = params[i], grads[i]
        if p.device != dev or g.device != dev:
            raise ValueError(f"fastreg's CUDA SGD takes one device per group, got {p.device} and {dev}")
        if p.dtype not in (torch.float32, torch.float16, torch.bfloat16) or g.dtype != p.dtype:
            raise TypeError(
                f"fastreg's CUDA SGD takes float32/float16/bfloat16 params and grads of the same "
                f"dtype, got {p.dtype} and {g.dtype}"
            )
        if not p.is_contiguous() or not g.is_contiguous() or p.shape != g.shape:
            raise ValueError("fastreg's CUDA SGD needs dense, contiguous grads shaped like their params")
        if bufs is not None and bufs[i] is not None and (not bufs[i].is_contiguous() or bufs[i].dtype != p.dtype):
            raise ValueError("momentum buffers must be contiguous and of the param's dtype")
    use_mom = momentum != 0
    by_dtype = {}
    for i in live:
        by_dtype.setdefault(params[i].dtype, []).append(i)
    stream = torch.cuda.current_stream(dev).cuda_stream
    new = {}
    if use_mom:
        for i in live:
            if bufs[i] is None:
                new[i] = torch.empty_like(params[i], memory_format=torch.contiguous_format)
    for dt, idx in by_dtype.items():
        mod.sgd_update(
            _CODES[str(dt)[6:]],
            [params[i].data_ptr() for i in idx],
            [grads[i].data_ptr() for i in idx],
            [(new[i] if i in new else bufs[i]).data_ptr() for i in idx] if use_mom else [],
            [params[i].numel() for i in idx],
            [1 if i in new else 0 for i in idx] if use_mom else [],
            float(lr),
            float(momentum),
            float(dampening),
            float(weight_decay),
            bool(nesterov),
            bool(maximize),
            dev.index,
            stream,
        )
    for i, b in new.items():
        bufs[i] = b


# ---------------------------------------------------------------------------------
# Arrays (CuPy and friends): fastreg.ops / fastreg.optim


def _stream_for(kind, device):
    if kind == "torch":
        return sys.modules["torch"].cuda.current_stream(device).cuda_stream
    cupy = _cupy()
    if cupy is not None:
        return cupy.cuda.get_current_stream().ptr
    return 0  # the legacy default stream: ordered with every blocking stream


def _empty(like: _Dev, shape, dtype: str):
    if like.kind == "torch":
        torch = sys.modules["torch"]
        return torch.empty(shape, dtype=getattr(torch, dtype), device=like.obj.device)
    cupy = _cupy()
    if cupy is None:
        raise RuntimeError("fastreg needs CuPy to allocate outputs for CUDA arrays that are not torch tensors")
    with cupy.cuda.Device(like.device):
        return cupy.empty(shape, dtype=dtype)


def cross_entropy_with_grad(
    logits,
    target,
    *,
    weight=None,
    ignore_index=-100,
    reduction="mean",
    label_smoothing=0.0,
    lse_square_scale=0.0,
    out=None,
    want_grad=True,
):
    """fastreg.ops.cross_entropy(_with_grad) for CUDA arrays: ``(loss, grad)`` (or the loss
    alone without want_grad), loss a 0-d (``'none'``: [N]) device array of the logits'
    type, asynchronously on the current stream; ``out`` may be ``logits`` (in place)."""
    mod = _require()
    _check_options(reduction, label_smoothing, lse_square_scale, ignore_index)
    x = _Dev(logits, "logits")
    code = x.code("logits")
    if len(x.shape) != 2:
        raise ValueError(f"logits must have shape (N, C) on the GPU, got {x.shape}")
    if not x.contiguous:
        raise ValueError("logits must be C-contiguous on the GPU")
    n, c = x.shape
    if c < 1:
        raise ValueError("logits must have at least one class (C >= 1)")
    t = _Dev(target, "target")
    arrays, names = [x, t], ["logits", "target"]
    if t.dtype == "int64":
        if t.shape != (n,):
            raise ValueError(f"target must have shape ({n},) for class indices, got {t.shape}")
        probs = False
    elif t.dtype == x.dtype and t.shape == x.shape:
        probs = True
    else:
        raise TypeError(
            f"target must hold int64 class indices of shape ({n},) (or {x.dtype} class probabilities "
            f"of shape {x.shape}), got {t.dtype} of shape {t.shape}"
        )
    if not t.contiguous:
        raise ValueError("target must be C-contiguous on the GPU")
    w = None
    if weight is not None:
        w = _Dev(weight, "weight")
        if w.dtype != x.dtype or w.shape != (c,) or not w.contiguous:
            raise ValueError(f"weight must be a contiguous [{c}] {x.dtype} array, got {w.dtype} {w.shape}")
        arrays.append(w)
        names.append("weight")
    g = None
    if want_grad:
        if out is None:
            g = _Dev(_empty(x, (n, c), x.dtype), "out")
        else:
            g = _Dev(out, "out")
            if g.dtype != x.dtype or g.shape != x.shape or not g.contiguous or g.readonly:
                raise ValueError(f"out must be a writeable C-contiguous {x.dtype} array of shape {x.shape}")
            arrays.append(g)
            names.append("out")
    _same_device(arrays, names)
    red = _REDUCTIONS[reduction]
    loss = _empty(x, (n,) if red == 0 else (), x.dtype)
    rows = _empty(x, (n,), "float32") if red != 0 else None
    stats = _empty(x, (2,), "float32")
    ptr = lambda a: 0 if a is None else _Dev(a, "scratch").ptr  # noqa: E731
    _launch(
        mod,
        code,
        x.ptr,
        n,
        c,
        0 if probs else t.ptr,
        t.ptr if probs else 0,
        0 if w is None else w.ptr,
        ignore_index,
        label_smoothing,
        lse_square_scale,
        red,
        ptr(loss),
        ptr(rows),
        ptr(stats),
        0 if g is None else g.ptr,
        0,
        0,
        0,
        x.device,
        _stream_for(x.kind, x.device),
    )
    if not want_grad:
        return loss
    return loss, g.obj


def sgd_step(params, grads, momentum_buffers, *, lr, momentum, dampening, weight_decay, nesterov, maximize):
    """fastreg.optim.sgd_step for CUDA arrays (see there); checks every entry first."""
    mod = _require()
    for nm, v in (("lr", lr), ("momentum", momentum), ("dampening", dampening), ("weight_decay", weight_decay)):
        check_hyper(v, nm)
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError("Nesterov momentum requires a momentum and zero dampening")
    params, grads = list(params), list(grads)
    if len(grads) != len(params):
        raise ValueError(f"params and grads must have the same length, got {len(params)} and {len(grads)}")
    use_mom = momentum != 0
    if use_mom and (momentum_buffers is None or len(momentum_buffers) != len(params)):
        raise ValueError("with momentum, momentum_buffers must be a list with one entry (or None) per parameter")
    entries = []
    for i, (p, g) in enumerate(zip(params, grads)):
        if g is None:
            continue
        pd, gd = _Dev(p, f"params[{i}]"), _Dev(g, f"grads[{i}]")
        pd.code(f"params[{i}]")
        if gd.dtype != pd.dtype or gd.shape != pd.shape:
            raise ValueError(f"grads[{i}] must match params[{i}]: {pd.dtype}{pd.shape}, got {gd.dtype}{gd.shape}")
        if not pd.contiguous or not gd.contiguous or pd.readonly:
            raise ValueError(f"params[{i}] and grads[{i}] must be C-contiguous (and params writeable) on the GPU")
        bd = None
        if use_mom and momentum_buffers[i] is not None:
            bd = _Dev(momentum_buffers[i], f"momentum_buffers[{i}]")
            if bd.dtype != pd.dtype or bd.shape != pd.shape or not bd.contiguous:
                raise ValueError(f"momentum_buffers[{i}] must be a contiguous array like params[{i}]")
        entries.append((i, pd, gd, bd))
    if not entries:
        return
    _same_device([e[1] for e in entries] + [e[2] for e in entries], [f"params[{e[0]}]" for e in entries] * 2)
    dev = entries[0][1].device
    stream = _stream_for(entries[0][1].kind, dev)
    new = {}
    if use_mom:
        for i, pd, _, bd in entries:
            if bd is None:
                new[i] = _empty(pd, pd.shape, pd.dtype)
    by_dtype = {}
    for e in entries:
        by_dtype.setdefault(e[1].dtype, []).append(e)
    for dt, es in by_dtype.items():
        mod.sgd_update(
            _CODES[dt],
            [e[1].ptr for e in es],
            [e[2].ptr for e in es],
            [(_Dev(new[e[0]], "buf").ptr if e[0] in new else e[3].ptr) for e in es] if use_mom else [],
            [math.prod(e[1].shape) for e in es],
            [1 if e[0] in new else 0 for e in es] if use_mom else [],
            float(lr),
            float(momentum),
            float(dampening),
            float(weight_decay),
            bool(nesterov),
            bool(maximize),
            dev,
            stream,
        )
    for i, b in new.items():
        momentum_buffers[i] = b

"""PyTorch integration: drop-in cross-entropy and SGD backed by fastreg's kernels.

``import fastreg.torch`` imports torch (fastreg itself never does). Swap

    loss_fn = torch.nn.CrossEntropyLoss()        ->  fastreg.torch.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr) ->  fastreg.torch.SGD(model.parameters(), lr)

and get the same numbers from fused C++ kernels. Inputs the fused kernels do not
cover (half precision on the CPU, K-dimensional inputs) are handed to torch itself, so
results and exceptions stay torch's. CUDA tensors go to fastreg's CUDA kernels
(fastreg/_cuda_ops.py, docs/cuda.md), or to torch with a warning saying why.
"""

from __future__ import annotations

import importlib
import warnings

import torch
import torch.nn.functional as F

from . import _core, _cuda_ops

__all__ = ["SGD", "CrossEntropyLoss", "FastregFallbackWarning", "cross_entropy"]

_FAST_DTYPES = (torch.float32, torch.float64)
_REDUCTIONS = ("mean", "sum", "none")


class FastregFallbackWarning(UserWarning):
    """fastreg handed a call to torch because it has no fast kernel for these inputs."""


_optimizer_module = importlib.import_module("torch.optim.optimizer")  # holds the global step hooks
_profiler_enabled = torch._C._autograd._profiler_enabled
_torch_sgd = importlib.import_module("torch.optim.sgd").sgd  # torch's functional update, for the fallback


def _global_step_hooks_or_profiler() -> bool:
    return bool(_optimizer_module._global_optimizer_pre_hooks or _optimizer_module._global_optimizer_post_hooks
                or _profiler_enabled())


def _warn_fallback(what: str, why: str) -> None:
    warnings.warn(f"fastreg.torch.{what}: {why}; using torch's implementation", FastregFallbackWarning,
                  stacklevel=3)


def _run_kernel(x, target, weight, ignore_index, reduction, label_smoothing, grad):
    """The fused kernel on CPU tensors that _fast_path_ok accepted (x detached): returns
    the loss as a tensor and, when `grad` (a contiguous tensor like x) is given, writes
    d(loss)/d(x) into it. Memory is shared with NumPy, never copied, except to make a
    non-contiguous input contiguous. The binding checks everything else."""
    if not x.is_contiguous():
        x = x.contiguous()
    if not target.is_contiguous():
        target = target.contiguous()
    w = None if weight is None else weight.contiguous().numpy()
    g = None if grad is None else grad.numpy()
    if reduction == "none":
        rows = torch.empty(x.shape[0], dtype=x.dtype)
        _core.cross_entropy(x.numpy(), target.numpy(), w, ignore_index, reduction, label_smoothing, g, rows.numpy())
        return rows
    loss = _core.cross_entropy(x.numpy(), target.numpy(), w, ignore_index, reduction, label_smoothing, g, None)
    return torch.scalar_tensor(loss, dtype=x.dtype)


class _FusedCrossEntropy(torch.autograd.Function):
    """Forward runs the fused loss+gradient kernel and keeps the gradient, so
    backward is one multiply by grad_output."""

    @staticmethod
    def forward(ctx, logits, target, weight, ignore_index, reduction, label_smoothing):
        x = logits.detach()  # .numpy() refuses a tensor that requires grad
        grad = torch.empty_like(x, memory_format=torch.contiguous_format)
        loss = _run_kernel(x, target, weight, ignore_index, reduction, label_smoothing, grad)
        # An attribute rather than save_for_backward (cheaper): the gradient is neither an
        # input nor an output, and nothing writes to it after this point, so backward can
        # run any number of times (retain_graph=True) and always sees the same values.
        ctx.grad = grad
        ctx.rows = reduction == "none"
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        scale = grad_output.unsqueeze(1) if ctx.rows else grad_output
        # Always a fresh tensor: handing out ctx.grad itself would let a caller of
        # torch.autograd.grad modify what a retained graph's next backward returns.
        return ctx.grad * scale, None, None, None, None, None


def _fast_path_ok(input, target, weight, reduction, label_smoothing) -> bool:
    """True when the fused CPU kernel covers these inputs; anything else goes to
    torch, which computes the same thing or raises its own exception. Cheapest
    checks first: this runs on every call."""
    if not isinstance(input, torch.Tensor) or not isinstance(target, torch.Tensor):
        return False
    if input.dtype not in _FAST_DTYPES or not input.is_cpu or input.dim() != 2:
        return False
    if not target.is_cpu or target.requires_grad:
        return False
    if target.dtype == torch.int64:
        if target.dim() != 1 or target.shape[0] != input.shape[0]:
            return False
    elif target.dtype != input.dtype or target.shape != input.shape:
        return False
    if weight is not None and (not isinstance(weight, torch.Tensor) or weight.shape != input.shape[1:]
                               or weight.dtype != input.dtype or not weight.is_cpu or weight.requires_grad):
        return False
    if reduction not in _REDUCTIONS:
        return False
    return isinstance(label_smoothing, (int, float)) and 0.0 <= label_smoothing <= 1.0


def cross_entropy(input, target, weight=None, ignore_index: int = -100, reduction: str = "mean",
                  label_smoothing: float = 0.0):
    """Same signature and results as ``torch.nn.functional.cross_entropy``.

    input: float32/float64 [N, C] logits (CPU); target: int64 class indices [N]
    or class probabilities [N, C]. Autograd-aware: the fused kernel computes the
    gradient during the forward pass.
    """
    if _fast_path_ok(input, target, weight, reduction, label_smoothing):
        if input.requires_grad and torch.is_grad_enabled():
            return _FusedCrossEntropy.apply(input, target, weight, int(ignore_index), reduction,
                                            float(label_smoothing))
        # No graph to build: the loss alone, without the autograd Function's cost.
        return _run_kernel(input.detach(), target, weight, int(ignore_index), reduction, float(label_smoothing),
                           None)
    if isinstance(input, torch.Tensor) and input.is_cuda:  # CUDA hook: fastreg/_cuda_ops.py (falls back itself)
        return _cuda_ops.torch_cross_entropy(input, target, weight, ignore_index, reduction, label_smoothing)
    devices = {t.device for t in (input, target, weight) if isinstance(t, torch.Tensor)}
    if len(devices) > 1:
        raise RuntimeError(
            "Expected all tensors to be on the same device, but found at least two devices: "
            + ", ".join(sorted(str(d) for d in devices))
        )
    if isinstance(input, torch.Tensor) and (input.is_cuda or input.dtype in (torch.float16, torch.bfloat16)):
        _warn_fallback("cross_entropy", f"no fused kernel for {input.dtype} on {input.device} yet")
    return F.cross_entropy(input, target, weight=weight, ignore_index=ignore_index, reduction=reduction,
                           label_smoothing=label_smoothing)


class CrossEntropyLoss(torch.nn.Module):
    """Drop-in for ``torch.nn.CrossEntropyLoss`` backed by the fused kernel."""

    def __init__(self, weight=None, size_average=None, ignore_index: int = -100, reduce=None,
                 reduction: str = "mean", label_smoothing: float = 0.0):
        super().__init__()
        if size_average is not None or reduce is not None:
            reduction = torch.nn.modules.loss._Reduction.legacy_get_string(size_average, reduce)
        if reduction not in _REDUCTIONS:
            raise ValueError(f"{reduction} is not a valid value for reduction")
        self.register_buffer("weight", weight)
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.label_smoothing = label_smoothing

    def forward(self, input, target):
        return cross_entropy(input, target, self.weight, self.ignore_index, self.reduction, self.label_smoothing)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, ignore_index={self.ignore_index}, label_smoothing={self.label_smoothing}"


class SGD(torch.optim.Optimizer):
    """Drop-in for ``torch.optim.SGD``: ``step()`` runs fastreg's fused update over
    every parameter of a group in one call. ``state_dict()`` is interchangeable
    with torch.optim.SGD's (same keys and momentum buffers)."""

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0, dampening: float = 0,
                 weight_decay: float = 0, nesterov: bool = False, *, maximize: bool = False):
        if isinstance(lr, torch.Tensor):
            raise TypeError("fastreg.torch.SGD takes a float lr, not a Tensor")
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults)

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("nesterov", False)
            group.setdefault("maximize", False)

    def _update(self, closure=None):
        """One optimisation step (closure re-evaluates the loss, as torch)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            momentum = group["momentum"]
            params = group["params"]
            if momentum != 0:  # torch's bookkeeping: state only for parameters that have a gradient
                params = [p for p in params if p.grad is not None]
                bufs = [self.state[p].get("momentum_buffer") for p in params]
            else:
                bufs = None
            grads = [p.grad for p in params]  # a None gradient: the kernel skips its parameter, as torch
            opts = (group["lr"], momentum, group["dampening"], group["weight_decay"], group["nesterov"],
                    group["maximize"])
            try:
                # One call for the whole group; it checks every entry before writing any.
                if params and params[0].is_cuda:  # CUDA hook: fastreg/_cuda_ops.py (falls back itself)
                    _cuda_ops.torch_sgd(params, grads, bufs, *opts)
                else:
                    _core.sgd_update_many(params, grads, bufs, *opts)
            except (TypeError, ValueError) as err:
                self._fallback(params, grads, bufs, opts, err)
            if bufs is not None:  # the first step created the buffers in place in `bufs`
                for p, buf in zip(params, bufs):
                    self.state[p]["momentum_buffer"] = buf
        return loss

    @staticmethod
    def _fallback(params, grads, bufs, opts, err):
        """The fused update refused the group (having written nothing): torch's own update
        when it holds parameters fastreg has no kernel for (CUDA, half precision), else
        the error itself. With momentum, `params` already holds only parameters with a
        gradient, and torch's functional sgd fills `bufs` in place as the kernel would."""
        live = [i for i, g in enumerate(grads) if g is not None]
        params, grads = [params[i] for i in live], [grads[i] for i in live]
        if any(g.is_sparse for g in grads):
            raise RuntimeError("fastreg.torch.SGD does not support sparse gradients") from None
        if all(p.is_cpu and p.dtype in _FAST_DTYPES for p in params):
            raise err
        _warn_fallback("SGD.step", "no fused kernel for these parameters' device/dtype yet")
        lr, momentum, dampening, weight_decay, nesterov, maximize = opts
        with torch.no_grad():
            _torch_sgd(params, grads, [None] * len(params) if bufs is None else bufs, foreach=False, lr=lr,
                       momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
                       maximize=maximize)

    # torch wraps every Optimizer subclass's step in a profiler record_function plus the
    # step-hook loops; record_function alone costs ~10 us a call. Here both are paid only
    # when needed: a profiler running or a hook registered takes torch's own wrapper.
    _hooked_update = torch.optim.Optimizer.profile_hook_step(_update)

    def step(self, closure=None):
        """Perform one optimisation step (closure re-evaluates the loss, as torch)."""
        if self._optimizer_step_pre_hooks or self._optimizer_step_post_hooks or _global_step_hooks_or_profiler():
            return self._hooked_update(closure)
        loss = self._update(closure)
        self._optimizer_step_code()
        return loss

    step.hooked = True  # tells Optimizer.__init__ not to wrap step again

    def zero_grad(self, set_to_none: bool = True) -> None:
        """As torch's; with set_to_none (the default) and no profiler running, without
        torch's record_function (~10 us a call)."""
        if not set_to_none or _profiler_enabled():
            return super().zero_grad(set_to_none)
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None
        return None

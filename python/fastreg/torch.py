"""PyTorch integration: drop-in cross-entropy and SGD backed by fastreg's kernels.

``import fastreg.torch`` imports torch (fastreg itself never does). Swap

    loss_fn = torch.nn.CrossEntropyLoss()        ->  fastreg.torch.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr) ->  fastreg.torch.SGD(model.parameters(), lr)

and get the same numbers from fused C++ kernels. Inputs the fused kernels do not
cover (CUDA tensors until fastreg's CUDA kernels land, half precision, K-dimensional
inputs) are handed to torch itself, so results and exceptions stay torch's.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F

from . import optim as _optim

__all__ = ["SGD", "CrossEntropyLoss", "FastregFallbackWarning", "cross_entropy"]

_FAST_DTYPES = (torch.float32, torch.float64)
_REDUCTIONS = ("mean", "sum", "none")


class FastregFallbackWarning(UserWarning):
    """fastreg handed a call to torch because it has no fast kernel for these inputs."""


def _warn_fallback(what: str, why: str) -> None:
    warnings.warn(f"fastreg.torch.{what}: {why}; using torch's implementation", FastregFallbackWarning,
                  stacklevel=3)


def _ops():
    from . import ops  # the fused NumPy-level kernels

    return ops


class _FusedCrossEntropy(torch.autograd.Function):
    """Forward runs the fused loss+gradient kernel and saves the gradient, so
    backward is one multiply by grad_output."""

    @staticmethod
    def forward(ctx, logits, target, weight, ignore_index, reduction, label_smoothing):
        x = logits.detach()
        if not x.is_contiguous():
            x = x.contiguous()
        t = target.detach()
        if not t.is_contiguous():
            t = t.contiguous()
        w = None if weight is None else weight.detach().contiguous().numpy()
        kwargs = dict(weight=w, ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing)
        if logits.requires_grad:
            grad = torch.empty_like(x, memory_format=torch.contiguous_format)
            loss, _ = _ops().cross_entropy_with_grad(x.numpy(), t.numpy(), out=grad.numpy(), **kwargs)
            ctx.save_for_backward(grad)
        else:
            loss = _ops().cross_entropy(x.numpy(), t.numpy(), **kwargs)
        ctx.reduction = reduction
        return torch.as_tensor(np.asarray(loss, dtype=x.numpy().dtype))

    @staticmethod
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        if ctx.reduction == "none":
            g = grad * grad_output.unsqueeze(1)
        else:
            g = grad * grad_output
        return g, None, None, None, None, None


def _fast_path_ok(input, target, weight, reduction, label_smoothing) -> bool:
    """True when the fused CPU kernel covers these inputs; anything else goes to
    torch, which computes the same thing or raises its own exception."""
    if not isinstance(input, torch.Tensor) or not isinstance(target, torch.Tensor):
        return False
    if input.dim() != 2 or input.dtype not in _FAST_DTYPES or input.device.type != "cpu":
        return False
    if target.device.type != "cpu" or target.requires_grad:
        return False
    if target.dtype == torch.int64:
        if target.shape != input.shape[:1]:
            return False
    elif target.dtype != input.dtype or target.shape != input.shape:
        return False
    if weight is not None and (not isinstance(weight, torch.Tensor) or weight.shape != input.shape[1:]
                               or weight.dtype != input.dtype or weight.device.type != "cpu"
                               or weight.requires_grad):
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
    devices = {t.device for t in (input, target, weight) if isinstance(t, torch.Tensor)}
    if len(devices) > 1:
        raise RuntimeError(
            "Expected all tensors to be on the same device, but found at least two devices: "
            + ", ".join(sorted(str(d) for d in devices))
        )
    if not _fast_path_ok(input, target, weight, reduction, label_smoothing):
        if isinstance(input, torch.Tensor) and (input.is_cuda or input.dtype in (torch.float16, torch.bfloat16)):
            _warn_fallback("cross_entropy", f"no fused kernel for {input.dtype} on {input.device} yet")
        return F.cross_entropy(input, target, weight=weight, ignore_index=ignore_index, reduction=reduction,
                               label_smoothing=label_smoothing)
    return _FusedCrossEntropy.apply(input, target, weight, int(ignore_index), reduction, float(label_smoothing))


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
        return cross_entropy(input, target, weight=self.weight, ignore_index=self.ignore_index,
                             reduction=self.reduction, label_smoothing=self.label_smoothing)

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

    @torch.no_grad()
    def step(self, closure=None):
        """Perform one optimisation step (closure re-evaluates the loss, as torch)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, bufs = [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("fastreg.torch.SGD does not support sparse gradients")
                params.append(p)
                grads.append(p.grad)
                bufs.append(self.state[p].get("momentum_buffer") if group["momentum"] != 0 else None)
            if not params:
                continue
            opts = dict(lr=group["lr"], momentum=group["momentum"], dampening=group["dampening"],
                        weight_decay=group["weight_decay"], nesterov=group["nesterov"],
                        maximize=group["maximize"])
            if any(p.device.type != "cpu" or p.dtype not in _FAST_DTYPES for p in params):
                _warn_fallback("SGD.step", "no fused kernel for these parameters' device/dtype yet")
                torch.optim.sgd.sgd(params, grads, bufs, foreach=False, **opts)
            else:
                _optim.sgd_step(params, grads, bufs if group["momentum"] != 0 else None, **opts)
            if group["momentum"] != 0:
                for p, buf in zip(params, bufs):
                    self.state[p]["momentum_buffer"] = buf
        return loss

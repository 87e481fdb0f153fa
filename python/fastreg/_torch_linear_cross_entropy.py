"""torch autograd for the fused linear + cross-entropy (re-exported by fastreg.torch).

``fastreg.torch.linear_cross_entropy(h, weight, target, bias)`` replaces
``F.cross_entropy(F.linear(h, weight, bias), target)`` (a model's final ``nn.Linear`` and its
loss) by one call that never builds the [N, V] logits: the forward pass computes the loss and
the gradients together, and backward only scales them by ``grad_output``.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F

from . import _core
from .linear import _ensure_blas

__all__ = ["LinearCrossEntropyLoss", "linear_cross_entropy"]

_REDUCTIONS = ("mean", "sum", "none")


def _reference(h, weight, target, bias, ignore_index, label_smoothing, reduction, lse_square_scale, softcap):
    """The same loss with torch's own ops (materialises the logits): the fallback."""
    z = F.linear(h, weight, bias)
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    loss = F.cross_entropy(z, target, ignore_index=ignore_index, label_smoothing=label_smoothing, reduction=reduction)
    if lse_square_scale:
        keep = target != ignore_index
        z_loss = lse_square_scale * torch.logsumexp(z, -1) ** 2 * keep
        loss = loss + (
            z_loss if reduction == "none" else z_loss.sum() / keep.sum() if reduction == "mean" else z_loss.sum()
        )
    return loss


def _run(h, weight, target, bias, opts, grad_scale, want):
    """The kernel on contiguous CPU tensors; want = (grad_h?, grad_weight?, grad_bias?)."""
    ignore_index, label_smoothing, reduction, lse_square_scale, softcap = opts
    x, w = h.detach().contiguous().numpy(), weight.detach().contiguous().numpy()
    y = target.detach().contiguous().numpy()
    b = None if bias is None else bias.detach().contiguous().numpy()
    gh = np.empty_like(x) if want[0] else None
    gw = np.empty_like(w) if want[1] else None
    gb = np.empty_like(b) if want[2] and b is not None else None
    rows = np.empty(x.shape[0], x.dtype) if reduction == "none" else None
    loss = _core.linear_cross_entropy(
        x,
        w,
        y,
        b,
        ignore_index,
        reduction,
        label_smoothing,
        lse_square_scale,
        softcap,
        gh,
        gw,
        gb,
        rows,
        None,
        None,
        grad_scale,
    )
    out = torch.from_numpy(rows) if rows is not None else torch.scalar_tensor(loss, dtype=h.dtype)
    return out, tuple(None if g is None else torch.from_numpy(g) for g in (gh, gw, gb))


class _LinearCrossEntropy(torch.autograd.Function):
    """mean/sum: forward computes the gradients too and backward scales them (grad_output is
    a scalar). none: forward computes the row losses only; backward runs the kernel once more
    with the gradient of sum(c * row) when grad_output is one value c for every row (as after
    ``.sum()`` or ``.mean()``), and torch's own ops otherwise (per-row weights do not fit a
    fused kernel whose grad_weight sums over rows)."""

    @staticmethod
    def forward(ctx, h, weight, target, bias, opts):
        want = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], bias is not None and ctx.needs_input_grad[3])
        ctx.opts = opts
        ctx.has_bias = bias is not None
        if opts[2] == "none":
            loss, _ = _run(h, weight, target, bias, opts, 1.0, (False, False, False))
            ctx.save_for_backward(h, weight, target, bias)
            ctx.want = want
            return loss
        loss, ctx.grads = _run(h, weight, target, bias, opts, 1.0, want)
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        if torch.is_grad_enabled():  # create_graph=True: a graph of the backward pass is wanted
            raise RuntimeError(
                "fastreg.torch.linear_cross_entropy does not support higher-order gradients "
                "(create_graph=True / double backward); use F.cross_entropy(F.linear(...)) for that"
            )
        if ctx.opts[2] != "none":
            grads = tuple(None if g is None else g * grad_output for g in ctx.grads)
            return grads[0], grads[1], None, grads[2], None
        h, weight, target, bias = ctx.saved_tensors
        first = grad_output.reshape(-1)[:1]
        if grad_output.numel() == 0 or bool((grad_output == first).all()):
            scale = float(first) if grad_output.numel() else 0.0
            opts = ctx.opts[:2] + ("sum",) + ctx.opts[3:]
            _, grads = _run(h, weight, target, bias, opts, scale, ctx.want)
            return grads[0], grads[1], None, grads[2], None
        with torch.enable_grad():  # per-row weights: torch's ops, logits built
            leaves = [t.detach().requires_grad_(w) for t, w in zip((h, weight), ctx.want[:2])]
            b = None if bias is None else bias.detach().requires_grad_(ctx.want[2])
            loss = _reference(leaves[0], leaves[1], target, b, *ctx.opts)
            inputs = [t for t in (*leaves, b) if t is not None and t.requires_grad]
            got = iter(torch.autograd.grad(loss, inputs, grad_output))
        grads = [next(got) if t is not None and t.requires_grad else None for t in (*leaves, b)]
        return grads[0], grads[1], None, grads[2], None


def _fused_ok(h, weight, target, bias) -> bool:
    tensors = (h, weight, target) + (() if bias is None else (bias,))
    if not all(isinstance(t, torch.Tensor) and t.is_cpu for t in tensors):
        return False
    if h.dtype not in (torch.float32, torch.float64) or weight.dtype != h.dtype:
        return False
    if bias is not None and bias.dtype != h.dtype:
        return False
    return target.dtype == torch.int64 and h.dim() >= 1 and weight.dim() == 2


def linear_cross_entropy(
    h,
    weight,
    target,
    bias=None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    lse_square_scale: float = 0.0,
    softcap: float | None = None,
):
    """``F.cross_entropy(F.linear(h, weight, bias), target, ...)`` with autograd, without the logits.

    h: float32/float64 [..., D] (rows flattened); weight: [V, D]; target: int64 [...] (h's
    leading shape); bias: [V] or None. ``lse_square_scale`` (z-loss) and ``softcap`` as in
    :func:`fastreg.ops.linear_cross_entropy`. Returns a scalar (``reduction='none'``: target's
    shape). Gradients reach h, weight and bias. The backward pass is not itself differentiable:
    a backward with ``create_graph=True`` (double backward) raises a RuntimeError saying so. CUDA
    tensors, other dtypes or targets go to torch's own ops (same results, logits built),
    with a FastregFallbackWarning.
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    opts = (
        int(ignore_index),
        float(label_smoothing),
        reduction,
        float(lse_square_scale),
        None if softcap is None else float(softcap),
    )
    if not _fused_ok(h, weight, target, bias):
        from .torch import FastregFallbackWarning

        warnings.warn(
            "fastreg.torch.linear_cross_entropy: no fused kernel for these inputs (CPU float32/float64 "
            "with int64 targets only); using torch's ops",
            FastregFallbackWarning,
            stacklevel=2,
        )
        return _reference(h, weight, target, bias, *opts)
    _ensure_blas()
    lead = h.shape[:-1]
    if target.shape != lead:
        raise ValueError(f"target must have shape {tuple(lead)} (h's leading dimensions), got {tuple(target.shape)}")
    loss = _LinearCrossEntropy.apply(h.reshape(-1, h.shape[-1]), weight, target.reshape(-1), bias, opts)
    return loss.reshape(lead) if reduction == "none" else loss


class LinearCrossEntropyLoss(torch.nn.Module):
    """A model's last ``nn.Linear`` and its cross-entropy in one: ``forward(h, weight, target,
    bias=None)`` = :func:`linear_cross_entropy` (Liger-Kernel's FusedLinearCrossEntropyLoss
    options; fastreg takes h before weight, as ``F.linear``)."""

    def __init__(
        self,
        ignore_index: int = -100,
        label_smoothing: float = 0.0,
        reduction: str = "mean",
        lse_square_scale: float = 0.0,
        softcap: float | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"label_smoothing must be in [0.0, 1.0], got {label_smoothing}")
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        self.ignore_index, self.label_smoothing, self.reduction = ignore_index, label_smoothing, reduction
        self.lse_square_scale, self.softcap = lse_square_scale, softcap

    def forward(
        self, h: torch.Tensor, weight: torch.Tensor, target: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        return linear_cross_entropy(
            h,
            weight,
            target,
            bias,
            self.ignore_index,
            self.label_smoothing,
            self.reduction,
            self.lse_square_scale,
            self.softcap,
        )

    def extra_repr(self) -> str:
        return (
            f"ignore_index={self.ignore_index}, label_smoothing={self.label_smoothing}, "
            f"reduction={self.reduction!r}, lse_square_scale={self.lse_square_scale}, softcap={self.softcap}"
        )

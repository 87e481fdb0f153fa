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
import math
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F

from . import _core, _cuda_ops
from ._checks import check_hyper
from ._torch_linear_cross_entropy import LinearCrossEntropyLoss, linear_cross_entropy

__all__ = [
    "SGD",
    "CrossEntropyLoss",
    "FastregFallbackWarning",
    "HuberLoss",
    "L1Loss",
    "LinearCrossEntropyLoss",
    "MSELoss",
    "SmoothL1Loss",
    "cross_entropy",
    "huber_loss",
    "l1_loss",
    "linear_cross_entropy",
    "mse_loss",
    "smooth_l1_loss",
    "squared_loss",
]

_FAST_DTYPES = (torch.float32, torch.float64)
_REDUCTIONS = ("mean", "sum", "none")


class FastregFallbackWarning(UserWarning):
    """fastreg handed a call to torch because it has no fast kernel for these inputs."""


_optimizer_module = importlib.import_module("torch.optim.optimizer")  # holds the global step hooks
_profiler_enabled = torch._C._autograd._profiler_enabled
_torch_sgd = importlib.import_module("torch.optim.sgd").sgd  # torch's functional update, for the fallback


def _float(value) -> float:
    """A hyper-parameter given as a number or a 1-element tensor (torch allows both)."""
    return value.item() if isinstance(value, torch.Tensor) else value


def _global_step_hooks_or_profiler() -> bool:
    return bool(
        _optimizer_module._global_optimizer_pre_hooks
        or _optimizer_module._global_optimizer_post_hooks
        or _profiler_enabled()
    )


def _warn_fallback(what: str, why: str) -> None:
    warnings.warn(f"fastreg.torch.{what}: {why}; using torch's implementation", FastregFallbackWarning, stacklevel=3)


# ---- fused losses as torch custom ops ----------------------------------------------------
#
# Each fused loss is one kernel that returns the loss and d(loss)/d(input) in a single pass.
# _FusedLoss turns such a kernel into
#   * a torch custom op, torch.ops.fastreg.<name>(input, ..., want_grad) -> (loss, grad),
#     with a fake (meta) implementation, an autograd formula and a vmap rule, so that
#     torch.compile traces it as one node (no graph break) and torch.ops callers get autograd;
#   * an eager path for the ordinary call: the same kernel and the same backward in a plain
#     torch.autograd.Function, because a custom op's Python dispatch (torch.library's
#     autograd wrapper, schema default filling, the dynamo-disable guard around the kernel)
#     costs ~20-60 us a call, more than the whole fused [256, 10] loss and its backward.
# Where the kernel has no formula, torch's own function (`reference`) is used:
#   * backward with create_graph=True (double backward, gradient penalties, Hessians):
#     the gradient is recomputed from torch's formula with a graph (both paths);
#   * forward-mode AD (dual tensors) and torch.func transforms (vmap, grad, jvp, ...):
#     the public functions call torch's function itself; the custom op raises for dual
#     tensors instead of dropping their tangents, and vmaps slice by slice.

_forward_ad = importlib.import_module("torch.autograd.forward_ad")
_is_functorch_wrapped = torch._C._functorch.is_functorch_wrapped_tensor


def _has_tangent(tensors) -> bool:
    """True when forward-mode AD is on and one of `tensors` carries a tangent."""
    if _forward_ad._current_level < 0:
        return False
    return any(t is not None and _forward_ad.unpack_dual(t).tangent is not None for t in tensors)


def _needs_torch_formula(tensors) -> bool:
    """True inside a torch.func transform or forward-mode AD: modes the fused kernel has no
    formula for, so torch's own function must compute the answer."""
    return any(t is not None and _is_functorch_wrapped(t) for t in tensors) or _has_tangent(tensors)


def _needs_autograd(*xs) -> bool:
    """True when one of xs is a tensor that a NumPy view would cut off from torch: it
    requires grad under grad mode, or it is traced (see _traced). fastreg.ops sends such
    tensors here."""
    if torch.is_grad_enabled() and any(isinstance(x, torch.Tensor) and x.requires_grad for x in xs):
        return True
    return _traced(xs)


def _traced(xs) -> bool:
    """True under torch.compile, or when one of xs is inside a torch.func transform or
    forward-mode AD: no NumPy view of such a tensor can stand for it."""
    tensors = [x for x in xs if isinstance(x, torch.Tensor)]
    return bool(tensors) and (torch.compiler.is_compiling() or _needs_torch_formula(tensors))


def _numpy(t):
    """A NumPy view of a CPU tensor (a contiguous copy if it is not contiguous)."""
    if not t.is_contiguous():
        t = t.contiguous()
    return t.detach().numpy()


class _FusedLoss:
    """One fused loss registered as ``torch.ops.fastreg.<name>``.

    kernel(input, *args, want_grad) -> (loss, grad): the fused CPU kernel; grad is
    d(loss)/d(input) (for reduction 'none', of the summed losses), or an empty [0] tensor
    when not wanted. fake(input, *args, want_grad): the same outputs' shapes, no data.
    reference(input, *args) -> loss: torch's own function, differentiable in every mode.
    `tensor_args` is how many leading arguments are tensors (input first).
    """

    def __init__(self, name: str, schema: str, kernel, fake, reference, tensor_args: int):
        self.name, self.kernel, self.reference, self.tensor_args = name, kernel, reference, tensor_args

        def checked_kernel(*args):
            # The custom op below autograd: a dual tensor's tangent would be dropped silently.
            if _has_tangent(args[:tensor_args]):
                raise RuntimeError(
                    f"torch.ops.fastreg.{name} has no forward-mode AD formula; call fastreg.torch.{name}, "
                    "which uses torch's own formula for dual tensors"
                )
            return kernel(*args)

        self.op = torch.library.custom_op(
            f"fastreg::{name}", checked_kernel, mutates_args=(), device_types="cpu", schema=schema
        )
        self.op.register_fake(fake)
        self.op.register_autograd(self._backward, setup_context=self._setup_op_context)
        self.op.register_vmap(self._vmap)
        # The eager twin: ctx-style forward (a setup_context-style Function binds its arguments
        # with inspect.signature on every call, ~10 us) returning the loss alone. Named per
        # loss: its backward node shows as Fused_<name>Backward in a graph.
        loss = self

        def forward(ctx, *args):
            value, grad = kernel(*args)
            loss._save(ctx, args, grad)
            return value

        self.function = type(
            f"Fused_{name}",
            (torch.autograd.Function,),
            {
                "forward": staticmethod(forward),
                "backward": staticmethod(lambda ctx, grad_loss: self._backward(ctx, grad_loss, None)),
            },
        )

    def _save(self, ctx, inputs, grad):
        # An attribute rather than a saved tensor (cheaper): the gradient has no graph, and
        # nothing writes to it after this point, so every backward sees the same values.
        ctx.grad = grad
        # The inputs are kept only for create_graph's recomputation; saved tensors are
        # version-checked, so an input modified in place is an error there, never a wrong graph.
        ctx.save_for_backward(*inputs[: self.tensor_args])
        ctx.options = inputs[self.tensor_args : -1]

    def _setup_op_context(self, ctx, inputs, output):
        ctx.mark_non_differentiable(output[1])  # the op also returns the gradient
        self._save(ctx, inputs, output[1])

    def _backward(self, ctx, grad_loss, _grad_of_grad):
        grad = ctx.grad
        none = (None,) * (self.tensor_args - 1 + len(ctx.options) + 1)  # target, weight, options, want_grad
        if torch.is_grad_enabled() or grad.numel() == 0:
            # create_graph=True, or no saved gradient (a torch.ops call with want_grad=False;
            # an empty input, where either way gives the same empty gradient):
            # the fused gradient is a constant to autograd, so differentiate torch's formula.
            input, *rest = ctx.saved_tensors
            with torch.enable_grad():
                if not input.requires_grad:  # a torch.ops call: x was saved without its graph
                    input = input.detach().requires_grad_()
                value = self.reference(input, *rest, *ctx.options)
                (g,) = torch.autograd.grad(value, input, grad_loss, create_graph=torch.is_grad_enabled())
            return g, *none
        # A fresh tensor every time: handing out the saved gradient would let a caller change
        # what a retained graph's next backward returns.
        if grad_loss.dim() not in (0, grad.dim()):  # per-row losses: one scale per row
            grad_loss = grad_loss.reshape(grad_loss.shape + (1,) * (grad.dim() - grad_loss.dim()))
        return grad * grad_loss, *none

    def _vmap(self, info, in_dims, *args):
        # One fused call per slice of the batch: correct for every in_dims, and only reached
        # by torch.vmap over torch.ops.fastreg.* itself (the public functions use torch's).
        outs = [
            self.op(*(a if d is None else a.select(d, i) for a, d in zip(args, in_dims)))
            for i in range(info.batch_size)
        ]
        return tuple(torch.stack(o) for o in zip(*outs)), (0, 0)

    def __call__(self, input, *args):
        """The loss, autograd-aware; the inputs are known to suit the kernel."""
        if torch.compiler.is_compiling():
            return self.op(input, *args, input.requires_grad and torch.is_grad_enabled())[0]
        if _needs_torch_formula((input, *args[: self.tensor_args - 1])):
            return self.reference(input, *args)
        if input.requires_grad and torch.is_grad_enabled():
            return self.function.apply(input, *args, True)
        return self.kernel(input, *args, False)[0]  # no graph to build: the loss alone


def _empty_grad(like):
    return like.new_empty(0)


def _grad_buffer(input, want_grad: bool):
    # empty_like: a quarter of torch.empty(shape, dtype=...)'s cost on a [256, 10] call.
    return torch.empty_like(input, memory_format=torch.contiguous_format) if want_grad else input.new_empty(0)


def _cross_entropy_kernel(input, target, weight, ignore_index, reduction, label_smoothing, want_grad):
    """The fused kernel on CPU tensors that _fast_path_ok accepted. Memory is shared with
    NumPy, never copied, except to make a non-contiguous input contiguous. The binding
    checks everything else."""
    x, y = _numpy(input), _numpy(target)
    w = None if weight is None else _numpy(weight)
    grad = _grad_buffer(input, want_grad)
    g = grad.numpy() if want_grad else None
    if reduction == "none":
        rows = input.new_empty(input.shape[0])
        _core.cross_entropy(x, y, w, ignore_index, reduction, label_smoothing, g, rows.numpy())
        return rows, grad
    loss = _core.cross_entropy(x, y, w, ignore_index, reduction, label_smoothing, g, None)  # a NumPy scalar
    return torch.scalar_tensor(float(loss), dtype=input.dtype), grad


def _cross_entropy_fake(input, target, weight, ignore_index, reduction, label_smoothing, want_grad):
    loss = input.new_empty(input.shape[:1] if reduction == "none" else ())
    return loss, input.new_empty(input.shape) if want_grad else _empty_grad(input)


def _cross_entropy_reference(input, target, weight, ignore_index, reduction, label_smoothing):
    return F.cross_entropy(
        input, target, weight=weight, ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing
    )


_CROSS_ENTROPY = _FusedLoss(
    "cross_entropy",
    "(Tensor input, Tensor target, Tensor? weight, SymInt ignore_index, str reduction, float label_smoothing, "
    "bool want_grad) -> (Tensor, Tensor)",
    _cross_entropy_kernel,
    _cross_entropy_fake,
    _cross_entropy_reference,
    tensor_args=3,
)


def _regression_kernel(input, target, kind, param, reduction, want_grad):
    x, t = _numpy(input), _numpy(target)
    grad = _grad_buffer(input, want_grad)
    g = grad.numpy() if want_grad else None
    scale = 2.0 if kind == "mse" else 1.0  # mean((x - t)**2) = 2 * mean((x - t)**2 / 2), exactly
    core_kind = "squared" if kind == "mse" else kind
    if reduction == "none":
        loss = torch.empty_like(input, memory_format=torch.contiguous_format)
        _core.regression_loss(core_kind, x, t, param, reduction, loss.numpy(), g)
    else:
        loss = torch.scalar_tensor(_core.regression_loss(core_kind, x, t, param, reduction, None, g), dtype=input.dtype)
    if scale != 1.0:
        loss.mul_(scale)
        grad.mul_(scale)
    return loss, grad


def _regression_fake(input, target, kind, param, reduction, want_grad):
    loss = input.new_empty(input.shape if reduction == "none" else ())
    return loss, input.new_empty(input.shape) if want_grad else _empty_grad(input)


def _regression_reference(input, target, kind, param, reduction):
    if kind == "mse":
        return F.mse_loss(input, target, reduction=reduction)
    if kind == "squared":
        return F.mse_loss(input, target, reduction=reduction) * 0.5
    if kind == "l1":
        return F.l1_loss(input, target, reduction=reduction)
    if kind == "huber":
        return F.huber_loss(input, target, reduction=reduction, delta=param)
    return F.smooth_l1_loss(input, target, reduction=reduction, beta=param)


_REGRESSION = _FusedLoss(
    "regression_loss",
    "(Tensor input, Tensor target, str kind, float param, str reduction, bool want_grad) -> (Tensor, Tensor)",
    _regression_kernel,
    _regression_fake,
    _regression_reference,
    tensor_args=2,
)

_INT64 = (-(2**63), 2**63 - 1)


def _fast_path_ok(input, target, weight, ignore_index, reduction, label_smoothing) -> bool:
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
    elif target.dtype != input.dtype or target.shape != input.shape or ignore_index >= 0:
        return False  # probability targets with an ignore_index: torch raises
    if weight is not None and (
        not isinstance(weight, torch.Tensor)
        or weight.shape != input.shape[1:]
        or weight.dtype != input.dtype
        or not weight.is_cpu
        or weight.requires_grad
    ):
        return False
    if reduction not in _REDUCTIONS:
        return False
    return isinstance(label_smoothing, (int, float)) and 0.0 <= label_smoothing <= 1.0


def _check_devices(*tensors) -> None:
    devices = {t.device for t in tensors if isinstance(t, torch.Tensor)}
    if len(devices) > 1:
        raise RuntimeError(
            "Expected all tensors to be on the same device, but found at least two devices: "
            + ", ".join(sorted(str(d) for d in devices))
        )


def cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Same signature and results as ``torch.nn.functional.cross_entropy``.

    input: float32/float64 [N, C] logits (CPU); target: int64 class indices [N]
    or class probabilities [N, C]. Autograd-aware: the fused kernel computes the
    gradient during the forward pass.
    """
    if size_average is not None or reduce is not None:
        reduction = torch.nn.modules.loss._Reduction.legacy_get_string(size_average, reduce)
    if (
        isinstance(ignore_index, int)
        and _INT64[0] <= ignore_index <= _INT64[1]
        and _fast_path_ok(input, target, weight, ignore_index, reduction, label_smoothing)
    ):
        return _CROSS_ENTROPY(input, target, weight, int(ignore_index), reduction, float(label_smoothing))
    if isinstance(input, torch.Tensor) and input.is_cuda:  # CUDA hook: fastreg/_cuda_ops.py (falls back itself)
        return _cuda_ops.torch_cross_entropy(input, target, weight, ignore_index, reduction, label_smoothing)
    _check_devices(input, target, weight)
    if isinstance(input, torch.Tensor) and (input.is_cuda or input.dtype in (torch.float16, torch.bfloat16)):
        _warn_fallback("cross_entropy", f"no fused kernel for {input.dtype} on {input.device} yet")
    return F.cross_entropy(
        input, target, weight=weight, ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing
    )


def _regression(kind: str, input, target, param: float, reduction: str, torch_fn, **torch_kwargs):
    """A fused regression loss when the kernel covers the inputs (CPU float32/float64 of
    one dtype and shape, target not requiring grad), else torch's function itself."""
    if (
        isinstance(input, torch.Tensor)
        and isinstance(target, torch.Tensor)
        and input.dtype in _FAST_DTYPES
        and target.dtype == input.dtype
        and target.shape == input.shape
        and input.is_cpu
        and target.is_cpu
        and not target.requires_grad
        and reduction in _REDUCTIONS
        and isinstance(param, (int, float))
        and not isinstance(param, bool)
        and math.isfinite(param)
        and (param > 0 if kind == "huber" else param >= 0)
    ):
        return _REGRESSION(input, target, kind, float(param), reduction)
    _check_devices(input, target)
    return torch_fn(input, target, reduction=reduction, **torch_kwargs)


def _legacy_reduction(size_average, reduce, reduction):
    if size_average is not None or reduce is not None:
        return torch.nn.modules.loss._Reduction.legacy_get_string(size_average, reduce)
    return reduction


def l1_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """``torch.nn.functional.l1_loss``, fused (loss and gradient in one pass)."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if weight is not None:
        return F.l1_loss(input, target, reduction=reduction, weight=weight)
    return _regression("l1", input, target, 1.0, reduction, F.l1_loss)


def mse_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """``torch.nn.functional.mse_loss``, fused (loss and gradient in one pass)."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if weight is not None:
        return F.mse_loss(input, target, reduction=reduction, weight=weight)
    return _regression("mse", input, target, 1.0, reduction, F.mse_loss)


def huber_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    reduction: str = "mean",
    delta: float = 1.0,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """``torch.nn.functional.huber_loss``, fused (loss and gradient in one pass)."""
    if weight is not None:
        return F.huber_loss(input, target, reduction=reduction, delta=delta, weight=weight)
    return _regression("huber", input, target, delta, reduction, F.huber_loss, delta=delta)


def smooth_l1_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    beta: float = 1.0,
) -> torch.Tensor:
    """``torch.nn.functional.smooth_l1_loss``, fused (loss and gradient in one pass)."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    return _regression("smooth_l1", input, target, beta, reduction, F.smooth_l1_loss, beta=beta)


def squared_loss(input: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """d2l's ``(y_hat - y) ** 2 / 2`` (as :func:`fastreg.ops.squared_loss`), autograd-aware."""
    return _regression(
        "squared", input, target, 1.0, reduction, lambda a, b, reduction: F.mse_loss(a, b, reduction=reduction) * 0.5
    )


class CrossEntropyLoss(torch.nn.Module):
    """Drop-in for ``torch.nn.CrossEntropyLoss`` backed by the fused kernel."""

    def __init__(
        self,
        weight: torch.Tensor | None = None,
        size_average: bool | None = None,
        ignore_index: int = -100,
        reduce: bool | None = None,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        if size_average is not None or reduce is not None:
            reduction = torch.nn.modules.loss._Reduction.legacy_get_string(size_average, reduce)
        if reduction not in _REDUCTIONS:
            raise ValueError(f"{reduction} is not a valid value for reduction")
        self.register_buffer("weight", weight)
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.label_smoothing = label_smoothing

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return cross_entropy(
            input,
            target,
            self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
        )

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, ignore_index={self.ignore_index}, label_smoothing={self.label_smoothing}"


class _RegressionLoss(torch.nn.modules.loss._Loss):
    _fn = None

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return type(self)._fn(input, target, reduction=self.reduction)


class L1Loss(_RegressionLoss):
    """Drop-in for ``torch.nn.L1Loss`` backed by the fused kernel."""

    _fn = staticmethod(l1_loss)


class MSELoss(_RegressionLoss):
    """Drop-in for ``torch.nn.MSELoss`` backed by the fused kernel."""

    _fn = staticmethod(mse_loss)


class HuberLoss(torch.nn.modules.loss._Loss):
    """Drop-in for ``torch.nn.HuberLoss`` backed by the fused kernel."""

    def __init__(self, reduction: str = "mean", delta: float = 1.0) -> None:
        super().__init__(reduction=reduction)
        self.delta = delta

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return huber_loss(input, target, reduction=self.reduction, delta=self.delta)


class SmoothL1Loss(torch.nn.modules.loss._Loss):
    """Drop-in for ``torch.nn.SmoothL1Loss`` backed by the fused kernel."""

    def __init__(
        self, size_average: bool | None = None, reduce: bool | None = None, reduction: str = "mean", beta: float = 1.0
    ) -> None:
        super().__init__(size_average, reduce, reduction)
        self.beta = beta

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return smooth_l1_loss(input, target, reduction=self.reduction, beta=self.beta)


class SGD(torch.optim.Optimizer):
    """Drop-in for ``torch.optim.SGD``: ``step()`` runs fastreg's fused update over
    every parameter of a group in one call. ``state_dict()`` is interchangeable
    with torch.optim.SGD's (same keys and momentum buffers).

    ``lr`` and ``weight_decay`` may be 1-element tensors (read at each step, so changing
    them in place takes effect, as in torch). ``foreach`` and ``fused`` choose between
    torch's implementations; fastreg has one, already fused (one kernel call per group),
    so they are accepted, kept in the param groups and change nothing (torch's own
    conflicts still raise). ``differentiable=True`` asks for a step autograd can follow:
    the fused kernel writes through NumPy views, which autograd cannot see, so those
    groups run torch's own functional SGD (``differentiable=True``) under grad mode.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float | torch.Tensor = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float | torch.Tensor = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        if isinstance(lr, torch.Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        for name, value in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)):
            check_hyper(value, name, finite=False)  # torch.optim.SGD's rule and words
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        if fused and differentiable:
            raise RuntimeError("`fused` does not support `differentiable`")
        if fused and foreach:
            raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
            foreach=foreach,
            differentiable=differentiable,
            fused=fused,
        )
        super().__init__(params, defaults)

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("nesterov", False)
            group.setdefault("maximize", False)
            group.setdefault("foreach", None)
            group.setdefault("differentiable", False)
            group.setdefault("fused", False)

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
            # A tensor lr / weight_decay (torch allows both) is read now, as torch's update does.
            opts = (
                _float(group["lr"]),
                momentum,
                group["dampening"],
                _float(group["weight_decay"]),
                group["nesterov"],
                group["maximize"],
            )
            if group.get("differentiable"):  # the group's own values: a tensor lr stays in the graph
                raw = (
                    group["lr"],
                    momentum,
                    group["dampening"],
                    group["weight_decay"],
                    group["nesterov"],
                    group["maximize"],
                )
                self._torch_update(params, grads, bufs, raw, differentiable=True)
            else:
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
                    if buf is not None:
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
        SGD._torch_update(params, grads, bufs, opts, differentiable=False)

    @staticmethod
    def _torch_update(params, grads, bufs, opts, differentiable: bool):
        """torch's functional sgd on the parameters that have a gradient; it fills `bufs`
        in place as the kernel would. Grad mode is on only for a differentiable step."""
        live = [i for i, g in enumerate(grads) if g is not None]
        params, grads = [params[i] for i in live], [grads[i] for i in live]
        lr, momentum, dampening, weight_decay, nesterov, maximize = opts
        with torch.set_grad_enabled(differentiable):
            _torch_sgd(
                params,
                grads,
                [None] * len(params) if bufs is None else bufs,
                foreach=False,
                lr=lr,
                momentum=momentum,
                dampening=dampening,
                weight_decay=weight_decay,
                nesterov=nesterov,
                maximize=maximize,
            )

    # torch wraps every Optimizer subclass's step in a profiler record_function plus the
    # step-hook loops; record_function alone costs ~10 us a call. Here both are paid only
    # when needed: a profiler running or a hook registered takes torch's own wrapper.
    _hooked_update = torch.optim.Optimizer.profile_hook_step(_update)

    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
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

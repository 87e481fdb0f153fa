"""Optional CUDA kernels (``fastreg._cuda``), built when nvcc was found at install.

``is_available()`` says whether they can run here; every other function raises
``RuntimeError`` saying why not when they cannot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is optional: only type checkers import it here
    import torch

try:
    from . import _cuda
except ImportError as exc:  # built without CUDA, or the module cannot load
    _cuda = None
    _IMPORT_ERROR = str(exc)
else:
    _IMPORT_ERROR = ""

__all__ = [
    "check_errors",
    "cross_entropy",
    "device_copy",
    "device_count",
    "is_available",
    "is_built",
    "unavailable_reason",
]


def is_built() -> bool:
    """True when fastreg was built with its CUDA module."""
    return _cuda is not None


def device_count() -> int:
    """Number of CUDA devices visible (0 without the module, a driver or a GPU)."""
    return 0 if _cuda is None else _cuda.device_count()[0]


def unavailable_reason() -> str | None:
    """Why the CUDA kernels cannot run here, or None when they can."""
    if _cuda is None:
        import pathlib

        built = any(pathlib.Path(__file__).parent.glob("_cuda*.so"))
        detail = f" (fastreg._cuda exists but failed to load: {_IMPORT_ERROR})" if built else ""
        return (
            "fastreg was built without CUDA: reinstall on a machine with nvcc on PATH "
            "(or with FASTREG_CUDA=ON)" + detail
        )
    count, why = _cuda.device_count()
    if count == 0:
        return f"no usable CUDA GPU or driver (the CUDA runtime reports: {why})"
    return None


def is_available() -> bool:
    """True when the CUDA module was built and a GPU with a working driver is visible."""
    return unavailable_reason() is None


def describe() -> str:
    reason = unavailable_reason()
    if reason is None:
        return f"{device_count()} CUDA device(s) visible"
    return "none (" + reason + ")"


def _require():
    reason = unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"fastreg CUDA kernels are unavailable: {reason}")
    return _cuda


def device_copy(dst: torch.Tensor, src: torch.Tensor) -> None:
    """Copy CUDA tensor ``src`` into ``dst`` (same dtype and shape, contiguous) with
    fastreg's copy kernel on torch's current stream."""
    mod = _require()
    import torch

    for name, t in (("dst", dst), ("src", src)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_cuda:
            raise ValueError(f"{name} must be a CUDA tensor, got device {t.device}")
        if not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous")
    if dst.dtype != src.dtype or dst.shape != src.shape:
        raise ValueError(
            f"dst and src must match: dst is {dst.dtype}{tuple(dst.shape)}, src is {src.dtype}{tuple(src.shape)}"
        )
    if dst.device != src.device:
        raise ValueError(f"dst and src must be on the same device, got {dst.device} and {src.device}")
    with torch.cuda.device(dst.device):
        stream = torch.cuda.current_stream().cuda_stream
        mod.device_copy(dst.data_ptr(), src.data_ptr(), dst.numel() * dst.element_size(), stream)


def cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    *,
    lse_square_scale: float = 0.0,
    inplace_backward: bool = False,
    grad_in_forward: bool = True,
) -> torch.Tensor:
    """``fastreg.torch.cross_entropy`` on CUDA tensors, with two extra options.

    input: float32/float16/bfloat16 [N, C] (or [C]) CUDA logits; target: int64 class
    indices [N] or class probabilities [N, C] (the logits' dtype) on the same device;
    weight: [C] of the logits' dtype. Returns the loss in the logits' dtype (accumulated
    in float32), asynchronously on ``torch.cuda.current_stream()``.

    lse_square_scale: z-loss, adds ``lse_square_scale * logsumexp(row)**2`` to every
    counted row (``'mean'`` divides it by the same denominator as the cross-entropy).
    grad_in_forward (default True): the forward pass writes the gradient in the same sweep
    as the loss, and backward scales it by grad_output on the device (no work when
    grad_output is 1); backward then runs once (no retain_graph). False: backward reads
    the logits again instead (no [N, C] buffer between forward and backward, 1.5x the
    memory traffic; retain_graph works).
    inplace_backward: the fused gradient is written over the logits (no [N, C] gradient
    buffer); the logits' values are destroyed.

    A class index outside [0, C) (other than ignore_index) gives its row a NaN loss and
    gradient, never an out-of-bounds access, and is recorded on the device:
    :func:`check_errors` raises IndexError for it.
    """
    from ._cuda_ops import torch_cross_entropy

    return torch_cross_entropy(
        input,
        target,
        weight,
        ignore_index,
        reduction,
        label_smoothing,
        lse_square_scale,
        inplace_backward,
        grad_in_forward,
    )


def check_errors(device: int | str | torch.device | None = None) -> None:
    """Synchronise ``device`` (an int, a torch.device, or None for device 0) and raise
    IndexError for the first out-of-range class index fastreg's CUDA cross-entropy met
    since the last check; the record is then cleared. Kernels never synchronise, so this
    is where such an error surfaces."""
    from ._cuda_ops import take_error

    index = getattr(device, "index", device)
    take_error(0 if index is None else int(index))

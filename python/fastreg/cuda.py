"""Optional CUDA kernels (``fastreg._cuda``), built when nvcc was found at install.

``is_available()`` says whether they can run here; every other function raises
``RuntimeError`` saying why not when they cannot.
"""

from __future__ import annotations

try:
    from . import _cuda
except ImportError as exc:  # built without CUDA, or the module cannot load
    _cuda = None
    _IMPORT_ERROR = str(exc)
else:
    _IMPORT_ERROR = ""

__all__ = ["device_copy", "device_count", "is_available", "is_built", "unavailable_reason"]


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


def device_copy(dst, src) -> None:
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
            f"dst and src must match: dst is {dst.dtype}{tuple(dst.shape)}, "
            f"src is {src.dtype}{tuple(src.shape)}"
        )
    if dst.device != src.device:
        raise ValueError(f"dst and src must be on the same device, got {dst.device} and {src.device}")
    with torch.cuda.device(dst.device):
        stream = torch.cuda.current_stream().cuda_stream
        mod.device_copy(dst.data_ptr(), src.data_ptr(), dst.numel() * dst.element_size(), stream)

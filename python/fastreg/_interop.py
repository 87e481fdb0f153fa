"""NumPy <-> torch plumbing shared by the Python API. torch is never imported
here: a tensor can only exist if the caller already imported torch."""

from __future__ import annotations

import sys

import numpy as np


def torch_module():
    """The torch module if the caller has imported it, else None."""
    return sys.modules.get("torch")


def is_tensor(x) -> bool:
    torch = torch_module()
    return torch is not None and isinstance(x, torch.Tensor)


def as_numpy_view(x, name: str) -> np.ndarray:
    """A NumPy array sharing memory with ``x`` (an ndarray or a CPU torch tensor)."""
    if isinstance(x, np.ndarray):
        return x
    if is_tensor(x):
        if x.device.type != "cpu":
            raise ValueError(f"{name} is on device {x.device}; this function takes CPU tensors")
        return x.detach().numpy()
    raise TypeError(f"{name} must be a numpy.ndarray or a torch.Tensor, got {type(x).__name__}")

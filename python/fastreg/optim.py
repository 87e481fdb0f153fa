"""Fused SGD: torch.optim.SGD's update in one pass per tensor, in C++."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import _core
from ._checks import check_hyper
from ._interop import as_numpy_view

__all__ = ["sgd", "sgd_step"]


def sgd_step(
    params: Sequence,
    grads: Sequence,
    momentum_buffers: list | None = None,
    *,
    lr: float,
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    maximize: bool = False,
) -> None:
    """Update ``params`` in place with torch.optim.SGD's equations.

    params, grads: sequences of float32/float64 NumPy arrays or CPU torch tensors,
    ``grads[i]`` the same shape and dtype as ``params[i]``. Memory is shared, not copied.
    momentum_buffers: with ``momentum != 0``, a list with one entry per parameter
    (torch's functional ``sgd`` convention): ``None`` before the first step, which
    fills it in place with the new buffer (the gradient, undampened).
    A ``None`` gradient skips its parameter; non-contiguous entries are updated
    through a contiguous copy that is written back. Mixed float32/float64 lists work.

    Raises TypeError (wrong type/dtype) or ValueError (shape, length, read-only,
    shared memory, non-finite or negative hyper-parameter, nesterov without momentum)
    before anything is written.
    """
    if isinstance(params, (list, tuple)) and params and not isinstance(params[0], np.ndarray):  # CUDA hook
        from ._cuda_ops import is_cuda_array
        from ._cuda_ops import sgd_step as cuda_sgd_step

        if is_cuda_array(params[0]):
            return cuda_sgd_step(
                params,
                grads,
                momentum_buffers,
                lr=lr,
                momentum=momentum,
                dampening=dampening,
                weight_decay=weight_decay,
                nesterov=nesterov,
                maximize=maximize,
            )
    # One C++ call for the whole list: it checks every entry (types, dtypes, shapes,
    # devices, overlaps, hyper-parameters) with the GIL held, so a bad entry leaves all
    # parameters untouched, then runs every update with the GIL released.
    _core.sgd_update_many(
        params, grads, momentum_buffers, lr, momentum, dampening, weight_decay, bool(nesterov), bool(maximize)
    )


def sgd(params: Sequence, lr: float, batch_size: int) -> None:
    """d2l's from-scratch ``sgd``: ``p -= lr * p.grad / batch_size``, then zero ``p.grad``.

    params: torch tensors (or any objects with a ``.grad`` array attribute).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    lr = check_hyper(lr, "lr")
    params = list(params)
    grads = [getattr(p, "grad", None) for p in params]
    sgd_step(params, grads, lr=lr / batch_size)
    for g in grads:
        if g is not None:
            as_numpy_view(g, "grad")[...] = 0

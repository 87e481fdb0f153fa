"""Fused SGD: torch.optim.SGD's update in one pass per tensor, in C++."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from . import _core
from ._interop import as_numpy_view, is_tensor

__all__ = ["sgd", "sgd_step"]


def _check_hyper(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


def _empty_like(x):
    return x.new_empty(x.shape) if is_tensor(x) else np.empty_like(x, order="C")


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
    """
    if is_tensor(params) or isinstance(params, np.ndarray):
        raise TypeError("params must be a list of arrays/tensors, not a single array")
    params, grads = list(params), list(grads)
    if len(params) != len(grads):
        raise ValueError(f"params and grads must have the same length, got {len(params)} and {len(grads)}")
    lr = _check_hyper("lr", lr)
    momentum = _check_hyper("momentum", momentum)
    dampening = _check_hyper("dampening", dampening)
    weight_decay = _check_hyper("weight_decay", weight_decay)
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError("Nesterov momentum requires a momentum and zero dampening")
    if momentum != 0:
        if momentum_buffers is None:
            raise ValueError("momentum_buffers (a list, one entry per parameter) is required when momentum != 0")
        if not isinstance(momentum_buffers, list) or len(momentum_buffers) != len(params):
            raise ValueError(
                f"momentum_buffers must be a list of length {len(params)} (one entry per parameter)"
            )
    for i, (p_obj, g_obj) in enumerate(zip(params, grads)):
        if g_obj is None:
            continue  # as torch: parameters without a gradient are skipped
        p = as_numpy_view(p_obj, f"params[{i}]")
        g = as_numpy_view(g_obj, f"grads[{i}]")
        if p.dtype not in (np.float32, np.float64):
            raise TypeError(f"params[{i}] must be float32 or float64, got {p.dtype}")
        if g.dtype != p.dtype:
            raise TypeError(f"grads[{i}] must have dtype {p.dtype} like params[{i}], got {g.dtype}")
        if g.shape != p.shape:
            raise ValueError(f"grads[{i}] must have shape {p.shape} like params[{i}], got {g.shape}")
        if not p.flags.writeable:
            raise ValueError(f"params[{i}] is read-only")
        first = False
        buf_obj = None
        if momentum != 0:
            buf_obj = momentum_buffers[i]
            if buf_obj is None:
                buf_obj = _empty_like(p_obj)
                momentum_buffers[i] = buf_obj
                first = True
        buf = None if buf_obj is None else as_numpy_view(buf_obj, f"momentum_buffers[{i}]")
        # Not np.ascontiguousarray unconditionally: it turns a 0-d gradient into shape (1,).
        g = g if g.flags.c_contiguous else np.ascontiguousarray(g)
        # The kernel needs contiguous memory: update a contiguous copy, then write back.
        p_work = p if p.flags.c_contiguous else np.ascontiguousarray(p)
        b_work = buf if buf is None or buf.flags.c_contiguous else np.ascontiguousarray(buf)
        _core.sgd_update(
            p_work, g, b_work, lr=lr, momentum=momentum, dampening=dampening,
            weight_decay=weight_decay, nesterov=nesterov, maximize=maximize, first_step=first,
        )
        if p_work is not p:
            p[...] = p_work
        if b_work is not buf:
            buf[...] = b_work


def sgd(params: Sequence, lr: float, batch_size: int) -> None:
    """d2l's from-scratch ``sgd``: ``p -= lr * p.grad / batch_size``, then zero ``p.grad``.

    params: torch tensors (or any objects with a ``.grad`` array attribute).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    lr = _check_hyper("lr", lr)
    params = list(params)
    grads = [getattr(p, "grad", None) for p in params]
    sgd_step(params, grads, lr=lr / batch_size)
    for g in grads:
        if g is not None:
            as_numpy_view(g, "grad")[...] = 0

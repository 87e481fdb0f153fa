"""Data-parallel SGD for the estimators over ``torch.distributed`` (used by ``fit``).

Every rank holds the whole data set and draws the same permutation of it each epoch
(the estimator's RNG, synchronised from rank 0); the permutation is padded and split
with ``DistributedSampler``'s rules (rank ``r`` takes rows ``r, r + W, r + 2W, ...``).
Each step, every rank computes the gradient of its batch's mean loss in C++ into one
flat buffer ``[c*d + c + 1]`` (weight's gradient, bias's, and a "loss was not finite"
flag), the buffer is summed over the ranks with one ``all_reduce`` and divided by the
world size, and the fused SGD update runs in C++. Since every rank's batch has the
same size, the averaged gradient is the gradient of the mean over the union of the
batches: W processes with batch ``b`` train exactly as one process with batch ``W*b``
over the same (padded) order.

torch is imported only here, and only when data-parallel training is asked for.
"""

from __future__ import annotations

import math
import sys

import numpy as np

from . import _core

# What must agree on every rank, in the order of the fingerprint all-gathered at the
# start of each data-parallel fit; a difference would make the ranks train different
# models (or deadlock), so it is an error on every rank.
_FINGERPRINT = (
    "n_samples",
    "n_features",
    "n_outputs",
    "dtype",
    "batch_size",
    "lr",
    "momentum",
    "weight_decay",
    "epochs",
    "shuffle",
    "loss",
)
_DTYPE_CODES = {np.dtype(np.float32): 0, np.dtype(np.float64): 1, np.dtype(np.uint8): 2}
_LOSS_CODES = {"cross_entropy": 0, "squared": 1, "huber": 2, "l1": 3}


def _torch_distributed():
    try:
        import torch
        import torch.distributed as dist
    except ImportError as e:  # pragma: no cover - torch is a test dependency
        raise ImportError("distributed=True trains over torch.distributed: install torch (pip install torch)") from e
    return torch, dist


def resolve(distributed) -> DataParallel | None:
    """The data-parallel context ``fit(distributed=...)`` asks for, or None.

    None (auto): data-parallel when torch is already imported and an initialised
    default process group has more than one rank. True: required (an initialised
    group is needed; one rank is allowed). False: never.
    """
    if distributed is not None and not isinstance(distributed, (bool, np.bool_)):
        raise TypeError(f"distributed must be None, True or False, got {type(distributed).__name__}")
    if distributed is None:
        torch = sys.modules.get("torch")
        dist = getattr(torch, "distributed", None) if torch is not None else None
        if dist is None or not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
            return None
        return DataParallel(torch, dist)
    if not distributed:
        return None
    torch, dist = _torch_distributed()
    if not dist.is_available():
        raise RuntimeError("distributed=True, but this torch build has no torch.distributed support")
    if not dist.is_initialized():
        # torch's own wording and type for using a group before init_process_group.
        raise ValueError(
            "distributed=True needs an initialised default process group: call "
            "torch.distributed.init_process_group('gloo') first (torchrun sets the environment)"
        )
    return DataParallel(torch, dist)


class DataParallel:
    """The default process group as seen by one rank, and the per-epoch loop."""

    def __init__(self, torch, dist):
        self.torch, self.dist = torch, dist
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        backend = str(dist.get_backend())
        if backend == "nccl":
            raise RuntimeError(
                "data-parallel fit all-reduces a CPU gradient buffer, but the default process group's backend "
                "is 'nccl', which only takes CUDA tensors; initialise it with backend='gloo' (or "
                "'cpu:gloo,cuda:nccl')"
            )

    # -- start of a fit: every rank must agree, then take rank 0's state ---------
    def sync(self, est, X: np.ndarray, epochs: int, loss: str) -> None:
        """Check the ranks were given the same problem; copy rank 0's parameters,
        momentum buffers and RNG state to every rank."""
        torch, dist = self.torch, self.dist
        c, d = est._w.shape
        mine = torch.tensor(
            [
                X.shape[0],
                d,
                c,
                _DTYPE_CODES[X.dtype],
                est.batch_size,
                est.lr,
                est.momentum,
                est.weight_decay,
                epochs,
                bool(est.shuffle),
                _LOSS_CODES[loss],
            ],
            dtype=torch.float64,
        )
        every = [torch.empty_like(mine) for _ in range(self.world_size)]
        dist.all_gather(every, mine)
        ref = every[0]
        for r in range(1, self.world_size):
            bad = (every[r] != ref).nonzero()
            if len(bad):
                k = int(bad[0, 0])
                name = _FINGERPRINT[k]
                got0, got = _decode(k, float(ref[k])), _decode(k, float(every[r][k]))
                msg = (
                    f"data-parallel fit: {name} differs between ranks (rank 0: {got0}, rank {r}: {got}); every "
                    "rank must call fit with the same hyper-parameters and the whole data set (each trains "
                    "on its own shard)"
                )
                raise TypeError(msg) if name == "dtype" else ValueError(msg)
        # Parameters and buffers: broadcast in place through zero-copy tensor views.
        for a in (est._w, est._b, est._w_buf, est._b_buf):
            if a is not None:
                dist.broadcast(torch.from_numpy(a), src=0)
        state = [est._rng.bit_generator.state]
        dist.broadcast_object_list(state, src=0)
        est._rng.bit_generator.state = state[0]

    # -- one epoch ------------------------------------------------------------
    def shard(self, order: np.ndarray) -> np.ndarray:
        """This rank's rows of an epoch's order, as DistributedSampler(drop_last=False):
        pad to a multiple of the world size by wrapping around, then every W-th row."""
        n, ws = len(order), self.world_size
        total = math.ceil(n / ws) * ws
        padded = np.resize(order, total) if total > n else order
        return np.ascontiguousarray(padded[self.rank :: ws], dtype=np.int64)

    def epoch(self, est, X: np.ndarray, y: np.ndarray, order: np.ndarray) -> tuple[float, int, int, bool]:
        """Train one epoch on this rank's shard of ``order``; returns the totals over
        all ranks ``(loss_sum, correct, rows, finite)`` like ``_core.softmax_epoch``."""
        torch, dist = self.torch, self.dist
        w, b = est._w, est._b
        c, d = w.shape
        shard = self.shard(order)
        flat = np.empty(c * d + c + 1, dtype=w.dtype)  # [grad w | grad b | not-finite flag]
        grad, flat_t = flat[:-1], torch.from_numpy(flat)
        inv_ws = w.dtype.type(1.0 / self.world_size)
        bs = int(est.batch_size)
        step_args = dict(lr=float(est.lr), momentum=float(est.momentum), weight_decay=float(est.weight_decay))
        first, finite = est._first_step, True
        loss_sum = correct = rows = 0
        for start in range(0, len(shard), bs):
            idx = shard[start : start + bs]
            batch_loss, batch_correct, ok = est._batch_grad(X, y, idx, grad)
            flat[-1] = 0 if ok else 1
            dist.all_reduce(flat_t)  # sum over ranks, in place
            if flat[-1] != 0:  # some rank's loss was inf/nan: every rank stops here
                finite = False
                break
            if self.world_size > 1:
                np.multiply(grad, inv_ws, out=grad)
            _core.linear_sgd_step(w, b, grad, est._w_buf, est._b_buf, first_step=first, **step_args)
            first = False
            loss_sum += batch_loss
            correct += batch_correct
            rows += len(idx)
        totals = torch.tensor([loss_sum, correct, rows], dtype=torch.float64)
        dist.all_reduce(totals)
        return float(totals[0]), int(totals[1]), int(totals[2]), finite


def _decode(k: int, v: float):
    name = _FINGERPRINT[k]
    if name == "dtype":
        return {code: str(dt) for dt, code in _DTYPE_CODES.items()}.get(int(v), v)
    if name == "loss":
        return {code: s for s, code in _LOSS_CODES.items()}.get(int(v), v)
    if name == "shuffle":
        return bool(v)
    return int(v) if name in ("n_samples", "n_features", "n_outputs", "batch_size", "epochs") else v

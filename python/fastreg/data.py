"""Shuffled minibatch iteration over in-memory arrays, in C++.

``fastreg.DataLoader`` is a drop-in for ``torch.utils.data.DataLoader(TensorDataset(...))``
(and d2l's ``data_iter`` / ``load_array``): each batch is gathered in one C++ pass
(the GIL released for big batches). Batches of 64 KiB or more are prefetched on
idle-priority background threads while the caller works on the previous one; smaller
ones are gathered inline ~128 KiB at a time and handed out as views of that chunk.
"""

from __future__ import annotations

import atexit
import math
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from . import _core
from ._interop import is_tensor, torch_module

__all__ = ["DataLoader", "data_iter", "load_array"]

# Iterators that may own prefetch threads; stopped at interpreter exit in case a
# reference cycle or a global keeps one alive that long. Plain weak references
# without callbacks (not a WeakSet): a callback is Python code run whenever an
# iterator dies, and a KeyboardInterrupt landing in it would be swallowed.
_live_iterators: list[weakref.ref] = []


def _track(it) -> None:
    if len(_live_iterators) >= 64:  # drop dead references now and then
        _live_iterators[:] = [r for r in _live_iterators if r() is not None]
    _live_iterators.append(weakref.ref(it))


@atexit.register
def _close_live_iterators() -> None:
    for r in list(_live_iterators):
        it = r()
        if it is not None:
            it.close()


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return int(value)


def _dataset_items(dataset) -> tuple[list, bool]:
    """The arrays a dataset holds, and whether it is a single array (not a tuple)."""
    torch = torch_module()
    if isinstance(dataset, np.ndarray) or is_tensor(dataset):
        return [dataset], True
    if torch is not None and isinstance(dataset, torch.utils.data.TensorDataset):
        return list(dataset.tensors), False
    if isinstance(dataset, (tuple, list)):
        return list(dataset), False
    for attr in ("tensors", "arrays"):
        items = getattr(dataset, attr, None)
        if isinstance(items, (tuple, list)):
            return list(items), False
    kind = "a map-style Dataset" if hasattr(dataset, "__getitem__") else "an object"
    raise TypeError(
        "dataset must be a torch.utils.data.TensorDataset, a tuple/list of NumPy arrays or torch "
        "tensors with the same first dimension, a single array/tensor, or an object with a "
        f"'tensors' or 'arrays' tuple; got {kind} of type {type(dataset).__name__}. fastreg cannot "
        "serve a generic Dataset fast: use torch.utils.data.DataLoader for it."
    )


def _to_numpy(x, name: str) -> np.ndarray:
    if isinstance(x, np.ndarray):
        a = x
    else:  # a torch tensor
        if x.device.type != "cpu":
            raise ValueError(f"{name} is on device {x.device}; fastreg.DataLoader takes CPU tensors")
        try:
            a = x.detach().numpy()
        except TypeError as e:  # e.g. bfloat16: no NumPy dtype
            raise TypeError(f"{name} has dtype {x.dtype}, which has no NumPy equivalent") from e
    if a.ndim == 0:
        raise ValueError(f"{name} is 0-d (a scalar); each array needs a first (row) dimension")
    if a.dtype.hasobject:
        raise TypeError(f"{name} has dtype {a.dtype}; object arrays are not supported")
    # Non-contiguous (strided, transposed, negative-stride) inputs are copied once here.
    return np.ascontiguousarray(a)


def _np_dtype(d, name: str):
    if d is None:
        return None
    torch = torch_module()
    if torch is not None and isinstance(d, torch.dtype):
        return torch.empty(0, dtype=d).numpy().dtype
    try:
        return np.dtype(d)
    except TypeError as e:
        raise TypeError(f"{name} must be a NumPy or torch dtype, got {d!r}") from e


def _per_array(spec, k: int, name: str) -> list:
    """A dtype=/scale= option: one value for the first array, or a sequence with one per array."""
    if isinstance(spec, (list, tuple)):
        if len(spec) != k:
            raise ValueError(f"{name} must have one entry per array ({k}), got {len(spec)}")
        return list(spec)
    return [spec] + [None] * (k - 1)


def _conversions(arrays: list, dtype, scale) -> tuple[list, list]:
    k = len(arrays)
    dtypes, scales = _per_array(dtype, k, "dtype"), _per_array(scale, k, "scale")
    to_f32, factors = [], []
    for i, (a, d, s) in enumerate(zip(arrays, dtypes, scales)):
        d = _np_dtype(d, f"dtype[{i}]" if isinstance(dtype, (list, tuple)) else "dtype")
        if s is not None:
            if isinstance(s, bool) or not isinstance(s, (int, float, np.integer, np.floating)):
                raise TypeError(f"scale must be a number, got {type(s).__name__}")
            if not math.isfinite(float(s)):
                raise ValueError(f"scale must be finite, got {s}")
        convert = a.dtype == np.uint8 and (d == np.float32 or (d is None and s is not None))
        if not convert and (s is not None or (d is not None and d != a.dtype)):
            target = d if d is not None else a.dtype
            raise TypeError(
                f"array {i}: the only conversion supported is uint8 -> float32 (with scale=); "
                f"got {a.dtype} -> {target}" + (f" with scale={s}" if s is not None else "")
            )
        to_f32.append(bool(convert))
        factors.append(float(s) if s is not None else 1.0)
    return to_f32, factors


def _distributed_defaults(rank, world_size) -> tuple[int, int]:
    torch = torch_module()
    dist = getattr(torch, "distributed", None) if torch is not None else None
    initialised = dist is not None and dist.is_available() and dist.is_initialized()
    if world_size is None:
        world_size = dist.get_world_size() if initialised else 1
    world_size = _check_int("world_size", world_size, 1)
    if rank is None:
        rank = dist.get_rank() if initialised else 0
    rank = _check_int("rank", rank, 0)
    if rank >= world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    return rank, world_size


class DataLoader:
    """Shuffled minibatches of in-memory arrays, gathered in C++.

    A drop-in for ``torch.utils.data.DataLoader(TensorDataset(*tensors), batch_size, shuffle)``
    over CPU tensors or NumPy arrays (memory-mapped ``.npy`` files included).

    Args:
        dataset: a ``TensorDataset``, a tuple/list of arrays or tensors sharing their first
            dimension ``N`` (all NumPy or all torch), a single array/tensor, or an object
            with a ``tensors`` or ``arrays`` tuple. Non-contiguous inputs are copied once.
        batch_size: rows per batch (int >= 1).
        shuffle: reshuffle every epoch; False keeps row order.
        drop_last: drop the last short batch (and, with ``world_size > 1``, truncate rather
            than pad the index list to a multiple of ``world_size``).
        generator: a ``torch.Generator``: the batches, epoch after epoch, are exactly those
            of ``torch.utils.data.DataLoader(..., generator=generator)``, which leaves the
            generator in the same state.
        seed: int in [0, 2**64): fastreg's own RNG, one order per (seed, epoch). Default: drawn
            from torch's global RNG if torch is imported (so ``torch.manual_seed`` makes runs
            reproducible), else from the OS; 0 with ``world_size > 1`` (all ranks must agree).
        rank, world_size: shard as ``DistributedSampler`` does (default: from an initialised
            ``torch.distributed``, else 0 and 1).
        dtype, scale: convert on the fly: a uint8 array gives float32 batches equal to
            ``x.astype(float32) * float32(scale)`` (``scale=1/255`` for ``ToTensor``'s range).
            A single value applies to the first array; a sequence gives one per array.
        prefetch: gather upcoming batches on idle-priority background threads: None (auto:
            batches of 64 KiB or more), True or False.

    Iterating yields tuples of batches (a single array for a single-array dataset) of
    shape ``[b, *trailing]`` and the input's dtype (float32 where converted); torch in
    gives torch out. Each batch is a fresh array (small batches: a view of a fresh
    chunk of batches) that the loader never writes again.
    """

    def __init__(
        self,
        dataset,
        batch_size: int = 1,
        shuffle: bool = False,
        drop_last: bool = False,
        generator=None,
        seed: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        *,
        dtype=None,
        scale: float | Sequence[float | None] | None = None,
        prefetch: bool | None = None,
    ) -> None:
        self.batch_size = _check_int("batch_size", batch_size, 1)
        if not isinstance(shuffle, (bool, np.bool_)):
            raise TypeError(f"shuffle must be a bool, got {type(shuffle).__name__}")
        if not isinstance(drop_last, (bool, np.bool_)):
            raise TypeError(f"drop_last must be a bool, got {type(drop_last).__name__}")
        if prefetch is not None and not isinstance(prefetch, (bool, np.bool_)):
            raise TypeError(f"prefetch must be None or a bool, got {type(prefetch).__name__}")
        self.shuffle, self.drop_last = bool(shuffle), bool(drop_last)
        self._prefetch = -1 if prefetch is None else int(bool(prefetch))

        items, self._single = _dataset_items(dataset)
        if not items:
            raise ValueError("dataset holds no arrays")
        kinds = {is_tensor(x) for x in items}
        for i, x in enumerate(items):
            if not (isinstance(x, np.ndarray) or is_tensor(x)):
                raise TypeError(f"dataset[{i}] must be a numpy.ndarray or a torch.Tensor, got {type(x).__name__}")
        if len(kinds) > 1:
            raise TypeError("dataset mixes torch tensors and NumPy arrays; pass all of one kind")
        self._torch_out = kinds == {True}
        self.dataset = dataset
        self._arrays = [_to_numpy(x, f"dataset[{i}]") for i, x in enumerate(items)]
        n = self._arrays[0].shape[0]
        for i, a in enumerate(self._arrays[1:], 1):
            if a.shape[0] != n:
                raise ValueError(f"dataset[{i}] has {a.shape[0]} rows but dataset[0] has {n}: lengths must match")
        if n == 0:
            raise ValueError("dataset is empty (0 rows)")
        self._n = n
        self._to_f32, self._scales = _conversions(self._arrays, dtype, scale)

        self.rank, self.world_size = _distributed_defaults(rank, world_size)
        if self.drop_last and n % self.world_size:
            self._per_rank = math.ceil((n - self.world_size) / self.world_size)
        else:
            self._per_rank = math.ceil(n / self.world_size)

        torch = torch_module()
        if generator is not None:
            if torch is None or not isinstance(generator, torch.Generator):
                raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
            if generator.device.type != "cpu":
                raise ValueError(f"generator must be a CPU torch.Generator, got one on {generator.device}")
            if seed is not None:
                raise ValueError("pass either generator= (torch's RNG) or seed= (fastreg's RNG), not both")
            if self.world_size > 1:
                raise ValueError("generator= reproduces torch's single-process DataLoader; use seed= with world_size > 1")
        elif seed is None:
            if self.world_size > 1:
                seed = 0
            elif torch is not None:
                seed = int(torch.empty((), dtype=torch.int64).random_().item())
            else:
                seed = int(np.random.SeedSequence().entropy) % 2**64
        if seed is not None:
            seed = _check_int("seed", seed, 0)
            if seed >= 2**64:
                raise ValueError(f"seed must be < 2**64, got {seed}")
        self.generator, self.seed = generator, seed

        # Prefetched batch buffers, reused epoch after epoch (freed with the loader).
        self._pool = _core.LoaderPool()
        self._auto_epoch = 0
        self._pinned_epoch: int | None = None
        self._resume: tuple | None = None
        self._last: weakref.ref | None = None
        self._last_info: tuple = (0, None)

    def __len__(self) -> int:
        """Batches per epoch (for this rank): ``N // b`` with drop_last, else ``ceil(N / b)``."""
        if self.drop_last:
            return self._per_rank // self.batch_size
        return math.ceil(self._per_rank / self.batch_size)

    @property
    def epoch(self) -> int:
        """The epoch the next iteration will run."""
        if self._resume is not None:
            return self._resume[0]
        return self._pinned_epoch if self._pinned_epoch is not None else self._auto_epoch

    def set_epoch(self, epoch: int) -> None:
        """Pin the epoch (as ``DistributedSampler.set_epoch``): every iteration uses it until
        the next call. Without it, each iteration starts the next epoch by itself."""
        self._pinned_epoch = _check_int("epoch", epoch, 0)
        self._resume = None

    def _order(self, epoch: int) -> np.ndarray:
        """This rank's row indices for ``epoch`` (fastreg's RNG), DistributedSampler's rules."""
        n, ws = self._n, self.world_size
        order = _core.random_permutation(n, self.seed, epoch) if self.shuffle else np.arange(n, dtype=np.int64)
        if ws == 1:
            return order
        total = self._per_rank * ws
        order = np.resize(order, total) if total > n else order[:total]  # pad by wrapping around
        return np.ascontiguousarray(order[self.rank :: ws])

    def __iter__(self) -> Iterator:
        """A fresh iterator over one epoch's batches (its ``__next__`` runs in C++)."""
        if self._resume is not None:
            epoch, first_batch, gen_state = self._resume
            self._resume = None
        else:
            epoch = self.epoch
            first_batch, gen_state = 0, None
        if self._pinned_epoch is None:
            self._auto_epoch = epoch + 1
        order, order_fn, on_exhaust = None, None, None
        g = self.generator
        if g is not None:
            torch = torch_module()
            if gen_state is not None:
                g.set_state(gen_state)
            gen_state = g.get_state()
            # torch's _BaseDataLoaderIter draws a base seed when the iterator is made ...
            torch.empty((), dtype=torch.int64).random_(generator=g)
            n = self._n
            if self.shuffle:
                # ... RandomSampler draws the order at the first batch, and one more
                # permutation (discarded) when a batch asks for an index past the end.
                order_fn = lambda: torch.randperm(n, generator=g).numpy()  # noqa: E731
                on_exhaust = lambda: torch.randperm(n, generator=g)  # noqa: E731
            else:
                order = np.arange(n, dtype=np.int64)
        else:
            order = self._order(epoch)
        torch = torch_module()
        it = _core.BatchIter(
            self._arrays, self._to_f32, self._scales, order, order_fn, self.batch_size,
            self.drop_last, first_batch, on_exhaust,
            torch.from_numpy if self._torch_out else None, self._single, self._prefetch, self._pool,
        )
        _track(it)
        self._last = weakref.ref(it)
        self._last_info = (epoch, gen_state)
        return it

    def _fingerprint(self) -> dict:
        return {
            "num_rows": self._n, "batch_size": self.batch_size, "shuffle": self.shuffle,
            "drop_last": self.drop_last, "world_size": self.world_size, "rank": self.rank,
        }

    def state_dict(self) -> dict:
        """Where iteration stands, to resume exactly mid-epoch with ``load_state_dict``.

        Refers to the most recent live iterator (its epoch and batches yielded so far);
        with none (or an exhausted one), to the start of the next epoch.
        """
        sd = self._fingerprint()
        it = self._last() if self._last is not None else None
        if self._resume is not None:
            epoch, done, gen_state = self._resume
        elif it is not None and not it.done:
            epoch, gen_state = self._last_info
            done = it.next_batch
        else:
            epoch, done = self.epoch, 0
            gen_state = self.generator.get_state() if self.generator is not None else None
        sd.update(epoch=epoch, batches_yielded=done, epoch_pinned=self._pinned_epoch is not None, seed=self.seed)
        if gen_state is not None:
            sd["generator_state"] = gen_state.clone()
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        """Resume from ``state_dict()``: the next iteration yields the rest of that epoch."""
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        for key, value in self._fingerprint().items():
            if key not in state_dict:
                raise ValueError(f"state_dict lacks '{key}'")
            if state_dict[key] != value:
                raise ValueError(f"state_dict was saved with {key}={state_dict[key]!r}, this loader has {value!r}")
        epoch = _check_int("state_dict['epoch']", state_dict.get("epoch"), 0)
        done = _check_int("state_dict['batches_yielded']", state_dict.get("batches_yielded"), 0)
        if done > len(self):
            raise ValueError(f"state_dict['batches_yielded'] = {done} exceeds the {len(self)} batches of an epoch")
        gen_state = state_dict.get("generator_state")
        if (self.generator is None) != (gen_state is None):
            raise ValueError("state_dict and this loader disagree on using a generator")
        if self.generator is None:
            self.seed = _check_int("state_dict['seed']", state_dict.get("seed"), 0)
        self._pinned_epoch = epoch if state_dict.get("epoch_pinned") else None
        self._resume = (epoch, done, gen_state)


def data_iter(batch_size: int, features, labels) -> Iterator[tuple]:
    """d2l's from-scratch ``data_iter``: shuffled ``(features[b], labels[b])`` batches, the
    last one short. features: ``[N, ...]``, labels: ``[N, ...]`` (arrays or tensors)."""
    return iter(DataLoader((features, labels), batch_size, shuffle=True))


def load_array(data_arrays: Sequence, batch_size: int, is_train: bool = True) -> DataLoader:
    """d2l's concise ``load_array``: a loader over ``data_arrays`` (tensors or arrays sharing
    their first dimension), shuffled when ``is_train``."""
    return DataLoader(tuple(data_arrays), batch_size, shuffle=is_train)

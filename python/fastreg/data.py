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
import warnings
import weakref
from collections.abc import Iterator, Sequence

import numpy as np

from . import _core
from ._checks import check_int
from ._interop import is_tensor, torch_module
from ._typing import ArrayLike

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
    for r in list(_live_iterators):  # noqa: PERF101 -- close() removes entries while we iterate
        it = r()
        if it is not None:
            it.close()


def _index_list(indices, n: int, what: str) -> np.ndarray:
    """A Subset's indices (a list, range, array or tensor of ints) as int64 in [0, n)."""
    if is_tensor(indices):
        indices = indices.detach().cpu().numpy()
    idx = np.asarray(
        indices if not isinstance(indices, range) else np.arange(indices.start, indices.stop, indices.step)
    )
    if idx.size == 0:
        return np.zeros(0, dtype=np.int64)
    if idx.dtype == np.bool_ or not np.issubdtype(idx.dtype, np.integer) or idx.ndim != 1:
        raise TypeError(f"{what} must be a 1-D sequence of ints, got dtype {idx.dtype} and shape {idx.shape}")
    idx = idx.astype(np.int64)
    bad = np.flatnonzero((idx < -n) | (idx >= n))
    if bad.size:
        raise IndexError(f"{what}[{int(bad[0])}] = {int(idx[bad[0]])} is out of range for a dataset of {n} rows")
    return np.where(idx < 0, idx + n, idx)


def _dataset_items(dataset) -> tuple[list, bool, np.ndarray | None]:
    """The arrays a dataset holds, whether it is a single array (not a tuple), and the
    rows it selects from them (a Subset's index map, composed; None for all rows)."""
    torch = torch_module()
    if isinstance(dataset, np.ndarray) or is_tensor(dataset):
        return [dataset], True, None
    if torch is not None and isinstance(dataset, torch.utils.data.Subset):
        items, single, inner = _dataset_items(dataset.dataset)
        n = len(inner) if inner is not None else (len(items[0]) if items else 0)
        idx = _index_list(dataset.indices, n, "Subset.indices")
        return items, single, (inner[idx] if inner is not None else idx)
    if torch is not None and isinstance(dataset, torch.utils.data.TensorDataset):
        return list(dataset.tensors), False, None
    if isinstance(dataset, (tuple, list)):
        return list(dataset), False, None
    for attr in ("tensors", "arrays"):
        items = getattr(dataset, attr, None)
        if isinstance(items, (tuple, list)):
            return list(items), False, None
    kind = "a map-style Dataset" if hasattr(dataset, "__getitem__") else "an object"
    raise TypeError(
        "dataset must be a torch.utils.data.TensorDataset (or a Subset of one, as random_split "
        "returns), a tuple/list of NumPy arrays or torch tensors with the same first dimension, "
        "a single array/tensor, or an object with a 'tensors' or 'arrays' tuple; got "
        f"{kind} of type {type(dataset).__name__}. fastreg cannot serve a generic Dataset fast: "
        "use torch.utils.data.DataLoader for it."
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
    world_size = check_int(world_size, "world_size", 1)
    if rank is None:
        rank = dist.get_rank() if initialised else 0
    rank = check_int(rank, "rank", 0)
    if rank >= world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    return rank, world_size


_EMPTY_SHUFFLE_ERROR = "num_samples should be a positive integer value, but got num_samples=0"
# Attributes torch's DataLoader refuses to change once built (it raises the same error).
_FROZEN = frozenset(("batch_size", "batch_sampler", "sampler", "drop_last", "dataset", "persistent_workers"))


def _draw_seed(torch, generator=None) -> int:
    """One int64 from ``generator`` (torch's global RNG if None): what torch's DataLoader
    draws for its base seed and its RandomSampler for the epoch's seed."""
    return int(torch.empty((), dtype=torch.int64).random_(generator=generator).item())


def _check_multiprocessing_context(ctx, num_workers: int):
    """torch's rules for multiprocessing_context (there are no processes to start here)."""
    if ctx is None:
        return None
    if num_workers == 0:
        raise ValueError(
            "multiprocessing_context can only be used with multi-process loading (num_workers > 0), "
            f"but got num_workers={num_workers}"
        )
    import multiprocessing

    if isinstance(ctx, str):
        valid = multiprocessing.get_all_start_methods()
        if ctx not in valid:
            raise ValueError(
                f"multiprocessing_context option should specify a valid start method in {valid!r}, "
                f"but got multiprocessing_context={ctx!r}"
            )
        ctx = multiprocessing.get_context(ctx)
    if not isinstance(ctx, multiprocessing.context.BaseContext):
        raise TypeError(
            "multiprocessing_context option should be a valid context object or a string specifying "
            f"the start method, but got multiprocessing_context={ctx}"
        )
    return ctx


class _EpochSampler:
    """``loader.sampler`` when fastreg's own RNG orders the rows (``seed=``, sharding, or no
    torch): iterating it gives the row order of the epoch the loader runs next, and
    ``set_epoch`` is the loader's (as ``DistributedSampler.set_epoch``)."""

    def __init__(self, loader: DataLoader) -> None:
        self._loader = weakref.ref(loader)

    def __len__(self) -> int:
        return self._loader()._per_rank

    def __iter__(self) -> Iterator[int]:
        loader = self._loader()
        return iter(loader._positions(loader.epoch).tolist())

    def set_epoch(self, epoch: int) -> None:
        self._loader().set_epoch(epoch)


class _BatchIndices:
    """``torch.utils.data.BatchSampler`` where torch is not imported: lists of
    ``batch_size`` indices from ``sampler``, the last one short unless ``drop_last``."""

    def __init__(self, sampler, batch_size: int, drop_last: bool) -> None:
        self.sampler, self.batch_size, self.drop_last = sampler, batch_size, drop_last

    def __iter__(self) -> Iterator[list]:
        batch = []
        for i in self.sampler:
            batch.append(i)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)


class DataLoader:
    """Shuffled minibatches of in-memory arrays, gathered in C++.

    A drop-in for ``torch.utils.data.DataLoader`` over a ``TensorDataset`` (or a
    ``Subset`` of one) of CPU tensors, or over NumPy arrays (memory-mapped ``.npy`` files
    included): it takes torch's arguments, in torch's order, and gives torch's batches.

    Args:
        dataset: a ``TensorDataset``; a ``Subset`` of one (``random_split`` results); a
            tuple/list of arrays or tensors sharing their first dimension ``N`` (all NumPy
            or all torch); a single array/tensor; or an object with a ``tensors`` or
            ``arrays`` tuple. Non-contiguous inputs are copied once. ``N`` may be 0.
        batch_size: rows per batch (int >= 1), or None: one sample at a time, no batch
            dimension (torch's ``batch_size=None``).
        shuffle: reshuffle every epoch; False or None keeps row order.
        sampler, batch_sampler: any iterable of row indices (``SubsetRandomSampler``,
            ``WeightedRandomSampler``, ...) or of lists of them; the rows they name are
            gathered in C++. torch's rules on combining them with ``shuffle``,
            ``batch_size`` and ``drop_last`` apply, with torch's errors.
        num_workers, prefetch_factor, persistent_workers, timeout, worker_init_fn,
            multiprocessing_context, in_order: accepted and checked as torch checks them;
            no worker processes are started (batches come from C++ threads in this
            process, always in order), so ``worker_init_fn`` is never called.
        collate_fn: None or torch's ``default_collate`` (the batches below); any other
            callable is applied to the list of samples, as torch does.
        pin_memory: pin torch batches in page-locked memory when an accelerator is
            available (torch's warning otherwise); NumPy batches are left as they are.
        drop_last: drop the last short batch (and, with ``world_size > 1``, truncate rather
            than pad the index list to a multiple of ``world_size``).
        generator: a ``torch.Generator``: the batches, epoch after epoch, are exactly those
            of ``torch.utils.data.DataLoader(..., generator=generator)``, which leaves the
            generator in the same state.
        seed: int in [0, 2**64): fastreg's own RNG, one order per (seed, epoch).
            Without ``generator`` and ``seed``, torch's global RNG is drawn exactly as
            torch's DataLoader draws it, giving its batches (if torch is imported; else a
            seed from the OS); 0 with ``world_size > 1`` (all ranks must agree).
        rank, world_size: shard as ``DistributedSampler`` does (default: from an initialised
            ``torch.distributed``, else 0 and 1).
        dtype, scale: convert on the fly: a uint8 array gives float32 batches equal to
            ``x.astype(float32) * float32(scale)`` (``scale=1/255`` for ``ToTensor``'s range).
            A single value applies to the first array; a sequence gives one per array.
        prefetch: gather upcoming batches on idle-priority background threads: None (auto:
            batches of 64 KiB or more), True or False.

    Iterating yields lists of batches (as torch's ``default_collate`` makes of a
    ``TensorDataset``'s tuples; a single array for a single-array dataset) of shape
    ``[b, *trailing]`` and the input's dtype (float32 where converted); torch in gives
    torch out. Each batch is a fresh array (small batches: a view of a fresh chunk of
    batches) that the loader never writes again.
    """

    def __init__(
        self,
        dataset,
        batch_size: int | None = 1,
        shuffle: bool | None = None,
        sampler=None,
        batch_sampler=None,
        num_workers: int = 0,
        collate_fn=None,
        pin_memory: bool = False,
        drop_last: bool = False,
        timeout: float = 0,
        worker_init_fn=None,
        multiprocessing_context=None,
        generator=None,
        *,
        prefetch_factor: int | None = None,
        persistent_workers: bool = False,
        pin_memory_device: str = "",
        in_order: bool = True,
        seed: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        dtype=None,
        scale: float | Sequence[float | None] | None = None,
        prefetch: bool | None = None,
    ) -> None:
        torch = torch_module()
        # torch's own checks, in its order and with its messages.
        num_workers = check_int(num_workers, "num_workers", -(2**63))
        if num_workers < 0:
            raise ValueError("num_workers option should be non-negative; use num_workers=0 to disable multiprocessing.")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float, np.integer, np.floating)):
            raise TypeError(f"timeout must be a number, got {type(timeout).__name__}")
        if timeout < 0:
            raise ValueError("timeout option should be non-negative")
        if num_workers == 0 and prefetch_factor is not None:
            raise ValueError(
                "prefetch_factor option could only be specified in multiprocessing.let num_workers > 0 to "
                "enable multiprocessing, otherwise set prefetch_factor to None."
            )
        elif num_workers > 0 and prefetch_factor is None:
            prefetch_factor = 2
        elif prefetch_factor is not None:
            prefetch_factor = check_int(prefetch_factor, "prefetch_factor", -(2**63))
            if prefetch_factor < 0:
                raise ValueError("prefetch_factor option should be non-negative")
        if persistent_workers and num_workers == 0:
            raise ValueError("persistent_workers option needs num_workers > 0")
        for name, flag in (
            ("pin_memory", pin_memory),
            ("drop_last", drop_last),
            ("persistent_workers", persistent_workers),
            ("in_order", in_order),
        ):
            if not isinstance(flag, (bool, np.bool_)):
                raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
        if shuffle is not None and not isinstance(shuffle, (bool, np.bool_)):
            raise TypeError(f"shuffle must be a bool or None, got {type(shuffle).__name__}")
        if prefetch is not None and not isinstance(prefetch, (bool, np.bool_)):
            raise TypeError(f"prefetch must be None or a bool, got {type(prefetch).__name__}")
        if collate_fn is not None and not callable(collate_fn):
            raise TypeError(f"collate_fn must be callable or None, got {type(collate_fn).__name__}")
        shuffle, drop_last = bool(shuffle), bool(drop_last)
        if sampler is not None and shuffle:
            raise ValueError("sampler option is mutually exclusive with shuffle")
        if batch_sampler is not None:
            if batch_size != 1 or shuffle or sampler is not None or drop_last:
                raise ValueError(
                    "batch_sampler option is mutually exclusive with batch_size, shuffle, sampler, and drop_last"
                )
            batch_size = None
        elif batch_size is None and drop_last:
            raise ValueError("batch_size=None option disables auto-batching and is mutually exclusive with drop_last")
        custom_order = sampler is not None or batch_sampler is not None
        if custom_order and seed is not None:
            raise ValueError(
                "seed= drives fastreg's own shuffle; with sampler= or batch_sampler= the sampler decides the order"
            )

        self.num_workers, self.prefetch_factor, self.timeout = num_workers, prefetch_factor, timeout
        self.worker_init_fn, self.in_order = worker_init_fn, bool(in_order)
        self.multiprocessing_context = _check_multiprocessing_context(multiprocessing_context, num_workers)
        self.pin_memory, self.pin_memory_device = bool(pin_memory), pin_memory_device
        self.persistent_workers = bool(persistent_workers)
        self.batch_size = None if batch_size is None else check_int(batch_size, "batch_size", 1)
        self.shuffle, self.drop_last = shuffle, drop_last
        self._prefetch = -1 if prefetch is None else int(bool(prefetch))

        items, self._single, self._index_map = _dataset_items(dataset)
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
        rows = self._arrays[0].shape[0]
        for i, a in enumerate(self._arrays[1:], 1):
            if a.shape[0] != rows:
                raise ValueError(f"dataset[{i}] has {a.shape[0]} rows but dataset[0] has {rows}: lengths must match")
        n = rows if self._index_map is None else len(self._index_map)
        if n == 0 and shuffle:
            raise ValueError(_EMPTY_SHUFFLE_ERROR)  # torch's RandomSampler refuses it too
        self._n = n
        self._to_f32, self._scales = _conversions(self._arrays, dtype, scale)

        if custom_order:
            if (rank is not None and rank != 0) or (world_size is not None and world_size != 1):
                raise ValueError(
                    "rank/world_size shard fastreg's own order; with sampler= or batch_sampler= "
                    "shard in the sampler (e.g. DistributedSampler)"
                )
            rank, world_size = 0, 1
        self.rank, self.world_size = _distributed_defaults(rank, world_size)
        if self.drop_last and n % self.world_size:
            self._per_rank = math.ceil((n - self.world_size) / self.world_size)
        else:
            self._per_rank = math.ceil(n / self.world_size)

        if generator is not None:
            if torch is None or not isinstance(generator, torch.Generator):
                raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
            if generator.device.type != "cpu":
                raise ValueError(f"generator must be a CPU torch.Generator, got one on {generator.device}")
            if seed is not None:
                raise ValueError("pass either generator= (torch's RNG) or seed= (fastreg's RNG), not both")
            if self.world_size > 1:
                raise ValueError(
                    "generator= reproduces torch's single-process DataLoader; use seed= with world_size > 1"
                )
        # torch's global RNG orders the rows as torch's RandomSampler would: nothing is
        # drawn here, a base seed at each iter() and the epoch's seed at its first batch.
        self._torch_rng = generator is None and seed is None and torch is not None and self.world_size == 1
        if generator is None and seed is None and not self._torch_rng and not custom_order:
            seed = 0 if self.world_size > 1 else int(np.random.SeedSequence().entropy) % 2**64
        if seed is not None:
            seed = check_int(seed, "seed", 0, 2**64 - 1)
        self.generator, self.seed = generator, seed

        # The attributes torch's DataLoader has, with the objects it would make.
        torch_data = torch.utils.data if torch is not None else None
        if sampler is None:
            if torch_data is not None and (self._torch_rng or generator is not None):
                sized = dataset if isinstance(dataset, torch_data.Dataset) else range(n)
                sampler = (
                    torch_data.RandomSampler(sized, generator=generator)
                    if shuffle
                    else torch_data.SequentialSampler(sized)
                )
            else:
                sampler = _EpochSampler(self)
        if self.batch_size is not None and batch_sampler is None:
            batch_sampler = (
                torch_data.BatchSampler(sampler, self.batch_size, drop_last)
                if torch_data is not None
                else _BatchIndices(sampler, self.batch_size, drop_last)
            )
        self.sampler, self.batch_sampler = sampler, batch_sampler
        if custom_order:  # the indices come from these objects, one batch at a time
            self._index_sampler = batch_sampler if batch_sampler is not None else sampler
        else:
            self._index_sampler = None
        # Torch batches are what default_collate/default_convert would make of them; a
        # collate_fn given for NumPy batches is applied (default_collate makes tensors).
        default = (
            torch_data is not None
            and self._torch_out
            and collate_fn in (torch_data.default_collate, torch_data.default_convert)
        )
        self._collate = None if collate_fn is None or default else collate_fn
        if collate_fn is None and torch_data is not None:  # what torch's loader holds
            collate_fn = torch_data.default_collate if batch_sampler is not None else torch_data.default_convert
        self.collate_fn = collate_fn

        # Prefetched batch buffers, reused epoch after epoch (freed with the loader).
        self._pool = _core.LoaderPool()
        self._auto_epoch = 0
        self._pinned_epoch: int | None = None
        self._resume: tuple | None = None
        self._last: weakref.ref | None = None
        self._last_info: tuple = (0, None, None)
        self._initialized = True

    def __setattr__(self, name: str, value) -> None:
        if name in _FROZEN and self.__dict__.get("_initialized"):
            raise ValueError(f"{name} attribute should not be set after {type(self).__name__} is initialized")
        super().__setattr__(name, value)

    def __len__(self) -> int:
        """Batches per epoch (for this rank): ``N // b`` with drop_last, else ``ceil(N / b)``
        (samples with ``batch_size=None``; ``len`` of the sampler given)."""
        if self._index_sampler is not None:
            return len(self._index_sampler)
        if self.batch_size is None:
            return self._per_rank
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
        self._pinned_epoch = check_int(epoch, "epoch", 0)
        self._resume = None

    def _rows(self, order: np.ndarray) -> np.ndarray:
        """Positions in the dataset -> rows of the arrays (through a Subset's index map)."""
        if self._index_map is None:
            return order
        return self._index_map[order]

    def _positions(self, epoch: int) -> np.ndarray:
        """This rank's dataset positions for ``epoch`` (fastreg's RNG), DistributedSampler's rules."""
        n, ws = self._n, self.world_size
        order = _core.random_permutation(n, self.seed, epoch) if self.shuffle else np.arange(n, dtype=np.int64)
        if ws > 1:
            total = self._per_rank * ws
            order = np.resize(order, total) if total > n else order[:total]  # pad by wrapping around
            order = np.ascontiguousarray(order[self.rank :: ws])
        return order

    def _order(self, epoch: int) -> np.ndarray:
        """This rank's rows of the arrays for ``epoch`` (fastreg's RNG)."""
        return self._rows(self._positions(epoch))

    def _to_tensor(self):
        """The function that turns a NumPy batch into the batch handed out (None: as is)."""
        if not self._torch_out:
            return None
        torch = torch_module()
        if self.pin_memory and _accelerator_available(torch):
            return lambda a: torch.from_numpy(a).pin_memory()
        return torch.from_numpy

    def __iter__(self) -> Iterator:
        """A fresh iterator over one epoch's batches (its ``__next__`` runs in C++)."""
        torch = torch_module()
        if torch is not None and self.pin_memory:
            _warn_pin_memory(torch, self.pin_memory_device)
        if self._index_sampler is not None:
            # torch makes the sampler's iterator before it draws the base seed.
            sampler_iter = iter(self._index_sampler)
            if torch is not None:
                _draw_seed(torch, self.generator)  # _BaseDataLoaderIter's base seed
            return self._collated(self._sampled(sampler_iter))
        if self._resume is not None:
            epoch, first_batch, gen_state, sampler_seed = self._resume
            self._resume = None
        else:
            epoch = self.epoch
            first_batch, gen_state, sampler_seed = 0, None, None
        if self._pinned_epoch is None:
            self._auto_epoch = epoch + 1
        order, order_fn, on_exhaust, drawn = None, None, None, None
        n, g = self._n, self.generator
        if g is not None:
            if gen_state is not None:
                g.set_state(gen_state)
            gen_state = g.get_state()
            # torch's _BaseDataLoaderIter draws a base seed when the iterator is made ...
            _draw_seed(torch, g)
            if self.shuffle:
                # ... RandomSampler draws the order at the first batch, and one more
                # permutation (discarded) when a batch asks for an index past the end.
                order_fn = lambda: self._rows(torch.randperm(n, generator=g).numpy())  # noqa: E731
                on_exhaust = lambda: torch.randperm(n, generator=g)  # noqa: E731
            else:
                order = self._rows(np.arange(n, dtype=np.int64))
        elif self._torch_rng:
            _draw_seed(torch)  # the base seed, from the global RNG, even with shuffle=False
            if self.shuffle:
                # RandomSampler without a generator: at the first batch it draws a seed from
                # the global RNG and permutes with a generator of its own (whose later
                # draws touch nothing else).
                drawn = [sampler_seed]

                def order_fn():
                    if drawn[0] is None:
                        drawn[0] = _draw_seed(torch)
                    own = torch.Generator()
                    own.manual_seed(drawn[0])
                    return self._rows(torch.randperm(n, generator=own).numpy())
            else:
                order = self._rows(np.arange(n, dtype=np.int64))
        else:
            if torch is not None:
                _draw_seed(torch)  # torch's loader draws its base seed whatever the sampler
            order = self._order(epoch)
        unbatched = self.batch_size is None
        it = _core.BatchIter(
            arrays=self._arrays,
            u8_to_f32=self._to_f32,
            scales=self._scales,
            batch_size=1 if unbatched else self.batch_size,
            order=order,
            order_fn=order_fn,
            drop_last=self.drop_last,
            first_batch=first_batch,
            on_exhaust=on_exhaust,
            to_tensor=self._to_tensor(),
            single=self._single,
            prefetch=self._prefetch,
            pool=self._pool,
            unbatched=unbatched,
        )
        _track(it)
        self._last = weakref.ref(it)
        self._last_info = (epoch, gen_state, drawn)
        return self._collated(it)

    def _sampled(self, sampler_iter) -> Iterator:
        """Batches (or samples, with batch_size=None) of the rows a sampler names, each
        gathered in one C++ call per array."""
        batched = self.batch_sampler is not None
        to_tensor, n = self._to_tensor(), self._n
        for item in sampler_iter:
            if is_tensor(item):
                item = item.detach().cpu().numpy()
            idx = np.asarray(item if batched else [item])
            if idx.dtype == np.bool_ or (idx.size and not np.issubdtype(idx.dtype, np.integer)) or idx.ndim != 1:
                what = "a batch of indices" if batched else "an index"
                raise TypeError(f"the sampler must yield {what} (ints), got {item!r}")
            idx = idx.astype(np.int64, copy=False)
            if idx.size and (idx.min() < -n or idx.max() >= n):
                bad = int(idx[(idx < -n) | (idx >= n)][0])
                raise IndexError(f"the sampler yielded index {bad}, out of range for a dataset of {n} rows")
            idx = self._rows(np.where(idx < 0, idx + n, idx))
            out = []
            for a, f32, s in zip(self._arrays, self._to_f32, self._scales):
                b = _core.gather_rows(a, idx, to_float32=f32, scale=s if f32 else 1.0)
                if not batched:
                    b = b.reshape(b.shape[1:])  # one sample: a view (0-d for a 1-D array)
                out.append(to_tensor(b) if to_tensor is not None else b)
            yield out[0] if self._single else out

    def _collated(self, it):
        """``it``, or its batches passed through a custom collate_fn as torch passes them:
        the list of samples (a sample is a tuple of rows, or a row for a single array)."""
        fn = self._collate
        if fn is None:
            return it
        return self._apply_collate(it, fn)

    def _apply_collate(self, it, fn) -> Iterator:
        batched = self.batch_sampler is not None
        for batch in it:
            if not batched:
                yield fn(batch if self._single else tuple(batch))
            elif self._single:
                yield fn(list(batch))
            else:
                yield fn(list(zip(*batch)))

    def _fingerprint(self) -> dict:
        return {
            "num_rows": self._n,
            "batch_size": self.batch_size,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
            "world_size": self.world_size,
            "rank": self.rank,
        }

    def _check_resumable(self) -> None:
        if self._index_sampler is not None:
            raise ValueError(
                "state_dict/load_state_dict are not supported with sampler= or batch_sampler= "
                "(fastreg cannot restore a sampler's position)"
            )

    def state_dict(self) -> dict:
        """Where iteration stands, to resume exactly mid-epoch with ``load_state_dict``.

        Refers to the most recent live iterator (its epoch and batches yielded so far);
        with none (or an exhausted one), to the start of the next epoch.
        """
        self._check_resumable()
        sd = self._fingerprint()
        it = self._last() if self._last is not None else None
        sampler_seed = None
        if self._resume is not None:
            epoch, done, gen_state, sampler_seed = self._resume
        elif it is not None and not it.done:
            epoch, gen_state, drawn = self._last_info
            done = it.next_batch
            sampler_seed = drawn[0] if drawn is not None else None
        else:
            epoch, done = self.epoch, 0
            gen_state = self.generator.get_state() if self.generator is not None else None
        sd.update(epoch=epoch, batches_yielded=done, epoch_pinned=self._pinned_epoch is not None, seed=self.seed)
        if gen_state is not None:
            sd["generator_state"] = gen_state.clone()
        if sampler_seed is not None:
            sd["sampler_seed"] = sampler_seed
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        """Resume from ``state_dict()``: the next iteration yields the rest of that epoch."""
        self._check_resumable()
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        for key, value in self._fingerprint().items():
            if key not in state_dict:
                raise ValueError(f"state_dict lacks '{key}'")
            if state_dict[key] != value:
                raise ValueError(f"state_dict was saved with {key}={state_dict[key]!r}, this loader has {value!r}")
        epoch = check_int(state_dict.get("epoch"), "state_dict['epoch']", 0)
        done = check_int(state_dict.get("batches_yielded"), "state_dict['batches_yielded']", 0)
        if done > len(self):
            raise ValueError(f"state_dict['batches_yielded'] = {done} exceeds the {len(self)} batches of an epoch")
        gen_state = state_dict.get("generator_state")
        if (self.generator is None) != (gen_state is None):
            raise ValueError("state_dict and this loader disagree on using a generator")
        sampler_seed = state_dict.get("sampler_seed")
        if self._torch_rng:
            if state_dict.get("seed") is not None:
                raise ValueError("state_dict was saved with seed= (fastreg's RNG); this loader uses torch's global RNG")
            if sampler_seed is not None:
                sampler_seed = check_int(sampler_seed, "state_dict['sampler_seed']", 0, 2**64 - 1)
        elif self.generator is None:
            self.seed = check_int(state_dict.get("seed"), "state_dict['seed']", 0, 2**64 - 1)
        self._pinned_epoch = epoch if state_dict.get("epoch_pinned") else None
        self._resume = (epoch, done, gen_state, sampler_seed)


def _accelerator_available(torch) -> bool:
    acc = getattr(torch, "accelerator", None)
    if acc is not None:
        return bool(acc.is_available())
    return bool(torch.cuda.is_available())


def _warn_pin_memory(torch, device: str) -> None:
    """The warnings torch's DataLoader gives for pin_memory=True when an iterator is made."""
    if device:
        warnings.warn(
            "pin_memory_device is deprecated, the current accelerator will be used as the device,"
            f"ignore pin_memory_device='{device}'.",
            stacklevel=3,
        )
    if not _accelerator_available(torch):
        warnings.warn(
            "'pin_memory' argument is set as true but no accelerator is found, then device pinned memory won't be used.",
            stacklevel=3,
        )


def data_iter(batch_size: int, features: ArrayLike, labels: ArrayLike) -> Iterator[list]:
    """d2l's from-scratch ``data_iter``: shuffled ``[features[b], labels[b]]`` batches (lists,
    as the DataLoader's; d2l's generator yields tuples, which unpack alike), the last one
    short. features: ``[N, ...]``, labels: ``[N, ...]`` (arrays or tensors)."""
    return iter(DataLoader((features, labels), batch_size, shuffle=True))


def load_array(data_arrays: Sequence, batch_size: int, is_train: bool = True) -> DataLoader:
    """d2l's concise ``load_array``: a loader over ``data_arrays`` (tensors or arrays sharing
    their first dimension), shuffled when ``is_train``."""
    return DataLoader(tuple(data_arrays), batch_size, shuffle=is_train)

import gc
import math
import os
import time

import numpy as np
import pytest

import fastreg
from _proc import os_threads, task_ids, wait_for_threads
from fastreg import DataLoader, _core, data_iter, load_array

torch = pytest.importorskip("torch")
from torch.utils.data import DataLoader as TorchDataLoader  # noqa: E402
from torch.utils.data import DistributedSampler, TensorDataset  # noqa: E402


def _dataset(rng, n, d=5, dtype=np.float32):
    """Features whose rows are random, and labels equal to the row index (to read the order)."""
    return rng.standard_normal((n, d)).astype(dtype), np.arange(n, dtype=np.int64)


needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")


@pytest.mark.parametrize("prefetch", [False, True])
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("n,bs", [(1, 1), (10, 3), (64, 8), (100, 1), (257, 32), (50, 200)])
def test_epoch_covers_each_row_once(rng, n, bs, drop_last, prefetch):
    X, y = _dataset(rng, n)
    loader = DataLoader((X, y), bs, shuffle=True, drop_last=drop_last, seed=int(rng.integers(2**63)), prefetch=prefetch)
    seen = []
    batches = list(loader)
    assert len(batches) == len(loader) == (n // bs if drop_last else math.ceil(n / bs))
    for xb, yb in batches:
        assert xb.dtype == np.float32 and yb.dtype == np.int64
        assert xb.shape == (len(yb), 5)
        np.testing.assert_array_equal(xb, X[yb])  # features travel with their labels
        seen.append(yb)
    seen = np.concatenate(seen) if seen else np.array([], dtype=np.int64)
    assert len(np.unique(seen)) == len(seen)
    if drop_last:
        assert len(seen) == (n // bs) * bs
        assert all(len(b[1]) == bs for b in batches)
    else:
        np.testing.assert_array_equal(np.sort(seen), np.arange(n))


def test_no_shuffle_keeps_order(rng):
    X, y = _dataset(rng, 23)
    batches = list(DataLoader((X, y), 5))
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), X)
    assert [len(b[1]) for b in batches] == [5, 5, 5, 5, 3]


@pytest.mark.parametrize("prefetch", [None, True])
@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("n,bs", [(103, 10), (100, 10), (50, 1), (40, 64), (300, 299)])
def test_matches_torch_dataloader_with_generator(rng, n, bs, drop_last, shuffle, prefetch):
    X = torch.from_numpy(rng.standard_normal((n, 3, 2)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 10, n))
    seed = int(rng.integers(2**62))
    g_ref, g_ours = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    ref = TorchDataLoader(TensorDataset(X, y), bs, shuffle=shuffle, drop_last=drop_last, generator=g_ref)
    ours = DataLoader(
        TensorDataset(X, y), bs, shuffle=shuffle, drop_last=drop_last, generator=g_ours, prefetch=prefetch
    )
    assert len(ours) == len(ref)
    for _epoch in range(3):
        got = iter(ours)
        for xb_ref, yb_ref in ref:
            xb, yb = next(got)
            assert isinstance(xb, torch.Tensor) and xb.dtype == xb_ref.dtype
            assert torch.equal(xb, xb_ref) and torch.equal(yb, yb_ref)
            # The generator advances at the same points within the epoch too.
            assert torch.equal(g_ours.get_state(), g_ref.get_state())
        with pytest.raises(StopIteration):
            next(got)
        assert torch.equal(g_ours.get_state(), g_ref.get_state())


def test_matches_torch_after_early_break(rng):
    X, y = (torch.from_numpy(a) for a in _dataset(rng, 57))
    g_ref, g_ours = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    ref = TorchDataLoader(TensorDataset(X, y), 4, shuffle=True, generator=g_ref)
    ours = DataLoader(TensorDataset(X, y), 4, shuffle=True, generator=g_ours)
    for stop in (3, None, 0, 5):
        got = [b[1] for _, b in zip(range(stop if stop is not None else 10**9), ours)]
        want = [b[1] for _, b in zip(range(stop if stop is not None else 10**9), ref)]
        assert len(got) == len(want)
        assert all(torch.equal(a, b) for a, b in zip(got, want))
        assert torch.equal(g_ours.get_state(), g_ref.get_state())


def test_seed_is_deterministic_and_epochs_differ(rng):
    X, y = _dataset(rng, 200)
    a, b = DataLoader((X, y), 16, shuffle=True, seed=7), DataLoader((X, y), 16, shuffle=True, seed=7)
    orders = []
    for _ in range(3):
        oa = np.concatenate([yb for _, yb in a])
        ob = np.concatenate([yb for _, yb in b])
        np.testing.assert_array_equal(oa, ob)
        orders.append(oa)
    assert not np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[1], orders[2])
    c = DataLoader((X, y), 16, shuffle=True, seed=8)
    assert not np.array_equal(np.concatenate([yb for _, yb in c]), orders[0])
    # set_epoch pins the epoch: same order every pass, equal to that epoch's auto order.
    c = DataLoader((X, y), 16, shuffle=True, seed=7)
    c.set_epoch(1)
    for _ in range(2):
        np.testing.assert_array_equal(np.concatenate([yb for _, yb in c]), orders[1])


def test_default_seed_follows_torch_manual_seed(rng):
    X, y = _dataset(rng, 50)
    torch.manual_seed(3)
    first = np.concatenate([yb for _, yb in DataLoader((X, y), 8, shuffle=True)])
    torch.manual_seed(3)
    again = np.concatenate([yb for _, yb in DataLoader((X, y), 8, shuffle=True)])
    np.testing.assert_array_equal(first, again)


def test_random_permutation_is_a_uniform_permutation():
    n = 10
    counts = np.zeros((n, n))
    trials = 4000
    for s in range(trials):
        p = _core.random_permutation(n, 12345, s)
        np.testing.assert_array_equal(np.sort(p), np.arange(n))
        counts[np.arange(n), p] += 1
    # Each value lands in each position with probability 1/n (loose 6-sigma bound).
    expected = trials / n
    assert np.abs(counts - expected).max() < 6 * math.sqrt(expected)
    assert len(_core.random_permutation(0, 1)) == 0


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("n,world", [(10, 3), (12, 4), (7, 2), (5, 5), (3, 4)])
def test_sharding_follows_distributed_sampler(rng, n, world, drop_last, shuffle):
    X, y = _dataset(rng, n)
    per_rank = []
    for r in range(world):
        loader = DataLoader((X, y), 2, shuffle=shuffle, drop_last=drop_last, seed=5, rank=r, world_size=world)
        idx = np.concatenate([yb for _, yb in loader]) if len(loader) else np.array([], dtype=np.int64)
        per_rank.append(idx)
        if not shuffle:  # with no shuffle, the index lists are DistributedSampler's exactly
            ref = list(
                DistributedSampler(
                    TensorDataset(torch.from_numpy(y)), num_replicas=world, rank=r, shuffle=False, drop_last=drop_last
                )
            )
            want = ref[: len(loader) * 2] if drop_last else ref
            np.testing.assert_array_equal(idx, want)
    sizes = {len(p) for p in per_rank}
    assert len(sizes) == 1  # every rank sees the same number of batches
    allidx = np.concatenate(per_rank)
    if not drop_last:
        np.testing.assert_array_equal(np.unique(allidx), np.arange(n))  # all rows covered
        assert len(allidx) == math.ceil(n / world) * world  # padding only up to a multiple
    # Without padding (drop_last, or a multiple), ranks are disjoint.
    if drop_last or n % world == 0:
        assert len(np.unique(allidx)) == len(allidx)


@pytest.mark.parametrize("use_generator", [False, True])
@pytest.mark.parametrize("prefetch", [False, True])
def test_resume_mid_epoch(rng, use_generator, prefetch):
    X, y = (torch.from_numpy(a) for a in _dataset(rng, 97))

    def make():
        g = torch.Generator().manual_seed(11) if use_generator else None
        return DataLoader(
            TensorDataset(X, y), 8, shuffle=True, generator=g, seed=None if use_generator else 4, prefetch=prefetch
        )

    full = make()
    next(iter(full))  # epoch 0 partly consumed, then abandoned
    gc.collect()
    epoch1 = [b[1] for b in full]
    epoch2 = [b[1] for b in full]
    ref = make()
    next(iter(ref))
    it = iter(ref)
    head = [next(it)[1] for _ in range(5)]
    sd = ref.state_dict()
    assert sd["batches_yielded"] == 5 and sd["epoch"] == 1
    resumed = make()
    resumed.load_state_dict(sd)
    tail = [b[1] for b in resumed]
    got = head + tail
    assert len(got) == len(epoch1)
    assert all(torch.equal(a, b) for a, b in zip(got, epoch1))
    assert all(torch.equal(a, b) for a, b in zip([b[1] for b in resumed], epoch2))  # and the epoch after


def test_state_dict_rejects_another_loader(rng):
    X, y = _dataset(rng, 20)
    sd = DataLoader((X, y), 4, shuffle=True, seed=1).state_dict()
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader((X, y), 5, shuffle=True, seed=1).load_state_dict(sd)
    with pytest.raises(ValueError, match="batches_yielded"):
        DataLoader((X, y), 4, shuffle=True, seed=1).load_state_dict({**sd, "batches_yielded": 99})


@pytest.mark.parametrize("prefetch", [False, True])
def test_kept_batches_do_not_change(rng, prefetch):
    X, y = _dataset(rng, 3000, d=64)
    loader = DataLoader((X, y), 256, shuffle=True, seed=2, prefetch=prefetch)
    for _ in range(2):
        kept = [(xb, yb, xb.copy()) for xb, yb in loader]
        for _ in loader:  # another epoch, recycling buffers the kept batches do not hold
            pass
        for xb, yb, snapshot in kept:
            np.testing.assert_array_equal(xb, snapshot)
            np.testing.assert_array_equal(xb, X[yb])


@pytest.mark.parametrize("prefetch", [None, False])
@pytest.mark.parametrize("bs", [1, 3, 50])
def test_small_batches_are_independent(rng, bs, prefetch):
    # Small batches are views of a chunk gathered ~128 KiB at a time: 2000 rows of
    # 168 bytes span three chunks, the last batch of the epoch is short for bs=3 and 50.
    X = rng.standard_normal((2000, 2, 20)).astype(np.float32)
    y = np.arange(2000, dtype=np.int64)
    loader = DataLoader((X, y), bs, shuffle=True, seed=int(rng.integers(2**63)), prefetch=prefetch)
    kept = list(loader)
    assert len(kept) == len(loader) and len(kept[-1][1]) == 2000 - (len(kept) - 1) * bs
    np.testing.assert_array_equal(np.sort(np.concatenate([yb for _, yb in kept])), y)
    for xb, yb in kept:
        assert xb.shape == (len(yb), 2, 20) and xb.flags.c_contiguous and xb.flags.writeable
        assert yb.flags.c_contiguous and yb.flags.writeable
        np.testing.assert_array_equal(xb, X[yb])
    snapshot = [(xb.copy(), yb.copy()) for xb, yb in kept]
    x_before = X.copy()
    # Writing into one kept batch changes neither its neighbours nor the source ...
    for i in (0, len(kept) // 2, len(kept) - 1):
        kept[i][0][...] = -1.0
        kept[i][1][...] = -1
        snapshot[i] = (np.full_like(snapshot[i][0], -1.0), np.full_like(snapshot[i][1], -1))
    for _ in range(2):  # ... nor do later epochs
        for xb, yb in loader:
            np.testing.assert_array_equal(xb, X[yb])
    for (xb, yb), (xs, ys) in zip(kept, snapshot):
        np.testing.assert_array_equal(xb, xs)
        np.testing.assert_array_equal(yb, ys)
    np.testing.assert_array_equal(X, x_before)


def test_small_batches_as_tensors(rng):
    X, y = (torch.from_numpy(a) for a in _dataset(rng, 999, d=3))
    batches = list(DataLoader(TensorDataset(X, y), 2, shuffle=True, seed=1))
    assert len(batches) == 500 and len(batches[-1][1]) == 1
    for xb, yb in batches:
        assert isinstance(xb, torch.Tensor) and isinstance(yb, torch.Tensor)
        assert torch.equal(xb, X[yb])
    single = list(DataLoader(y, 4))  # a single array: plain batches, not tuples
    assert all(isinstance(b, torch.Tensor) for b in single)
    assert torch.equal(torch.cat(single), y)


def test_consumer_does_not_wait_for_a_starved_worker(rng):
    # Each worker sleeps 2 s after claiming a batch, as one that gets no core would
    # (it runs at idle priority). The consumer gathers those batches itself instead of
    # waiting, drops nothing and yields nothing twice; closing wakes the sleeper.
    X, y = _dataset(rng, 400, d=16)
    order = rng.permutation(400)
    start = time.perf_counter()
    it = _core.BatchIter(
        arrays=[X, y],
        u8_to_f32=[False, False],
        scales=[1.0, 1.0],
        batch_size=16,
        order=order,
        prefetch=1,
        worker_delay_us=2_000_000,
    )
    got = []
    for xb, yb in it:
        np.testing.assert_array_equal(xb, X[yb])
        got.append(yb)
    assert it.done and not it.prefetching
    np.testing.assert_array_equal(np.concatenate(got), order)
    assert time.perf_counter() - start < 1.5  # 25 batches: waiting on the worker would take > 2 s


@needs_proc
@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux-only")
def test_prefetch_workers_run_at_idle_priority(rng):
    X, y = _dataset(rng, 40000, d=256)  # 1 MiB batches: prefetched; 40 of them keep the workers busy
    before = task_ids()
    it = iter(DataLoader((X, y), 1024, shuffle=True, seed=0))
    next(it)
    workers = task_ids() - before
    assert workers and it.prefetching
    policies = set()
    for t in workers:
        try:
            policies.add(os.sched_getscheduler(int(t)))
        except ProcessLookupError:  # a thread that ended since the listing
            pass
    assert policies == {os.SCHED_IDLE}
    assert os.sched_getscheduler(0) != os.SCHED_IDLE  # the caller's own thread is untouched
    it.close()


@needs_proc
def test_no_thread_outlives_its_iterator(rng):
    X, y = _dataset(rng, 4000, d=256)  # 1 MiB batches: prefetched
    loader = DataLoader((X, y), 1024, shuffle=True, seed=0)
    before = os_threads()
    it = iter(loader)
    next(it)
    assert it.prefetching and os_threads() > before
    del it  # dropped mid-epoch
    assert wait_for_threads(before) <= before
    for i, _ in enumerate(loader):  # early break
        if i == 1:
            break
    gc.collect()
    assert wait_for_threads(before) <= before
    with pytest.raises(RuntimeError, match="consumer"):
        for _ in loader:
            raise RuntimeError("consumer failed")
    gc.collect()
    assert wait_for_threads(before) <= before
    it = iter(loader)
    list(it)  # exhaustion stops the threads even while the iterator lives
    assert it.done and not it.prefetching and wait_for_threads(before) <= before
    it = iter(loader)
    next(it)
    it.close()
    assert wait_for_threads(before) <= before
    with pytest.raises(StopIteration):
        next(it)


def test_memmap_input(tmp_path, rng):
    X, y = _dataset(rng, 500, d=33)
    np.save(tmp_path / "X.npy", X)
    Xm = np.load(tmp_path / "X.npy", mmap_mode="r")
    assert isinstance(Xm, np.memmap) and not Xm.flags.writeable
    for xb, yb in DataLoader((Xm, y), 64, shuffle=True, seed=3):
        assert type(xb) is np.ndarray and xb.flags.writeable
        np.testing.assert_array_equal(xb, X[yb])


@pytest.mark.parametrize("bs", [1, 7, 256])
def test_uint8_to_float32_fused(rng, simd_levels, bs):
    X8 = rng.integers(0, 256, (600, 28, 28), dtype=np.uint8)
    y = np.arange(600)
    for level in simd_levels:
        fastreg.set_simd_level(level)
        for xb, yb in DataLoader((X8, y), bs, shuffle=True, seed=1, dtype=np.float32, scale=1 / 255):
            assert xb.dtype == np.float32 and xb.shape == (len(yb), 28, 28)
            np.testing.assert_array_equal(xb, X8[yb].astype(np.float32) * np.float32(1 / 255))
            # and within one rounding of ToTensor's division
            np.testing.assert_allclose(xb, X8[yb].astype(np.float64) / 255, rtol=1e-7, atol=0)
    tX, ty = torch.from_numpy(X8), torch.from_numpy(y)
    xb, yb = next(iter(DataLoader(TensorDataset(tX, ty), 5, dtype=torch.float32, scale=2.0)))
    assert xb.dtype == torch.float32 and torch.equal(xb, tX[:5].float() * 2)


def test_gather_rows_threaded_matches_numpy(rng, simd_levels):
    X = rng.standard_normal((20000, 100)).astype(np.float32)  # 8 MB gathers: several threads
    idx = rng.integers(0, len(X), 15000)
    np.testing.assert_array_equal(_core.gather_rows(X, idx), X[idx])
    X8 = rng.integers(0, 256, (20000, 300), dtype=np.uint8)
    for level in simd_levels:
        fastreg.set_simd_level(level)
        np.testing.assert_array_equal(
            _core.gather_rows(X8, idx, to_float32=True, scale=0.5), X8[idx].astype(np.float32) * np.float32(0.5)
        )
    for dt in (np.int8, np.int16, np.float64, np.complex128, np.bool_):  # the 1-, 2-, 8-, 16-byte paths
        a = rng.integers(0, 100, 50).astype(dt)
        np.testing.assert_array_equal(_core.gather_rows(a, idx[:30] % 50), a[idx[:30] % 50])
    # Rows of 256 bytes and up are copied four at a time, a cache line of each in turn:
    # row lengths around whole lines, and index counts around whole groups.
    for dt, width in (
        (np.float32, 64),
        (np.float32, 65),
        (np.float32, 80),
        (np.float32, 784),
        (np.uint8, 256),
        (np.uint8, 300),
        (np.uint8, 3137),
        (np.float64, 33),
    ):
        A = rng.integers(0, 100, (50, width)).astype(dt)
        for count in (1, 3, 4, 5, 8, 9, 13, 40):
            sel = rng.integers(0, 50, count)
            np.testing.assert_array_equal(_core.gather_rows(A, sel), A[sel])
    with pytest.raises(IndexError, match=r"idx\[1\] = 20000"):
        _core.gather_rows(X, np.array([0, 20000]))
    with pytest.raises(IndexError):
        _core.gather_rows(X, np.array([-1]))


def test_outputs_follow_inputs(rng):
    X = rng.standard_normal((30, 2, 3))
    y = rng.integers(0, 3, 30).astype(np.int32)
    xb, yb = next(iter(DataLoader([X, y], 4)))
    assert isinstance(xb, np.ndarray) and xb.dtype == np.float64 and xb.shape == (4, 2, 3)
    assert yb.dtype == np.int32 and yb.shape == (4,)
    tb = next(iter(DataLoader(torch.from_numpy(X), 4)))  # a single tensor gives single batches
    assert isinstance(tb, torch.Tensor) and tb.dtype == torch.float64 and torch.equal(tb, torch.from_numpy(X[:4]))

    class Holder:
        arrays = (X, y)

    np.testing.assert_array_equal(next(iter(DataLoader(Holder(), 3)))[0], X[:3])


def test_non_contiguous_inputs_are_copied(rng):
    base = rng.standard_normal((40, 10)).astype(np.float32)
    for X in (base[:, ::2], base[::-1], base.T[:5].T, np.asfortranarray(base)):
        y = np.arange(len(X))
        for xb, yb in DataLoader((X, y), 6, shuffle=True, seed=0):
            np.testing.assert_array_equal(xb, X[yb])
    t = torch.from_numpy(base).t()  # a transposed tensor
    for xb in DataLoader(t, 3):
        assert xb.is_contiguous()
    requires_grad = torch.randn(8, 2, requires_grad=True)
    assert torch.equal(next(iter(DataLoader(requires_grad, 8))), requires_grad.detach())


def test_d2l_data_iter_and_load_array(rng):
    X, y = (torch.from_numpy(a) for a in _dataset(rng, 1000))
    batches = list(data_iter(10, X, y))
    assert len(batches) == 100 and all(len(b[0]) == 10 for b in batches)
    ids = torch.cat([b[1] for b in batches])
    assert torch.equal(ids.sort().values, y) and not torch.equal(ids, y)
    for xb, yb in batches:
        assert torch.equal(xb, X[yb])
    assert [len(b[0]) for b in data_iter(300, X, y)] == [300, 300, 300, 100]
    ordered = load_array((X, y), 300, is_train=False)
    assert isinstance(ordered, DataLoader) and len(ordered) == 4
    assert torch.equal(torch.cat([b[1] for b in ordered]), y)
    assert not torch.equal(torch.cat([b[1] for b in load_array((X, y), 300)]), y)


def test_bad_input(rng):
    X, y = _dataset(rng, 10)
    with pytest.raises(ValueError, match="dataset\\[1\\] has 9 rows"):
        DataLoader((X, y[:9]))
    for bs in (0, -3):
        with pytest.raises(ValueError, match=f"batch_size must be an int >= 1, got {bs}"):
            DataLoader((X, y), bs)
    for bs in (2.0, "4", True):
        with pytest.raises(TypeError, match="batch_size must be an int"):
            DataLoader((X, y), bs)
    with pytest.raises(ValueError, match="num_samples should be a positive integer value, but got num_samples=0"):
        DataLoader((X[:0], y[:0]), shuffle=True)  # torch's RandomSampler refuses it too
    with pytest.raises(ValueError, match="rank must be in \\[0, world_size=2\\), got 2"):
        DataLoader((X, y), rank=2, world_size=2)
    with pytest.raises(ValueError, match="world_size must be an int >= 1, got 0"):
        DataLoader((X, y), world_size=0)
    with pytest.raises(TypeError, match="object"):
        DataLoader((np.array([object()] * 10), y))
    with pytest.raises(ValueError, match="0-d"):
        DataLoader((np.array(1.0, dtype=np.float32),))
    with pytest.raises(TypeError, match="mixes torch tensors and NumPy"):
        DataLoader((torch.from_numpy(X), y))
    with pytest.raises(TypeError, match="generator must be a torch.Generator, got Generator"):
        DataLoader((X, y), shuffle=True, generator=np.random.default_rng(0))
    with pytest.raises(ValueError, match="not both"):
        DataLoader((X, y), shuffle=True, generator=torch.Generator(), seed=1)

    class Rows(torch.utils.data.Dataset):
        def __len__(self):
            return 10

        def __getitem__(self, i):
            return X[i]

    with pytest.raises(TypeError, match="map-style Dataset"):
        DataLoader(Rows())
    with pytest.raises(TypeError, match="map-style Dataset"):
        DataLoader(torch.utils.data.Subset(Rows(), [0, 1]))
    with pytest.raises(TypeError, match="numpy.ndarray or a torch.Tensor, got list"):
        DataLoader(([1, 2], y))
    with pytest.raises(TypeError, match="only conversion supported is uint8 -> float32"):
        DataLoader((X, y), dtype=np.float64)
    with pytest.raises(TypeError, match="only conversion supported"):
        DataLoader((X, y), scale=2.0)
    with pytest.raises(ValueError, match="scale must be finite"):
        DataLoader((X.astype(np.uint8), y), scale=float("nan"))
    with pytest.raises(ValueError, match="one entry per array"):
        DataLoader((X, y), dtype=[None])
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        DataLoader((X, y), seed=-1)
    with pytest.raises(ValueError, match="seed must be < 2\\*\\*64"):
        DataLoader((X, y), seed=2**64)
    with pytest.raises(TypeError, match="shuffle must be a bool"):
        DataLoader((X, y), shuffle="yes")
    with pytest.raises(ValueError, match="epoch must be an int >= 0"):
        DataLoader((X, y)).set_epoch(-1)
    # the binding checks what it is handed too
    with pytest.raises(IndexError, match="order\\[0\\] = 10 is out of range for 10 rows"):
        _core.BatchIter(arrays=[X], u8_to_f32=[False], scales=[1.0], batch_size=1, order=np.array([10]), single=True)
    with pytest.raises(TypeError, match="int64"):
        _core.BatchIter(
            arrays=[X], u8_to_f32=[False], scales=[1.0], batch_size=1, order=np.array([0], dtype=np.int32), single=True
        )
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.BatchIter(
            arrays=[X[:, ::2]], u8_to_f32=[False], scales=[1.0], batch_size=1, order=np.array([0]), single=True
        )
    with pytest.raises(TypeError, match="uint8"):
        _core.BatchIter(arrays=[X], u8_to_f32=[True], scales=[1.0], batch_size=1, order=np.array([0]), single=True)

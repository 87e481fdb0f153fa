"""fastreg.DataLoader against torch.utils.data.DataLoader: the same arguments, the same
batches, the same draws from torch's RNGs at the same moments, the same errors."""

import pickle
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import fastreg
from fastreg import DataLoader

torch = pytest.importorskip("torch")
from torch.utils.data import (  # noqa: E402
    BatchSampler,
    RandomSampler,
    SequentialSampler,
    Subset,
    SubsetRandomSampler,
    TensorDataset,
    WeightedRandomSampler,
    default_collate,
    random_split,
)
from torch.utils.data import DataLoader as TorchDataLoader  # noqa: E402


def _data(rng, n, d=3):
    """Random features, and labels equal to the row index (to read the order)."""
    return torch.from_numpy(rng.standard_normal((n, d)).astype(np.float32)), torch.arange(n)


def _assert_same(a, b):
    """Two batches (or samples) are equal: same container types, same tensors."""
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(a, b)
    else:
        assert a == b


def _run(make, epochs=2, seed=0, stop_after=None):
    """Seeds torch, builds a loader, runs `epochs` epochs (each cut after `stop_after`
    batches if given) and returns the batches and the global RNG's next draws."""
    torch.manual_seed(seed)
    loader = make()
    runs = []
    for _ in range(epochs):
        batches = []
        for b in loader:
            batches.append(b)
            if stop_after is not None and len(batches) == stop_after:
                break
        runs.append(batches)
    return runs, torch.rand(4)


def _compare(make_ours, make_torch, **kw):
    ours, tail_ours = _run(make_ours, **kw)
    ref, tail_ref = _run(make_torch, **kw)
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    assert torch.equal(tail_ours, tail_ref), "the global RNG was drawn differently"


# ----------------------------------------------------------------- randomness


def test_construction_draws_nothing(rng):
    X, y = _data(rng, 30)
    for kw in ({}, {"shuffle": True}, {"shuffle": True, "generator": torch.Generator()}):
        torch.manual_seed(0)
        DataLoader(TensorDataset(X, y), 10, **kw)
        got = torch.rand(3)
        torch.manual_seed(0)
        assert torch.equal(got, torch.rand(3)), kw


@pytest.mark.parametrize("use_generator", [False, True])
@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("n,bs,drop_last", [(30, 10, False), (31, 10, False), (31, 10, True), (7, 1, False)])
def test_global_rng_and_batches_match_torch(rng, shuffle, use_generator, n, bs, drop_last):
    X, y = _data(rng, n)

    def make(cls):
        g = torch.Generator().manual_seed(5) if use_generator else None
        return lambda: cls(TensorDataset(X, y), bs, shuffle=shuffle, drop_last=drop_last, generator=g)

    _compare(make(DataLoader), make(TorchDataLoader), epochs=3)
    # an epoch cut short draws what torch's does too, and the next one goes on alike
    _compare(make(DataLoader), make(TorchDataLoader), epochs=3, stop_after=1)
    _compare(make(DataLoader), make(TorchDataLoader), epochs=2, stop_after=0)


def test_numpy_inputs_follow_the_same_draws(rng):
    X, y = _data(rng, 40)
    ours, tail_ours = _run(lambda: DataLoader((X.numpy(), y.numpy()), 8, shuffle=True))
    ref, tail_ref = _run(lambda: TorchDataLoader(TensorDataset(X, y), 8, shuffle=True))
    for a, b in zip(ours, ref):
        np.testing.assert_array_equal(np.concatenate([yb for _, yb in a]), torch.cat([yb for _, yb in b]).numpy())
    assert torch.equal(tail_ours, tail_ref)


def test_seed_keeps_fastreg_rng_and_draws_only_the_base_seed(rng):
    X, y = _data(rng, 40)
    a = [yb for _, yb in DataLoader(TensorDataset(X, y), 8, shuffle=True, seed=3)]
    torch.manual_seed(1)
    b = [yb for _, yb in DataLoader(TensorDataset(X, y), 8, shuffle=True, seed=3)]
    assert all(torch.equal(u, v) for u, v in zip(a, b))  # the order depends on the seed only
    # like torch's loader with a sampler that draws nothing (DistributedSampler): one draw per iter()
    _, tail = _run(lambda: DataLoader(TensorDataset(X, y), 8, shuffle=True, seed=3))
    _, tail_ref = _run(lambda: TorchDataLoader(TensorDataset(X, y), 8, sampler=SequentialSampler(X)))
    assert torch.equal(tail, tail_ref)


@pytest.mark.parametrize("prefetch", [False, True])
def test_resume_mid_epoch_with_the_global_rng(rng, prefetch):
    X, y = _data(rng, 50)
    torch.manual_seed(2)
    loader = DataLoader(TensorDataset(X, y), 8, shuffle=True, prefetch=prefetch)
    it = iter(loader)
    head = [next(it)[1] for _ in range(3)]
    sd = loader.state_dict()
    rest = [b[1] for b in it]
    resumed = DataLoader(TensorDataset(X, y), 8, shuffle=True, prefetch=prefetch)
    resumed.load_state_dict(pickle.loads(pickle.dumps(sd)))
    again = [b[1] for b in resumed]
    assert len(head) + len(again) == len(loader)
    assert all(torch.equal(u, v) for u, v in zip(rest, again))
    with pytest.raises(ValueError, match="torch's global RNG"):
        resumed.load_state_dict({**sd, "seed": 4})


def test_without_torch_fastreg_rng_is_used():
    code = textwrap.dedent(
        """
        import sys
        import numpy as np
        import fastreg
        X, y = np.zeros((20, 2), np.float32), np.arange(20)
        loader = fastreg.DataLoader((X, y), 6, shuffle=True, num_workers=2)
        order = np.concatenate([yb for _, yb in loader])
        assert sorted(order) == list(range(20)) and loader.seed is not None
        fixed = [np.concatenate([yb for _, yb in fastreg.DataLoader((X, y), 6, shuffle=True, seed=9)])
                 for _ in range(2)]
        assert (fixed[0] == fixed[1]).all()
        assert [len(b) for b in loader.batch_sampler] == [6, 6, 6, 2]
        assert "torch" not in sys.modules
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


# --------------------------------------------------------------- torch's arguments


def test_torch_positional_order_and_worker_arguments(rng):
    X, y = _data(rng, 33)
    for kw in (
        dict(num_workers=4),  # d2l's load_data_fashion_mnist
        dict(
            num_workers=2,
            prefetch_factor=4,
            persistent_workers=True,
            timeout=5.0,
            in_order=False,
            worker_init_fn=lambda i: None,
            multiprocessing_context="spawn",
        ),
        dict(num_workers=0, timeout=0, in_order=True),
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no worker processes: no "excessive worker creation" warning
            ours = lambda kw=kw: DataLoader(TensorDataset(X, y), 8, True, **kw)  # noqa: E731
            _compare(ours, lambda: TorchDataLoader(TensorDataset(X, y), 8, True), epochs=2)
        loader = ours()
        for name, value in kw.items():
            if name == "multiprocessing_context":
                assert loader.multiprocessing_context.get_start_method() == value
            else:
                assert getattr(loader, name) is value or getattr(loader, name) == value
    # torch's positional order: dataset, batch_size, shuffle, sampler, batch_sampler, num_workers, collate_fn,
    # pin_memory, drop_last
    ours = lambda: DataLoader(TensorDataset(X, y), 8, None, None, None, 0, None, False, True)  # noqa: E731
    _compare(ours, lambda: TorchDataLoader(TensorDataset(X, y), 8, None, None, None, 0, None, False, True))


def test_shuffle_none_is_no_shuffle(rng):
    X, y = _data(rng, 12)
    _compare(
        lambda: DataLoader(TensorDataset(X, y), 5, shuffle=None),
        lambda: TorchDataLoader(TensorDataset(X, y), 5, shuffle=None),
    )


def _torch_error(make):
    with pytest.raises((ValueError, TypeError)) as info:
        make(TorchDataLoader)
    return info.type, str(info.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(num_workers=-1),
        dict(timeout=-1),
        dict(prefetch_factor=2),
        dict(num_workers=2, prefetch_factor=-1),
        dict(persistent_workers=True),
        dict(multiprocessing_context="spawn"),
        dict(num_workers=1, multiprocessing_context="no-such-method"),
        dict(num_workers=1, multiprocessing_context=3),
        dict(sampler=[0, 1], shuffle=True),
        dict(batch_sampler=[[0, 1]], batch_size=2),
        dict(batch_sampler=[[0, 1]], shuffle=True),
        dict(batch_sampler=[[0, 1]], sampler=[0, 1]),
        dict(batch_sampler=[[0, 1]], drop_last=True),
        dict(batch_size=None, drop_last=True),
    ],
)
def test_torch_argument_errors(rng, kwargs):
    X, y = _data(rng, 10)
    kind, message = _torch_error(lambda cls: cls(TensorDataset(X, y), **kwargs))
    with pytest.raises(kind) as info:
        DataLoader(TensorDataset(X, y), **kwargs)
    assert str(info.value) == message


def test_empty_dataset_yields_nothing(rng):
    X, y = _data(rng, 0)
    for kw in ({}, {"batch_size": None}, {"drop_last": True}):
        _compare(
            lambda kw=kw: DataLoader(TensorDataset(X, y), **kw),
            lambda kw=kw: TorchDataLoader(TensorDataset(X, y), **kw),
        )
        assert len(DataLoader(TensorDataset(X, y), **kw)) == 0
    assert list(DataLoader((X.numpy(), y.numpy()), 4)) == []
    kind, message = _torch_error(lambda cls: cls(TensorDataset(X, y), shuffle=True))
    with pytest.raises(kind, match=message):
        DataLoader(TensorDataset(X, y), shuffle=True)


@pytest.mark.parametrize("use_generator", [False, True])
@pytest.mark.parametrize("shuffle", [False, True])
def test_batch_size_none_yields_samples(rng, shuffle, use_generator):
    X, y = _data(rng, 9)
    for data in (TensorDataset(X, y), TensorDataset(X), X, Subset(TensorDataset(X, y), [4, 2, 7])):

        def make(cls, data=data):
            g = torch.Generator().manual_seed(3) if use_generator else None
            return lambda: cls(data, batch_size=None, shuffle=shuffle, generator=g)

        _compare(make(DataLoader), make(TorchDataLoader))
        assert len(make(DataLoader)()) == len(make(TorchDataLoader)())
    # NumPy in, NumPy out: one row (0-d for a 1-D array) per step
    xs = list(DataLoader((X.numpy(), y.numpy()), batch_size=None))
    assert all(xb.shape == (3,) and yb.shape == () for xb, yb in xs)
    np.testing.assert_array_equal(np.stack([yb for _, yb in xs]), y.numpy())


def test_batches_are_lists_like_default_collate(rng):
    X, y = _data(rng, 10)
    got = next(iter(DataLoader(TensorDataset(X, y), 4)))
    want = next(iter(TorchDataLoader(TensorDataset(X, y), 4)))
    _assert_same(got, want)
    _assert_same(next(iter(DataLoader(TensorDataset(X), 4))), next(iter(TorchDataLoader(TensorDataset(X), 4))))
    _assert_same(next(iter(DataLoader(X, 4))), next(iter(TorchDataLoader(X, 4))))
    assert type(next(iter(DataLoader((X.numpy(), y.numpy()), 4)))) is list


# ---------------------------------------------------------------- samplers, subsets


def _samplers(n, g):
    weights = torch.rand(n, generator=torch.Generator().manual_seed(1)) + 0.1
    return {
        "SubsetRandomSampler": lambda: SubsetRandomSampler(list(range(1, n, 2)), generator=g),
        "WeightedRandomSampler": lambda: WeightedRandomSampler(weights, 2 * n, generator=g),
        "WeightedRandomSampler-no-replacement": lambda: WeightedRandomSampler(
            weights, n // 2, replacement=False, generator=g
        ),
        "RandomSampler-replacement": lambda: RandomSampler(range(n), replacement=True, num_samples=70, generator=g),
        "SequentialSampler": lambda: SequentialSampler(range(n)),
        "list": lambda: [3, -1, 0, 5, 5],
    }


@pytest.mark.parametrize("use_generator", [False, True])
@pytest.mark.parametrize("name", list(_samplers(10, None)))
@pytest.mark.parametrize("batch_size,drop_last", [(4, False), (4, True), (None, False)])
def test_sampler(rng, name, use_generator, batch_size, drop_last):
    X, y = _data(rng, 20)
    X8 = torch.from_numpy(rng.integers(0, 256, (20, 2), dtype=np.uint8))

    def make(cls, data=None):
        data = TensorDataset(X, y) if data is None else data

        def build():
            g = torch.Generator().manual_seed(7) if use_generator else None
            sampler = _samplers(20, g)[name]()
            return cls(data, batch_size, sampler=sampler, drop_last=drop_last, generator=g)

        return build

    _compare(make(DataLoader), make(TorchDataLoader))
    assert len(make(DataLoader)()) == len(make(TorchDataLoader)())
    # through a Subset's index map, and a single tensor
    sub = Subset(TensorDataset(X, y), list(range(19, -1, -1)))
    _compare(make(DataLoader, sub), make(TorchDataLoader, sub))
    _compare(make(DataLoader, X), make(TorchDataLoader, X))
    # the uint8 -> float32 conversion applies too
    ours, _ = _run(
        lambda: DataLoader(
            TensorDataset(X8, y), batch_size, sampler=_samplers(20, None)[name](), dtype=torch.float32, scale=0.5
        )
    )
    for xb, yb in ours[0]:
        torch.testing.assert_close(xb, X8[yb].float() * 0.5, rtol=0, atol=0)


@pytest.mark.parametrize("use_generator", [False, True])
def test_batch_sampler(rng, use_generator):
    X, y = _data(rng, 23)

    def make(cls, kind):
        def build():
            g = torch.Generator().manual_seed(7) if use_generator else None
            bs = (
                BatchSampler(RandomSampler(range(23), generator=g), 5, drop_last=False)
                if kind == "torch"
                else [[0, 1, 2], [22], [5, 5, 5, 5, 5, 5, 5], torch.tensor([3, 4]), np.array([-2])]
            )
            return cls(TensorDataset(X, y), batch_sampler=bs, generator=g)

        return build

    for kind in ("torch", "lists"):
        _compare(make(DataLoader, kind), make(TorchDataLoader, kind))
        loader = make(DataLoader, kind)()
        assert loader.batch_size is None and loader.drop_last is False


def test_sampler_bad_indices(rng):
    X, y = _data(rng, 5)
    with pytest.raises(IndexError, match="the sampler yielded index 5, out of range for a dataset of 5 rows"):
        list(DataLoader(TensorDataset(X, y), 2, sampler=[0, 5]))
    with pytest.raises(TypeError, match="ints"):
        list(DataLoader(TensorDataset(X, y), 2, sampler=[0.5, 1.0]))
    with pytest.raises(ValueError, match="seed="):
        DataLoader(TensorDataset(X, y), 2, sampler=[0], seed=1)
    with pytest.raises(ValueError, match="DistributedSampler"):
        DataLoader(TensorDataset(X, y), 2, sampler=[0], world_size=2, rank=0)
    with pytest.raises(ValueError, match="sampler"):
        DataLoader(TensorDataset(X, y), 2, sampler=[0]).state_dict()


@pytest.mark.parametrize("shuffle", [False, True])
def test_subset_and_random_split(rng, shuffle):
    X, y = _data(rng, 30)
    ds = TensorDataset(X, y)
    torch.manual_seed(4)
    train, test = random_split(ds, [0.7, 0.3])
    nested = Subset(train, [5, -1, 0, 3])
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    for part in (train, test, nested, Subset(ds, torch.tensor([2, 2, 9])), Subset(ds, range(0, 30, 7))):
        _compare(
            lambda part=part: DataLoader(part, 4, shuffle=shuffle),
            lambda part=part: TorchDataLoader(part, 4, shuffle=shuffle),
        )
        _compare(
            lambda part=part: DataLoader(part, 4, shuffle=shuffle, generator=g()),
            lambda part=part: TorchDataLoader(part, 4, shuffle=shuffle, generator=g()),
        )
    with pytest.raises(IndexError, match="Subset.indices\\[1\\] = 30 is out of range for a dataset of 30 rows"):
        DataLoader(Subset(ds, [0, 30]))
    # sharding applies to the subset's positions
    sub = Subset(ds, list(range(29, 9, -1)))
    ranks = [torch.cat([yb for _, yb in DataLoader(sub, 3, rank=r, world_size=2, seed=0)]) for r in range(2)]
    assert sorted(torch.cat(ranks).tolist()) == list(range(10, 30))


def test_collate_fn(rng):
    X, y = _data(rng, 11)

    def stack_pairs(samples):
        xs, ys = zip(*samples)
        return {"x": torch.stack(xs) * 2, "y": list(ys)}

    def count(samples):
        return len(samples)

    for fn, bs in ((stack_pairs, 4), (count, 3), (default_collate, 4), (lambda s: s, None)):
        ours, tail = _run(lambda fn=fn, bs=bs: DataLoader(TensorDataset(X, y), bs, shuffle=True, collate_fn=fn))
        ref, tail_ref = _run(lambda fn=fn, bs=bs: TorchDataLoader(TensorDataset(X, y), bs, shuffle=True, collate_fn=fn))
        assert torch.equal(tail, tail_ref)
        for a, b in zip(ours[0], ref[0]):
            if isinstance(a, dict):
                assert torch.equal(a["x"], b["x"]) and all(torch.equal(u, v) for u, v in zip(a["y"], b["y"]))
            elif isinstance(a, int):
                assert a == b
            else:
                _assert_same(a, b)
    # default_collate given NumPy batches makes tensors, as torch's does
    xb, yb = next(iter(DataLoader((X.numpy(), y.numpy()), 4, collate_fn=default_collate)))
    assert torch.equal(xb, X[:4]) and torch.equal(yb, y[:4])
    with pytest.raises(TypeError, match="collate_fn must be callable"):
        DataLoader(TensorDataset(X, y), collate_fn="stack")


def test_attributes_torch_code_reads(rng):
    X, y = _data(rng, 20)
    g = torch.Generator()
    for kw in (
        dict(batch_size=4, shuffle=True),
        dict(batch_size=4, shuffle=True, generator=g, drop_last=True),
        dict(batch_size=None),
        dict(batch_size=3, sampler=SubsetRandomSampler([1, 2, 3])),
        dict(batch_sampler=[[1, 2], [3]]),
    ):
        ds = TensorDataset(X, y)
        ours, ref = DataLoader(ds, **kw), TorchDataLoader(ds, **kw)
        for name in (
            "batch_size",
            "drop_last",
            "num_workers",
            "generator",
            "dataset",
            "pin_memory",
            "timeout",
            "prefetch_factor",
            "persistent_workers",
            "worker_init_fn",
            "collate_fn",
            "in_order",
        ):
            assert getattr(ours, name) is getattr(ref, name) or getattr(ours, name) == getattr(ref, name), name
        assert type(ours.sampler) is type(ref.sampler)
        assert type(ours.batch_sampler) is type(ref.batch_sampler)
        assert len(ours) == len(ref)
        if ours.batch_sampler is not None and not isinstance(ours.batch_sampler, list):
            assert ours.batch_sampler.batch_size == ref.batch_sampler.batch_size
            assert len(ours.batch_sampler) == len(ref.batch_sampler)
        for name in ("batch_size", "sampler", "batch_sampler", "drop_last", "dataset"):
            with pytest.raises(ValueError, match=f"{name} attribute should not be set after DataLoader is initialized"):
                setattr(ours, name, None)
    # with fastreg's own RNG the sampler is fastreg's, and set_epoch reaches the loader
    loader = DataLoader(TensorDataset(X, y), 4, shuffle=True, seed=1)
    loader.sampler.set_epoch(3)
    assert loader.epoch == 3 and len(loader.sampler) == 20
    assert torch.equal(torch.tensor(list(loader.sampler)), torch.cat([yb for _, yb in loader]))
    # over a Subset it names positions in the subset, as torch's samplers do
    sub = Subset(TensorDataset(X, y), list(range(19, 4, -1)))
    loader = DataLoader(sub, 4, shuffle=True, seed=1)
    positions = list(loader.sampler)
    assert sorted(positions) == list(range(15))
    assert torch.equal(torch.cat([yb for _, yb in loader]), torch.tensor([sub.indices[p] for p in positions]))


def test_pin_memory(rng):
    X, y = _data(rng, 8)
    if torch.accelerator.is_available():
        xb, yb = next(iter(DataLoader(TensorDataset(X, y), 4, pin_memory=True)))
        assert xb.is_pinned() and yb.is_pinned() and torch.equal(xb, X[:4])
        return
    for cls in (TorchDataLoader, DataLoader):
        with pytest.warns(UserWarning) as record:
            batches = list(cls(TensorDataset(X, y), 4, pin_memory=True))
        assert torch.equal(torch.cat([b[0] for b in batches]), X)
        messages = [str(w.message) for w in record]
        if cls is TorchDataLoader:
            want = messages
    assert messages == want


# ---------------------------------------------------------------- memory safety


def test_resizing_a_source_mid_epoch_cannot_crash():
    """ndarray.resize(refcheck=False) reallocates the array's memory; while an epoch
    reads it, NumPy must refuse (the loader holds weak references), not free it."""
    code = textwrap.dedent(
        """
        import numpy as np, fastreg
        for prefetch in (False, True):
            for rows in (64, 4096):
                X = np.random.default_rng(0).standard_normal((rows, 256)).astype(np.float32)
                y = np.arange(rows)
                view = X[::1]  # resizing the array that owns the memory is refused too
                it = iter(fastreg.DataLoader((view, y), 16, shuffle=True, seed=0, prefetch=prefetch))
                xb, yb = next(it)
                for a in (X, y):
                    try:
                        a.resize((rows * 50,) + a.shape[1:], refcheck=False)
                    except ValueError as e:
                        assert "resize" in str(e)
                    else:
                        raise SystemExit("resize was allowed mid-epoch")
                total = sum(len(b) for _, b in it) + len(yb)
                assert total == rows, total
                del it
                X.resize((rows * 2, 256), refcheck=False)  # the epoch is over: allowed again
                a = np.ones((100, 8), np.float32)
                out = fastreg._core.gather_rows(a, np.arange(100))
                a.resize((10, 8), refcheck=False)
        print("ok")
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", (proc.returncode, proc.stderr[-2000:])


def test_fastreg_namespace_loader_is_the_same():
    assert fastreg.DataLoader is DataLoader

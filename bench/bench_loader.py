"""One shuffled epoch: fastreg.DataLoader vs torch's DataLoader, the BatchSampler-as-sampler
trick, d2l's data_iter and a NumPy fancy-index loop. Data: 60000x784 float32 + int64 labels
(Fashion-MNIST's shape). Slow references at batch 1 run on a 6000-row subset."""

import random

import numpy as np
import pytest

import fastreg

torch = pytest.importorskip("torch")
from torch.utils.data import BatchSampler, RandomSampler, TensorDataset  # noqa: E402
from torch.utils.data import DataLoader as TorchDataLoader  # noqa: E402

N, D = 60_000, 784


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N, D), dtype=np.float32)
    y = rng.integers(0, 10, N)
    X8 = rng.integers(0, 256, (N, D), dtype=np.uint8)
    return X, y, X8


def d2l_data_iter(batch_size, features, labels):
    """d2l 3.2's from-scratch iterator, verbatim."""
    num_examples = len(features)
    indices = list(range(num_examples))
    random.shuffle(indices)
    for i in range(0, num_examples, batch_size):
        batch_indices = torch.tensor(indices[i : min(i + batch_size, num_examples)])
        yield features[batch_indices], labels[batch_indices]


def numpy_loop(X, y, batch_size, rng):
    idx = rng.permutation(len(X))
    for i in range(0, len(X), batch_size):
        b = idx[i : i + batch_size]
        yield X[b], y[b]


def batch_sampler_trick(X, y, batch_size):
    """The known DataLoader speed-up: sample whole index batches, skip per-row collation."""
    ds = TensorDataset(X, y)
    sampler = BatchSampler(RandomSampler(ds), batch_size, drop_last=False)
    return TorchDataLoader(ds, sampler=sampler, batch_size=None)


def _check(batches, X, y, n):
    """Every batch pairs features with their labels and the epoch covers n rows."""
    rows = 0
    for xb, yb in batches:
        xb, yb = np.asarray(xb), np.asarray(yb)
        assert xb.shape[1:] == X.shape[1:] and len(xb) == len(yb)
        rows += len(yb)
    assert rows == n


def _epoch(make):
    def run():
        for _ in make():
            pass

    return run


CASES_256 = [
    "fastreg-numpy",
    "fastreg-torch",
    "torch-DataLoader",
    "torch-BatchSampler-trick",
    "d2l-data_iter",
    "numpy-loop",
]


@pytest.mark.parametrize("impl", CASES_256)
def test_epoch_batch256(benchmark, data, impl):
    X, y, _ = data
    benchmark.group = "epoch 60000x784 f32, batch 256"
    tX, ty = torch.from_numpy(X), torch.from_numpy(y)
    rng = np.random.default_rng(1)
    make = {
        "fastreg-numpy": lambda: fastreg.DataLoader((X, y), 256, shuffle=True, seed=0),
        "fastreg-torch": lambda: fastreg.DataLoader(TensorDataset(tX, ty), 256, shuffle=True, seed=0),
        "torch-DataLoader": lambda: TorchDataLoader(TensorDataset(tX, ty), 256, shuffle=True),
        "torch-BatchSampler-trick": lambda: batch_sampler_trick(tX, ty, 256),
        "d2l-data_iter": lambda: d2l_data_iter(256, tX, ty),
        "numpy-loop": lambda: numpy_loop(X, y, 256, rng),
    }[impl]
    _check(make(), X, y, N)
    benchmark(_epoch(make))


@pytest.mark.parametrize("impl", ["fastreg", "torch-DataLoader", "d2l-data_iter", "numpy-loop"])
def test_epoch_batch1_torch(benchmark, data, impl):
    X, y, _ = data
    n = 6000
    benchmark.group = "epoch 6000x784, batch 1, torch tensors"
    tX, ty = torch.from_numpy(X[:n]), torch.from_numpy(y[:n])
    rng = np.random.default_rng(1)
    make = {
        "fastreg": lambda: fastreg.DataLoader(TensorDataset(tX, ty), 1, shuffle=True, seed=0),
        "torch-DataLoader": lambda: TorchDataLoader(TensorDataset(tX, ty), 1, shuffle=True),
        "d2l-data_iter": lambda: d2l_data_iter(1, tX, ty),
        "numpy-loop": lambda: ((torch.from_numpy(a), torch.from_numpy(b)) for a, b in numpy_loop(X[:n], y[:n], 1, rng)),
    }[impl]
    _check(make(), X, y, n)
    benchmark(_epoch(make))


@pytest.mark.parametrize("impl", ["fastreg", "numpy-loop"])
def test_epoch_batch1_numpy(benchmark, data, impl):
    X, y, _ = data
    n = 6000
    benchmark.group = "epoch 6000x784, batch 1, numpy"
    Xs, ys = X[:n], y[:n]
    rng = np.random.default_rng(1)
    make = {
        "fastreg": lambda: fastreg.DataLoader((Xs, ys), 1, shuffle=True, seed=0),
        "numpy-loop": lambda: numpy_loop(Xs, ys, 1, rng),
    }[impl]
    _check(make(), X, y, n)
    benchmark(_epoch(make))


@pytest.mark.parametrize("impl", ["fastreg", "numpy-loop"])
def test_epoch_uint8_to_float32(benchmark, data, impl):
    _, y, X8 = data
    benchmark.group = "epoch 60000x784 u8 -> f32/255, batch 256"
    rng = np.random.default_rng(1)

    def numpy_u8():
        for xb, yb in numpy_loop(X8, y, 256, rng):
            yield xb.astype(np.float32) / 255, yb

    make = {
        "fastreg": lambda: fastreg.DataLoader((X8, y), 256, shuffle=True, seed=0, dtype=np.float32, scale=1 / 255),
        "numpy-loop": numpy_u8,
    }[impl]
    ids = np.arange(N)
    xb, rows = next(iter(fastreg.DataLoader((X8, ids), 256, shuffle=True, seed=0, dtype=np.float32, scale=1 / 255)))
    np.testing.assert_allclose(xb, X8[rows] / 255, rtol=1e-7)
    _check(make(), X8, y, N)
    benchmark(_epoch(make))


@pytest.mark.parametrize("impl", ["fastreg", "premade-batches"])
def test_overlap_with_compute(benchmark, data, impl):
    """A loop doing a fixed matmul per batch, fed by fastreg or by batches made in advance:
    equal times mean the gather is hidden behind the caller's work."""
    X, y, _ = data
    benchmark.group = "overlap: matmul per batch 256"
    W = np.random.default_rng(2).standard_normal((D, 512), dtype=np.float32)
    loader = fastreg.DataLoader((X, y), 256, shuffle=True, seed=0)
    premade = list(loader)

    def train(batches):
        for xb, _ in batches:
            np.maximum(xb @ W, 0)

    _check(premade, X, y, N)
    benchmark(lambda: train(loader if impl == "fastreg" else premade))

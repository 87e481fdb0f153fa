"""The cost of the data-parallel path: one softmax-regression epoch (60000 x 784 float32,
10 classes, batch 256, lr 0.1) trained

- fastreg-epoch-loop: single process, the whole epoch in C++ (fit(distributed=False));
- fastreg-data-parallel-1rank: the data-parallel path on a 1-rank gloo group (per batch:
  C++ gradient into a flat 7851-float buffer, torch.distributed.all_reduce, C++ SGD
  step), i.e. what each rank of a W-process run does, minus waiting for the others;
- torch-ddp-1rank: the reference, nn.Linear wrapped in DistributedDataParallel on the
  same group, batches by indexing, CrossEntropyLoss, optim.SGD.

The gap between the first two is the per-step overhead of the data-parallel path
(Python, the all-reduce call); a real W-rank run adds the all-reduce's network
latency per step (docs/distributed.md). With --benchmark-disable the data is 10x smaller.
"""

import numpy as np
import pytest

from fastreg import SoftmaxRegression

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")

N, D, C, BATCH, LR = 60_000, 784, 10, 256, 0.1


@pytest.fixture(scope="module")
def one_rank(tmp_path_factory):
    if not dist.is_available() or dist.is_initialized():
        pytest.skip("needs torch.distributed and no process group yet")
    store = tmp_path_factory.mktemp("dist") / "store"
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def _data(n):
    rng = np.random.default_rng(0)
    y = rng.integers(0, C, n)
    centers = rng.uniform(0, 1, (C, D))
    return np.clip(centers[y] + rng.normal(0, 0.3, (n, D)), 0, 1).astype(np.float32), y


def _torch_ddp(X, y):
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    net = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(D, C))
    opt = torch.optim.SGD(net.parameters(), lr=LR)

    def epoch():
        order = torch.randperm(len(Xt))
        for s in range(0, len(Xt), BATCH):
            idx = order[s : s + BATCH]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(Xt[idx]), yt[idx]).backward()
            opt.step()

    return epoch, net


def _check_learns(predict, X, y):
    acc = float(np.mean(predict(X[:2000]) == y[:2000]))
    assert acc > 0.5, f"one epoch should learn this data, accuracy {acc}"


@pytest.mark.parametrize("impl", ["fastreg-epoch-loop", "fastreg-data-parallel-1rank", "torch-ddp-1rank"])
def test_data_parallel_epoch(benchmark, one_rank, impl):
    n = N // 10 if benchmark.disabled else N
    X, y = _data(n)
    benchmark.group = f"data-parallel softmax epoch {N}x{D}, 1 rank"
    torch.manual_seed(0)
    if impl.startswith("fastreg"):
        distributed = impl == "fastreg-data-parallel-1rank"
        # The answer first: on one rank the data-parallel path computes the epoch loop's
        # function (to rounding: the epoch loop splits its GEMMs across threads).
        kw = dict(epochs=1, batch_size=BATCH, lr=LR, random_state=3)
        a = SoftmaxRegression(**kw).fit(X[:5000], y[:5000], distributed=False)
        b = SoftmaxRegression(**kw).fit(X[:5000], y[:5000], distributed=True)
        np.testing.assert_allclose(a.coef_, b.coef_, rtol=1e-5, atol=1e-7)
        model = SoftmaxRegression(epochs=1, batch_size=BATCH, lr=LR, random_state=0)
        benchmark.pedantic(
            model.fit, args=(X, y), kwargs=dict(distributed=distributed), rounds=5, iterations=1, warmup_rounds=1
        )
        _check_learns(model.predict, X, y)
    else:
        epoch, net = _torch_ddp(X, y)
        benchmark.pedantic(epoch, rounds=3, iterations=1, warmup_rounds=1)
        with torch.no_grad():
            _check_learns(lambda a: net(torch.from_numpy(a)).argmax(1).numpy(), X, y)

"""The README's drop-in swap: d2l's concise chapter-3 training epoch in pure torch
vs the same loop with fastreg.DataLoader + fastreg.torch.CrossEntropyLoss +
fastreg.torch.SGD (60000x784 float32, 10 classes, batch 256, lr 0.1)."""

import pytest

torch = pytest.importorskip("torch")
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import fastreg  # noqa: E402
import fastreg.torch as ft  # noqa: E402

N, D = 60_000, 784


@pytest.fixture(scope="module")
def data():
    gen = torch.Generator().manual_seed(0)
    return torch.rand(N, D, generator=gen), torch.randint(0, 10, (N,), generator=gen)


def _net():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(D, 10))
    net[1].weight.data.normal_(0, 0.01)
    net[1].bias.data.zero_()
    return net


def _make_epoch(X, y, fast: bool):
    net = _net()
    g = torch.Generator().manual_seed(1)
    if fast:
        loader = fastreg.DataLoader(TensorDataset(X, y), batch_size=256, shuffle=True, generator=g)
        loss_fn, opt = ft.CrossEntropyLoss(), ft.SGD(net.parameters(), lr=0.1)
    else:
        loader = DataLoader(TensorDataset(X, y), batch_size=256, shuffle=True, generator=g)
        loss_fn, opt = torch.nn.CrossEntropyLoss(), torch.optim.SGD(net.parameters(), lr=0.1)

    def epoch():
        for xb, yb in loader:
            loss = loss_fn(net(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()

    return net, epoch


@pytest.mark.parametrize("impl", ["fastreg-drop-in", "torch-d2l-concise"])
def test_concise_epoch(benchmark, data, impl):
    X, y = data
    benchmark.group = "d2l concise epoch 60000x784 b256"
    if impl == "fastreg-drop-in":  # same parameters as torch after an epoch, checked first
        net_a, epoch_a = _make_epoch(X, y, fast=True)
        net_b, epoch_b = _make_epoch(X, y, fast=False)
        epoch_a()
        epoch_b()
        for a, b in zip(net_a.parameters(), net_b.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    _, epoch = _make_epoch(X, y, fast=impl.startswith("fastreg"))
    benchmark.pedantic(epoch, rounds=5, iterations=1, warmup_rounds=1)

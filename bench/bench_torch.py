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


# ---- the loop's pieces that are ours: per-call overhead at the loop's sizes ------------


@pytest.mark.parametrize("impl", ["fastreg-CrossEntropyLoss", "torch-CrossEntropyLoss"])
def test_loss_forward_backward(benchmark, impl):
    """Loss and backward on [256, 10] logits: mostly Python/autograd overhead, which the
    drop-in loop pays once per batch."""
    benchmark.group = "drop-in loss fwd+bw 256x10"
    gen = torch.Generator().manual_seed(2)
    logits, target = torch.randn(256, 10, generator=gen), torch.randint(0, 10, (256,), generator=gen)
    ours, ref = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    ft.CrossEntropyLoss()(ours, target).backward()
    torch.nn.CrossEntropyLoss()(ref, target).backward()
    torch.testing.assert_close(ours.grad, ref.grad, rtol=1e-5, atol=1e-7)
    x = ours if impl.startswith("fastreg") else ref
    loss_fn = ft.CrossEntropyLoss() if impl.startswith("fastreg") else torch.nn.CrossEntropyLoss()

    def step():
        loss_fn(x, target).backward()

    benchmark.pedantic(step, rounds=200, iterations=20, warmup_rounds=5)


@pytest.mark.parametrize("impl", ["fastreg-SGD", "torch-SGD"])
def test_optimizer_zero_grad_step(benchmark, impl):
    """zero_grad + step for Linear(784, 10) (7850 parameters): one call each per batch."""
    benchmark.group = "drop-in SGD step 784x10"
    nets = [_net(), _net()]
    opts = [ft.SGD(nets[0].parameters(), lr=0.1), torch.optim.SGD(nets[1].parameters(), lr=0.1)]
    grads = [torch.randn(p.shape, generator=torch.Generator().manual_seed(3)) for p in nets[0].parameters()]
    for net, opt in zip(nets, opts):
        for p, g in zip(net.parameters(), grads):
            p.grad = g.clone()
        opt.step()
    for a, b in zip(*(net.parameters() for net in nets)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    k = 0 if impl.startswith("fastreg") else 1
    net, opt = nets[k], opts[k]
    params = list(net.parameters())

    def step():
        opt.zero_grad()
        for p, g in zip(params, grads):  # what backward would do: a gradient appears
            p.grad = g
        opt.step()

    benchmark.pedantic(step, rounds=200, iterations=20, warmup_rounds=5)

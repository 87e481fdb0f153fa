"""One epoch of softmax regression (d2l 3.7 setting): fastreg.SoftmaxRegression vs torch.

60000 x 784 float32 synthetic data with 10 classes, batch 256, lr 0.1 (the Fashion-MNIST
shape), and the same from a uint8 source scaled by 1/255 on the fly. References:
- torch-d2l-concise: d2l 3.7's concise code as printed: DataLoader(TensorDataset),
  nn.Sequential(nn.Flatten(), nn.Linear) with normal(0, 0.01) weights,
  CrossEntropyLoss(reduction='none'), optim.SGD, and train_epoch_ch3's loop, which also
  sums every batch's loss and right predictions (fastreg's epoch returns the same two
  figures). d2l's loader uses 4 worker processes; here it has none (faster on 2 cores);
- torch-concise-no-metrics: the same without the per-batch loss/accuracy bookkeeping
  (nn.Linear + CrossEntropyLoss + optim.SGD only), a stricter reference than d2l's;
- torch-index-batching: the lean model, batches by indexing with a random permutation;
- one-thread-loop: fastreg itself with fastreg.set_num_threads(1) (the epoch's single-thread
  path), so the ratio shows what the epoch's thread team buys on this machine.
- floor: what the epoch cannot go below, measured in the same run: one pass over the data
  (60000 x 784 x 4 B = 188 MB, or 47 MB as uint8; torch's sum over it, on all threads) plus
  the epoch's 1.9 GFLOP (forward and weight-gradient products, 2 x 2 x 60000 x 784 x 10) as
  one large square GEMM, which runs near the cores' FMA peak (torch's MKL/oneDNN, all threads).
With --benchmark-disable (smoke) the data is 10x smaller.
"""

import numpy as np
import pytest

import fastreg
from fastreg import SoftmaxRegression, _core

torch = pytest.importorskip("torch")

N, D, C, BATCH, LR = 60_000, 784, 10, 256, 0.1
# Rounds per case: on the noisy 2-core VMs a median of 5 rounds of a ~17 ms epoch
# (~0.1 s in all) moved with every scheduling hiccup; 15 span ~0.3 s. The torch
# loops take 0.1-0.7 s a round.
FAST_ROUNDS = 15


def _data(n, dtype):
    rng = np.random.default_rng(0)
    y = rng.integers(0, C, n)
    centers = rng.uniform(0, 1, (C, D))
    X = np.clip(centers[y] + rng.normal(0, 0.3, (n, D)), 0, 1)
    if dtype == np.uint8:
        return (X * 255).round().astype(np.uint8), y
    return X.astype(np.float32), y


def _as_float(Xt):
    return Xt.float() / 255 if Xt.dtype == torch.uint8 else Xt


def _torch_d2l_concise(X, y):
    """d2l 3.7 (concise softmax regression) with d2l.train_epoch_ch3, as the book prints them."""
    ds = torch.utils.data.TensorDataset(torch.from_numpy(X), torch.from_numpy(y))
    train_iter = torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=True)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(D, C))
    torch.nn.init.normal_(net[1].weight, std=0.01)
    loss = torch.nn.CrossEntropyLoss(reduction="none")
    trainer = torch.optim.SGD(net.parameters(), lr=LR)

    def accuracy(y_hat, y):  # d2l.accuracy
        if len(y_hat.shape) > 1 and y_hat.shape[1] > 1:
            y_hat = y_hat.argmax(axis=1)
        cmp = y_hat.type(y.dtype) == y
        return float(cmp.type(y.dtype).sum())

    def epoch():  # d2l.train_epoch_ch3 (its Accumulator as a list)
        net.train()
        metric = [0.0, 0.0, 0.0]
        for X, y in train_iter:
            y_hat = net(_as_float(X))
            l = loss(y_hat, y)
            trainer.zero_grad()
            l.mean().backward()
            trainer.step()
            # d2l writes float(l.sum()); torch 2.13 warns on that, so it is detached first.
            for i, v in enumerate((float(l.detach().sum()), accuracy(y_hat, y), y.numel())):
                metric[i] += v
        return metric[0] / metric[2], metric[1] / metric[2]

    return epoch, net


def _torch_concise_no_metrics(X, y):
    ds = torch.utils.data.TensorDataset(torch.from_numpy(X), torch.from_numpy(y))
    it = torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=True)
    net = torch.nn.Linear(D, C)
    loss = torch.nn.CrossEntropyLoss()
    opt = torch.optim.SGD(net.parameters(), lr=LR)

    def epoch():
        for xb, yb in it:
            opt.zero_grad()
            loss(net(_as_float(xb)), yb).backward()
            opt.step()

    return epoch, net


def _torch_index_batching(X, y):
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    net = torch.nn.Linear(D, C)
    loss = torch.nn.CrossEntropyLoss()
    opt = torch.optim.SGD(net.parameters(), lr=LR)

    def epoch():
        order = torch.randperm(len(Xt))
        for s in range(0, len(Xt), BATCH):
            idx = order[s : s + BATCH]
            opt.zero_grad()
            loss(net(_as_float(Xt[idx])), yt[idx]).backward()
            opt.step()

    return epoch, net


def _floor(X):
    """One read of X plus the epoch's multiply-adds as an efficient GEMM (see the module doc)."""
    Xt = torch.from_numpy(X)
    flops = 2 * 2 * len(X) * D * C
    n = int(round((flops / 2) ** (1 / 3)))  # n x n x n multiply-adds
    a, b = torch.rand(n, n), torch.rand(n, n)

    def floor():
        Xt.sum(dtype=torch.float32)
        torch.mm(a, b)

    return floor


def _check_fastreg_matches_torch(X, y):
    """Same init and batch order on a 5000-row slice: fastreg's epoch == torch's."""
    X, y = X[:5000], y[:5000]
    m = SoftmaxRegression(epochs=1, batch_size=BATCH, lr=LR, random_state=7).fit(X, y)
    gen = np.random.default_rng(7)
    net = torch.nn.Linear(D, C)
    with torch.no_grad():
        net.weight.copy_(torch.from_numpy(gen.normal(0, 0.01, (C, D))))
        net.bias.zero_()
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    Xt, yt = _as_float(torch.from_numpy(X)), torch.from_numpy(y)
    order = torch.from_numpy(_core.random_permutation(len(X), int(gen.integers(2**63)), 0))  # fastreg's shuffle
    for s in range(0, len(X), BATCH):
        idx = order[s : s + BATCH]
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(Xt[idx]), yt[idx]).backward()
        opt.step()
    np.testing.assert_allclose(m.coef_, net.weight.detach().numpy(), rtol=1e-4, atol=1e-6)


def _check_learns(predict, X, y):
    acc = float(np.mean(predict(X[:2000]) == y[:2000]))
    assert acc > 0.5, f"one epoch should learn this data, accuracy {acc}"


@pytest.mark.parametrize("source", ["float32", "uint8"])
@pytest.mark.parametrize(
    "impl",
    ["fastreg", "one-thread-loop", "torch-d2l-concise", "torch-concise-no-metrics", "torch-index-batching", "floor"],
)
def test_softmax_epoch(benchmark, source, impl):
    n = N // 10 if benchmark.disabled else N
    X, y = _data(n, np.uint8 if source == "uint8" else np.float32)
    benchmark.group = f"softmax epoch {N}x{D} {source}"
    torch.manual_seed(0)
    if impl == "fastreg":
        _check_fastreg_matches_torch(X, y)
        model = SoftmaxRegression(epochs=1, batch_size=BATCH, lr=LR, random_state=0)
        benchmark.pedantic(model.fit, args=(X, y), rounds=FAST_ROUNDS, iterations=1, warmup_rounds=1)
        _check_learns(model.predict, X, y)
    elif impl == "one-thread-loop":
        threads = fastreg.get_num_threads()
        fastreg.set_num_threads(1)
        try:
            _check_fastreg_matches_torch(X, y)
            model = SoftmaxRegression(epochs=1, batch_size=BATCH, lr=LR, random_state=0)
            benchmark.pedantic(model.fit, args=(X, y), rounds=FAST_ROUNDS, iterations=1, warmup_rounds=1)
        finally:
            fastreg.set_num_threads(threads)
        _check_learns(model.predict, X, y)
    elif impl == "floor":
        benchmark.pedantic(_floor(X), rounds=FAST_ROUNDS, iterations=1, warmup_rounds=1)
    else:
        make = {
            "torch-d2l-concise": _torch_d2l_concise,
            "torch-concise-no-metrics": _torch_concise_no_metrics,
            "torch-index-batching": _torch_index_batching,
        }[impl]
        epoch, net = make(X, y)
        benchmark.pedantic(epoch, rounds=7 if impl == "torch-index-batching" else 5, iterations=1, warmup_rounds=1)
        with torch.no_grad():
            _check_learns(lambda a: net(_as_float(torch.from_numpy(a))).argmax(1).numpy(), X, y)

"""Data-parallel training over torch.distributed (issue 6, "Distributed").

The 2-process tests launch tests/_distributed_worker.py twice, as torchrun would
(RANK/WORLD_SIZE/MASTER_ADDR=127.0.0.1/MASTER_PORT), with the gloo backend, once per
module; every reference is computed here, in this process.
"""

from __future__ import annotations

import math
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available():  # pragma: no cover
    pytest.skip("torch.distributed is not available in this torch build", allow_module_level=True)

import fastreg  # noqa: E402
from fastreg import _core  # noqa: E402

WORKER = Path(__file__).with_name("_distributed_worker.py")
WORLD = 2
LAUNCH_TIMEOUT_S = 240


# ---------------------------------------------------------------------------
# references (float64)


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def batch_grad_ref(X, y, idx, w, b, kind):
    """Gradient of the batch's mean loss w.r.t. (w, b), and the loss sum, in float64."""
    xb = X[idx].astype(np.float64)
    if X.dtype == np.uint8:
        xb /= 255.0
    z = xb @ w.T + b
    if kind == "softmax":
        p = softmax(z)
        loss = -np.log(p[np.arange(len(idx)), y[idx]]).sum()
        p[np.arange(len(idx)), y[idx]] -= 1.0
        g = p / len(idx)
    else:  # squared: 0.5 r^2
        r = z[:, 0] - y[idx]
        loss = 0.5 * (r * r).sum()
        g = (r / len(idx))[:, None]
    return g.T @ xb, g.sum(axis=0), loss


def sgd_ref(X, y, w0, b0, batches, kind, lr, momentum=0.0, weight_decay=0.0):
    """torch.optim.SGD over the given batches (weight decay on w only), float64."""
    w, b = w0.astype(np.float64), b0.astype(np.float64)
    bw = bb = None
    for idx in batches:
        gw, gb, _ = batch_grad_ref(X, y, idx, w, b, kind)
        gw = gw + weight_decay * w
        if momentum:
            bw = gw if bw is None else momentum * bw + gw
            bb = gb if bb is None else momentum * bb + gb
            gw, gb = bw, bb
        w -= lr * gw
        b -= lr * gb
    return w, b


# ---------------------------------------------------------------------------
# the 2-process run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_data(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    n, d, c = 400, 12, 4
    X64 = rng.normal(size=(n + 1, d))
    w_true = rng.normal(size=(c, d))
    return {
        "X32": X64[:n].astype(np.float32),
        "X64": X64,
        "Xu8": rng.integers(0, 256, size=(n, d), dtype=np.uint8),
        "y": rng.integers(0, c, size=n),
        "y_odd": np.argmax(X64 @ w_true.T + rng.normal(size=(n + 1, c)), axis=1).astype(np.int64),
        "t_odd": X64 @ w_true[0] + 0.5 + 0.1 * rng.normal(size=n + 1),
        "t32": (X64[:n] @ w_true[0]).astype(np.float32),
    }


@pytest.fixture(scope="module")
def data():
    return make_data()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory, data):
    """Run the worker on 2 ranks (gloo, 127.0.0.1); the per-rank results."""
    out = tmp_path_factory.mktemp("distributed")
    np.savez(out / "data.npz", **data)
    env = {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "WORLD_SIZE": str(WORLD),
        "OMP_NUM_THREADS": "1",
    }
    if sys.platform.startswith("linux"):
        env["GLOO_SOCKET_IFNAME"] = "lo"  # gloo's connections stay on the loopback interface
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(out)],
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in range(WORLD)
    ]
    logs = [""] * WORLD
    try:
        for r, p in enumerate(procs):
            logs[r], _ = p.communicate(timeout=LAUNCH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the {WORLD} ranks did not finish within {LAUNCH_TIMEOUT_S} s")
    finally:
        for p in procs:  # never leave a rank behind, whatever happened
            if p.poll() is None:
                p.kill()
                p.wait()
    for r, p in enumerate(procs):
        wrote = (out / f"rank{r}.pkl").exists()  # did it fail before or after saving its results?
        assert p.returncode == 0, f"rank {r} failed (exit {p.returncode}, results saved: {wrote}):\n{logs[r]}"
    results = []
    for r in range(WORLD):
        with open(out / f"rank{r}.pkl", "rb") as f:
            results.append(pickle.load(f))
    assert [res["rank"] for res in results] == list(range(WORLD))
    return results


FIT_CASES = {  # case -> (X key, y key, batch per rank, epochs, kind, SGD options)
    "softmax32": ("X32", "y", 32, 1, "softmax", dict(lr=0.5, momentum=0.9, weight_decay=1e-3)),
    "softmax64": ("X64", "y_odd", 25, 2, "softmax", dict(lr=0.5)),
    "softmax_u8": ("Xu8", "y", 16, 1, "softmax", dict(lr=0.5)),
    "linear64": ("X64", "t_odd", 10, 1, "squared", dict(lr=0.05, momentum=0.5)),
    "after": ("X32", "t32", 10, 1, "squared", dict(lr=0.05)),
}


def union_batches(ranks, case):
    """Step k of one process with batch W*b: the rows of step k on every rank."""
    steps = [res[case]["steps"] for res in ranks]
    assert len({len(s) for s in steps}) == 1, "the ranks ran different numbers of steps"
    return [np.concatenate(per_step) for per_step in zip(*steps)]


@pytest.mark.parametrize("case", list(FIT_CASES))
def test_ranks_end_with_identical_parameters(ranks, case):
    r0, r1 = ranks[0][case], ranks[1][case]
    np.testing.assert_array_equal(r0["w0"], r1["w0"])  # rank 0's initial weights were broadcast
    np.testing.assert_array_equal(r0["coef"], r1["coef"])
    np.testing.assert_array_equal(r0["intercept"], r1["intercept"])
    assert r0["train_loss"] == r1["train_loss"]  # the loss is summed over the ranks
    assert not np.array_equal(r0["coef"].reshape(r0["w0"].shape), r0["w0"])  # it did train


@pytest.mark.parametrize("case", list(FIT_CASES))
def test_shards_are_disjoint_and_cover_the_data(ranks, data, case):
    xk, _, bs, epochs, _, _ = FIT_CASES[case]
    n = len(data[xk])
    per_rank = math.ceil(n / WORLD)
    steps_per_epoch = math.ceil(per_rank / bs)
    for res in ranks:
        steps = res[case]["steps"]
        assert len(steps) == epochs * steps_per_epoch
        assert all(
            len(s) == bs for e in range(epochs) for s in steps[e * steps_per_epoch : (e + 1) * steps_per_epoch - 1]
        )
    for e in range(epochs):
        shards = [np.concatenate(res[case]["steps"][e * steps_per_epoch : (e + 1) * steps_per_epoch]) for res in ranks]
        assert all(len(s) == per_rank for s in shards)
        allrows = np.concatenate(shards)
        np.testing.assert_array_equal(np.unique(allrows), np.arange(n))  # covered
        # Disjoint, but for DistributedSampler's padding (the first rows again, n odd).
        assert len(np.intersect1d(shards[0], shards[1])) == per_rank * WORLD - n
    if epochs > 1:  # a new permutation each epoch
        assert not np.array_equal(ranks[0][case]["steps"][0], ranks[0][case]["steps"][steps_per_epoch])


def test_float32_equals_single_process_with_doubled_batch(ranks, data):
    _, _, bs, _, _, opts = FIT_CASES["softmax32"]
    single = fastreg.SoftmaxRegression(batch_size=WORLD * bs, epochs=1, random_state=7, **opts)
    single.fit(data["X32"], data["y"], distributed=False)
    got = ranks[0]["softmax32"]
    np.testing.assert_allclose(got["coef"], single.coef_, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["intercept"], single.intercept_, rtol=1e-5, atol=1e-6)
    # Same order: the single process's first batch is the union of the ranks' first batches.
    assert got["steps"][0].size == bs


@pytest.mark.parametrize("case", list(FIT_CASES))
def test_equals_float64_reference_on_the_union_of_batches(ranks, data, case):
    xk, yk, _, _, kind, opts = FIT_CASES[case]
    got = ranks[0][case]
    w, b = sgd_ref(data[xk], data[yk], got["w0"], got["b0"], union_batches(ranks, case), kind, **opts)
    tol = dict(rtol=1e-9, atol=1e-11) if data[xk].dtype == np.float64 else dict(rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["coef"], w.reshape(got["coef"].shape), **tol)
    np.testing.assert_allclose(got["intercept"], b.reshape(np.shape(got["intercept"])), **tol)


def test_disagreeing_ranks_raise_on_every_rank(ranks):
    for res in ranks:
        kind, msg = res["err_batch"]
        assert kind == "ValueError" and "batch_size differs between ranks" in msg and "rank 0: 32" in msg
        kind, msg = res["err_dtype"]
        assert kind == "TypeError" and "dtype differs" in msg and "float32" in msg and "float64" in msg
        kind, msg = res["err_rows"]
        assert kind == "ValueError" and "n_samples differs" in msg


def test_divergence_raises_on_every_rank(ranks):
    for res in ranks:
        kind, msg = res["err_diverge"]
        assert kind == "TrainingDivergedError" and "diverged in epoch 1" in msg


def test_loader_shards_like_distributed_sampler(ranks, data):
    n = len(data["y_odd"])
    for res in ranks:
        np.testing.assert_array_equal(res["loader_noshuffle"], res["sampler_noshuffle"])
        assert res["loader_len"] == math.ceil(math.ceil(n / WORLD) / 8)
    shuffled = [res["loader_shuffle"] for res in ranks]
    assert all(len(s) == math.ceil(n / WORLD) for s in shuffled)
    np.testing.assert_array_equal(np.unique(np.concatenate(shuffled)), np.arange(n))
    assert len(np.intersect1d(*shuffled)) == WORLD * math.ceil(n / WORLD) - n


def test_ddp_with_fastreg_loader_matches_single_process_torch(ranks, data):
    r0, r1 = ranks
    for k in r0["ddp_final"]:
        np.testing.assert_array_equal(r0["ddp_final"][k], r1["ddp_final"][k])
    torch.manual_seed(0)
    model = torch.nn.Linear(data["X64"].shape[1], int(data["y_odd"].max()) + 1)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), r0["ddp_init"][k])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    X = torch.from_numpy(data["X64"].astype(np.float32))
    y = torch.from_numpy(data["y_odd"])
    steps = [np.concatenate(s) for s in zip(r0["ddp_steps"], r1["ddp_steps"])]
    assert len(steps) == len(r0["ddp_steps"]) == len(r1["ddp_steps"])
    for idx in steps:
        i = torch.from_numpy(idx)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(X[i]), y[i]).backward()
        opt.step()
    for k, v in model.state_dict().items():
        np.testing.assert_allclose(r0["ddp_final"][k], v.numpy(), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------
# in this process: one rank, the per-batch kernels, bad arguments


@pytest.fixture
def one_rank_group(tmp_path):
    assert not dist.is_initialized()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_one_rank_data_parallel_equals_the_epoch_loop(one_rank_group, data, momentum):
    # The per-step path (batch kernels + all-reduce + SGD step) is the C++ epoch loop, bit for
    # bit, where the epoch runs on one thread (these small batches); bigger batches split their
    # GEMMs over threads and agree to rounding (bench/bench_distributed.py checks that).
    kw = dict(lr=0.3, batch_size=48, epochs=2, momentum=momentum, weight_decay=1e-2, random_state=4)
    a = fastreg.SoftmaxRegression(**kw).fit(data["X32"], data["y"])  # auto: one rank -> the epoch loop
    b = fastreg.SoftmaxRegression(**kw).fit(data["X32"], data["y"], distributed=True)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    np.testing.assert_array_equal(a.intercept_, b.intercept_)
    assert a.history_["train_loss"] == b.history_["train_loss"]
    assert a.history_["train_acc"] == b.history_["train_acc"]
    la = fastreg.LinearRegression(loss="huber", **kw).fit(data["X64"], data["t_odd"])
    lb = fastreg.LinearRegression(loss="huber", **kw).partial_fit(data["X64"], data["t_odd"], distributed=True)
    lb.partial_fit(data["X64"], data["t_odd"], distributed=True)
    np.testing.assert_array_equal(la.coef_, lb.coef_)
    assert la.intercept_ == lb.intercept_


def test_distributed_argument_errors(data):
    assert not dist.is_initialized()
    with pytest.raises(ValueError, match="initialised default process group"):
        fastreg.SoftmaxRegression(epochs=1).fit(data["X32"], data["y"], distributed=True)
    with pytest.raises(TypeError, match="distributed must be None, True or False, got str"):
        fastreg.SoftmaxRegression(epochs=1).fit(data["X32"], data["y"], distributed="gloo")
    with pytest.raises(ValueError, match="solver='sgd'"):
        fastreg.LinearRegression(solver="normal").fit(data["X64"], data["t_odd"], distributed=True)
    # Without a group, the default is the single-process loop.
    fastreg.SoftmaxRegression(epochs=1).fit(data["X32"], data["y"])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_batch_grad_matches_reference(dtype):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(50, 7)).astype(dtype)
    y = rng.integers(0, 3, size=50)
    w = rng.normal(size=(3, 7)).astype(dtype)
    b = rng.normal(size=3).astype(dtype)
    idx = rng.choice(50, size=13, replace=False).astype(np.int64)
    grad = np.full(3 * 7 + 3, np.nan, dtype=dtype)
    loss_sum, correct, finite = _core.softmax_batch_grad(X, y, idx, w, b, grad)
    gw, gb, loss = batch_grad_ref(X, y, idx, w.astype(np.float64), b.astype(np.float64), "softmax")
    tol = 1e-12 if dtype == np.float64 else 1e-5
    assert finite
    np.testing.assert_allclose(grad[:21].reshape(3, 7), gw, rtol=tol, atol=tol)
    np.testing.assert_allclose(grad[21:], gb, rtol=tol, atol=tol)
    assert loss_sum == pytest.approx(loss, rel=tol)
    assert correct == int(np.sum(np.argmax(X[idx] @ w.T + b, axis=1) == y[idx]))


def test_regression_batch_grad_and_sgd_step_match_reference():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(30, 5))
    t = rng.normal(size=30)
    w, b = rng.normal(size=(1, 5)), rng.normal(size=1)
    idx = np.arange(3, 20, dtype=np.int64)
    grad = np.empty(6)
    loss_sum, _, finite = _core.regression_batch_grad(X, t, idx, w, b, grad)
    gw, gb, loss = batch_grad_ref(X, t, idx, w, b, "squared")
    assert finite and loss_sum == pytest.approx(loss, rel=1e-12)
    np.testing.assert_allclose(grad, np.concatenate([gw.ravel(), gb]), rtol=1e-12)
    wb, bb = np.zeros_like(w), np.zeros_like(b)
    w1, b1 = w.copy(), b.copy()
    _core.linear_sgd_step(w1, b1, grad, wb, bb, lr=0.1, momentum=0.9, weight_decay=0.5, first_step=True)
    np.testing.assert_allclose(w1, w - 0.1 * (gw + 0.5 * w), rtol=1e-12)  # decay on the weight ...
    np.testing.assert_allclose(b1, b - 0.1 * gb, rtol=1e-12)  # ... not on the bias
    np.testing.assert_allclose(wb, gw + 0.5 * w, rtol=1e-12)  # the first step fills the buffer


def test_batch_kernels_reject_bad_arguments():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(20, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=20)
    w, b = np.zeros((3, 4), np.float32), np.zeros(3, np.float32)
    idx = np.arange(8, dtype=np.int64)
    grad = np.zeros(15, np.float32)
    before = (w.copy(), b.copy())

    def call(**kw):
        args = dict(X=X, y=y, order=idx, weight=w, bias=b, grad=grad) | kw
        return _core.softmax_batch_grad(**args)

    with pytest.raises(TypeError, match="grad must have dtype float32"):
        call(grad=np.zeros(15))
    with pytest.raises(ValueError, match=r"grad must have shape \(15,\)"):
        call(grad=np.zeros(14, np.float32))
    with pytest.raises(ValueError, match="grad must be C-contiguous"):
        call(grad=np.zeros(30, np.float32)[::2])
    ro = np.zeros(15, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="grad is read-only"):
        call(grad=ro)
    with pytest.raises(ValueError, match="grad must not share memory"):
        call(grad=X.reshape(-1)[:15])
    with pytest.raises(ValueError, match="at least one row index"):
        call(order=np.empty(0, np.int64))
    with pytest.raises(IndexError, match=r"order\[1\] = 20 is out of range for X with 20 rows"):
        call(order=np.array([0, 20], np.int64))
    with pytest.raises(IndexError, match="out of range"):
        call(order=np.array([-1], np.int64))
    with pytest.raises(TypeError, match="order must have dtype int64"):
        call(order=idx.astype(np.int32))
    bad_y = y.copy()
    bad_y[5] = 3
    with pytest.raises(ValueError, match=r"class indices in \[0, 3\), got 3 at row 5"):
        call(y=bad_y)
    call(y=bad_y, order=np.array([0, 1], np.int64))  # only the batch's labels are read
    with pytest.raises(TypeError, match="X must be a numpy.ndarray"):
        call(X=X.tolist())
    with pytest.raises(ValueError, match="loss must be"):
        _core.regression_batch_grad(X, X[:, 0].copy(), idx, w[:1], b[:1], np.zeros(5, np.float32), loss="hinge")
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        _core.linear_sgd_step(w, b, grad, None, None, lr=float("nan"), momentum=0.0, weight_decay=0.0)
    with pytest.raises(ValueError, match="momentum buffers .* required"):
        _core.linear_sgd_step(w, b, grad, None, None, lr=0.1, momentum=0.9, weight_decay=0.0)
    with pytest.raises(TypeError, match="grad must have dtype float32"):
        _core.linear_sgd_step(w, b, grad.astype(np.float64), None, None, lr=0.1, momentum=0.0, weight_decay=0.0)
    with pytest.raises(ValueError, match="grad must not share memory"):
        wb = np.zeros(15 + 3, np.float32)
        _core.linear_sgd_step(w, b, wb[3:], wb[:12].reshape(3, 4), wb[12:15], lr=0.1, momentum=0.9, weight_decay=0.0)
    np.testing.assert_array_equal(w, before[0])  # nothing was written by a rejected call
    np.testing.assert_array_equal(b, before[1])

"""One rank of the 2-process tests in test_distributed.py (launched like torchrun:
RANK, WORLD_SIZE, MASTER_ADDR=127.0.0.1, MASTER_PORT in the environment).

Runs every scenario in one process group (starting torch twice per test would
dominate the run time) and pickles what it saw to ``<out_dir>/rank<r>.pkl``: final
parameters, the rows each step trained on, and the exceptions of the bad-input cases.
The parent process computes the references and asserts.
"""

from __future__ import annotations

import datetime
import faulthandler
import gc
import os
import pickle
import sys
import traceback

import numpy as np
import torch
import torch.distributed as dist

import fastreg
from fastreg import _core


def recording(name: str, log: list):
    """Wrap _core.<name> (a per-batch gradient kernel) to record each step's rows and
    the parameters it started from."""
    orig = getattr(_core, name)

    def wrapper(X, y, order, weight, bias, grad, **kw):
        log.append((order.copy(), weight.copy(), bias.copy()))
        return orig(X, y, order, weight, bias, grad, **kw)

    setattr(_core, name, wrapper)
    return lambda: setattr(_core, name, orig)


def fit_case(est, X, y, kernel: str, **fit_kw) -> dict:
    log: list = []
    restore = recording(kernel, log)
    try:
        est.fit(X, y, **fit_kw)
    finally:
        restore()
    return {
        "coef": np.array(est.coef_),
        "intercept": np.array(est.intercept_),
        "steps": [o for o, _, _ in log],
        "w0": log[0][1],
        "b0": log[0][2],
        "train_loss": est.history_["train_loss"],
    }


def error_of(fn) -> tuple[str, str] | None:
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - the parent asserts the type
        return type(e).__name__, str(e)
    return None


def main(out_dir: str) -> None:
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    rank, ws = dist.get_rank(), dist.get_world_size()
    data = np.load(os.path.join(out_dir, "data.npz"))
    res: dict = {"rank": rank, "world_size": ws}

    # Softmax regression, float32, n even: must equal one process with batch 2 * 32.
    res["softmax32"] = fit_case(
        fastreg.SoftmaxRegression(lr=0.5, batch_size=32, epochs=1, momentum=0.9, weight_decay=1e-3, random_state=7),
        data["X32"],
        data["y"],
        "softmax_batch_grad",
    )
    # Softmax regression, float64, n odd (DistributedSampler pads by wrapping around); auto-detected group.
    res["softmax64"] = fit_case(
        fastreg.SoftmaxRegression(lr=0.5, batch_size=25, epochs=2, random_state=3),
        data["X64"],
        data["y_odd"],
        "softmax_batch_grad",
    )
    # uint8 images (read as x / 255), as MNIST.
    res["softmax_u8"] = fit_case(
        fastreg.SoftmaxRegression(lr=0.5, batch_size=16, epochs=1, random_state=5),
        data["Xu8"],
        data["y"],
        "softmax_batch_grad",
        distributed=True,
    )
    # Linear regression, float64, squared loss with momentum; n odd.
    res["linear64"] = fit_case(
        fastreg.LinearRegression(lr=0.05, batch_size=10, epochs=1, momentum=0.5, random_state=11),
        data["X64"],
        data["t_odd"],
        "regression_batch_grad",
    )

    # Bad input: the ranks disagree (every rank must raise, none may hang).
    bs = 32 if rank == 0 else 16
    res["err_batch"] = error_of(lambda: fastreg.SoftmaxRegression(batch_size=bs, epochs=1).fit(data["X32"], data["y"]))
    Xr = data["X32"] if rank == 0 else data["X32"].astype(np.float64)
    res["err_dtype"] = error_of(lambda: fastreg.SoftmaxRegression(epochs=1).fit(Xr, data["y"]))
    nr = len(data["y"]) - rank  # rank 1 passes one row less
    res["err_rows"] = error_of(lambda: fastreg.SoftmaxRegression(epochs=1).fit(data["X32"][:nr], data["y"][:nr]))
    # Divergence on every rank: all raise together, parameters left as before the epoch.
    est = fastreg.LinearRegression(lr=1e30, batch_size=10, epochs=1, random_state=0)
    res["err_diverge"] = error_of(lambda: est.fit(data["X32"], data["t32"]))
    # The group still works after all that.
    res["after"] = fit_case(
        fastreg.LinearRegression(lr=0.05, batch_size=10, epochs=1, random_state=2),
        data["X32"],
        data["t32"],
        "regression_batch_grad",
    )

    # fastreg.DataLoader under the initialised group: DistributedSampler's shards ...
    n_odd = len(data["y_odd"])
    idx = np.arange(n_odd, dtype=np.int64)
    seq = fastreg.DataLoader((idx,), batch_size=8, shuffle=False)
    res["loader_noshuffle"] = np.concatenate([b for (b,) in seq])
    res["loader_len"] = len(seq)
    sampler = torch.utils.data.DistributedSampler(range(n_odd), shuffle=False)
    res["sampler_noshuffle"] = np.array(list(sampler))
    shuf = fastreg.DataLoader((idx,), batch_size=8, shuffle=True)
    shuf.set_epoch(1)
    res["loader_shuffle"] = np.concatenate([b for (b,) in shuf])

    # ... so DistributedDataParallel training works unchanged.
    torch.manual_seed(0)
    model = torch.nn.Linear(data["X64"].shape[1], int(data["y_odd"].max()) + 1)
    res["ddp_init"] = {k: v.detach().clone().numpy() for k, v in model.state_dict().items()}
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    loss_fn = torch.nn.CrossEntropyLoss()
    X_t = torch.from_numpy(data["X64"].astype(np.float32))
    loader = fastreg.DataLoader(
        (X_t, torch.from_numpy(data["y_odd"]), torch.from_numpy(idx)), batch_size=8, shuffle=True
    )
    ddp_steps = []
    for xb, yb, ib in loader:
        ddp_steps.append(ib.numpy().copy())
        opt.zero_grad()
        loss_fn(ddp(xb), yb).backward()
        opt.step()
    res["ddp_steps"] = ddp_steps
    res["ddp_final"] = {k: v.detach().clone().numpy() for k, v in model.state_dict().items()}

    with open(os.path.join(out_dir, f"rank{rank}.pkl"), "wb") as f:
        pickle.dump(res, f)
    # Tear down in order while the interpreter is fully alive: DDP (its reducer holds the
    # group), then wait for every rank, then the group. (CI once saw a rank abort after
    # its last collective, cause not found; torch reports aborts when gloo's group is
    # destroyed late, during interpreter exit.)
    del ddp, opt, loader, model
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    faulthandler.enable(all_threads=True)  # an abort prints every thread's Python stack into the log
    try:
        main(sys.argv[1])
    except BaseException:
        traceback.print_exc()
        sys.exit(1)

"""Batch size vs read speed (d2l 3.5 exercise): examples per second of one shuffled
epoch over Fashion-MNIST-sized data, fastreg's iterator vs torch's DataLoader, for
batch sizes 1..1024. Small batches are where per-batch Python overhead dominates.

    python examples/batch_size_speed.py [--quick] [--out batch_size_speed.png]
"""

import argparse
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import fastreg  # noqa: E402


def rate(make_iter, n, repeats=3):
    """Best examples/second over a few full epochs."""
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        rows = sum(len(batch[0]) for batch in make_iter())
        best = max(best, rows / (time.perf_counter() - start))
        assert rows == n, f"an epoch gave {rows} rows, expected {n}"
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="batch_size_speed.png")
    args = parser.parse_args(argv)

    n = 4_000 if args.quick else 60_000
    X = np.random.default_rng(0).random((n, 784), dtype=np.float32)
    y = np.random.default_rng(1).integers(0, 10, n)
    sizes = [1, 16, 256] if args.quick else [1, 4, 16, 64, 256, 1024]
    impls = {"fastreg.data_iter": lambda b: lambda: fastreg.data_iter(b, X, y)}
    try:
        import torch
        from torch.utils.data import DataLoader, TensorDataset

        ds = TensorDataset(torch.from_numpy(X), torch.from_numpy(y))
        impls["torch DataLoader"] = lambda b: lambda: DataLoader(ds, batch_size=b, shuffle=True)
    except ImportError:
        print("torch is not installed: timing fastreg only")
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, make in impls.items():
        rates = [rate(make(b), n) for b in sizes]
        ax.loglog(sizes, rates, "o-", label=name)
        print(name, "  ".join(f"b={b}: {r / 1e3:.0f}k ex/s" for b, r in zip(sizes, rates)))
    ax.set(xlabel="batch size", ylabel="examples / second", title=f"one shuffled epoch, {n}x784 float32")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

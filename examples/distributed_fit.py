"""Data-parallel softmax regression over torch.distributed (gloo), launched with torchrun.

Every process builds the same MNIST-shaped data set (60000 x 784 uint8 images, 10
classes; synthetic, so nothing is downloaded) and calls ``fit`` as usual: under
torchrun, fit sees the initialised process group, trains on this rank's shard and
all-reduces the gradient every step. ``--batch-size`` is per process, so N processes
train like one with batch N * batch-size.

    torchrun --nproc-per-node=2 examples/distributed_fit.py [--epochs 3] [--batch-size 128]
    python examples/distributed_fit.py [--quick] [--out curves.png]   # one process
"""

import argparse
import os

import numpy as np

import fastreg


def mnist_like(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images [n, 784] uint8 and labels [n] int64: 10 fixed prototypes plus noise."""
    rng = np.random.default_rng(seed)
    prototypes = rng.uniform(0, 255, size=(10, 784))
    y = rng.integers(0, 10, size=n)
    X = prototypes[y] + rng.normal(0, 120, size=(n, 784))
    return np.clip(X, 0, 255).astype(np.uint8), y


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128, help="rows per step on each process")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--quick", action="store_true", help="6000 rows, 2 epochs")
    parser.add_argument("--out", default=None, help="write the learning curves to this PNG (rank 0)")
    args = parser.parse_args(argv)

    under_torchrun = "WORLD_SIZE" in os.environ  # torchrun sets RANK, WORLD_SIZE, MASTER_ADDR/PORT
    rank, world_size = 0, 1
    if under_torchrun:
        import torch.distributed as dist

        dist.init_process_group("gloo")  # CPU tensors; NCCL takes CUDA tensors only
        rank, world_size = dist.get_rank(), dist.get_world_size()

    n, epochs = (6000, 2) if args.quick else (60000, args.epochs)
    X, y = mnist_like(n)  # the whole data set on every rank: fit shards it
    model = fastreg.SoftmaxRegression(lr=args.lr, batch_size=args.batch_size, epochs=epochs, random_state=0)
    model.fit(X, y)

    if rank == 0:
        seconds = model.history_["seconds"]
        print(
            f"{world_size} process(es), batch {args.batch_size} per process: "
            f"{min(seconds):.3f} s/epoch (best of {epochs}), train loss {model.history_['train_loss'][-1]:.4f}, "
            f"train accuracy {model.score(X, y):.4f}"
        )
        if args.out:
            fastreg.plot.learning_curves(model.history_, args.out, title=f"{world_size} process(es)")
            print(f"wrote {args.out}")
    if under_torchrun:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()

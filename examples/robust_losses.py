"""Squared vs Huber vs L1 loss under Gaussian and Laplace noise (d2l 3.1/3.3
exercises). L1 is the maximum-likelihood loss for Laplace noise, squared for Gaussian
noise; Huber sits between. Plots the error in the recovered weights for each pair.

    python examples/robust_losses.py [--quick] [--out robust_losses.png]
"""

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import fastreg  # noqa: E402
from fastreg.datasets import synthetic_data  # noqa: E402

TRUE_W, TRUE_B = np.array([2.0, -3.4]), 4.2


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="robust_losses.png")
    args = parser.parse_args(argv)

    seeds = range(2 if args.quick else 10)
    epochs = 3 if args.quick else 10
    losses, dists = ("squared", "huber", "l1"), ("normal", "laplace")
    err = {(d, loss): [] for d in dists for loss in losses}
    for dist in dists:
        for seed in seeds:
            X, y = synthetic_data(TRUE_W, TRUE_B, 1000, noise=1.0, noise_dist=dist, seed=seed)
            for loss in losses:
                est = fastreg.LinearRegression(loss=loss, lr=0.05, batch_size=10, epochs=epochs, random_state=seed)
                est.fit(X, y)
                params = np.r_[np.ravel(est.coef_), np.ravel(est.intercept_)]
                err[dist, loss].append(np.linalg.norm(params - np.r_[TRUE_W, TRUE_B]))
    fig, ax = plt.subplots(figsize=(6, 4))
    width = 0.25
    for i, loss in enumerate(losses):
        means = [np.mean(err[d, loss]) for d in dists]
        sds = [np.std(err[d, loss]) for d in dists]
        ax.bar(np.arange(len(dists)) + (i - 1) * width, means, width, yerr=sds, capsize=3, label=loss)
        print(f"{loss:<8}" + "  ".join(f"{d}: |error| {m:.3f}" for d, m in zip(dists, means)))
    ax.set_xticks(range(len(dists)), [f"{d} noise (std 1)" for d in dists])
    ax.set(ylabel="|| (w, b) - true ||", title=f"parameter error, mean over {len(seeds)} seeds")
    ax.legend(title="loss")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

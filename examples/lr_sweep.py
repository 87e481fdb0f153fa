"""Learning-rate sweep (d2l 3.4 exercise): training-loss curves of linear regression
on d2l's synthetic data for several learning rates. Too small crawls, too large diverges.

    python examples/lr_sweep.py [--quick] [--out lr_sweep.png]
"""

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import fastreg  # noqa: E402
from fastreg.datasets import synthetic_data  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs and rates (a few seconds)")
    parser.add_argument("--out", default="lr_sweep.png")
    args = parser.parse_args(argv)

    X, y = synthetic_data([2.0, -3.4], 4.2, 1000, seed=0)
    rates = [0.001, 0.03, 0.5] if args.quick else [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0]
    epochs = 3 if args.quick else 10
    fig, ax = plt.subplots(figsize=(6, 4))
    for lr in rates:
        est = fastreg.LinearRegression(lr=lr, batch_size=10, epochs=epochs, random_state=0)
        est.fit(X, y)
        loss = np.asarray(est.history_["train_loss"], dtype=float)
        ax.plot(est.history_["epoch"], np.where(np.isfinite(loss), loss, np.nan), marker="o", label=f"lr={lr:g}")
        print(f"lr={lr:<6g} final train loss {loss[-1]:.3g}  w={np.ravel(est.coef_).round(3)}")
    ax.set(yscale="log", xlabel="epoch", ylabel="train loss (squared)", title="Learning-rate sweep")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Closed form vs SGD for linear regression (d2l 3.1 exercise), and where the closed
form breaks: with a duplicated feature X^T X is singular, the normal equations have no
unique solution, while SGD still converges to a minimiser with the same predictions.

    python examples/closed_form_vs_sgd.py [--quick] [--out closed_form_vs_sgd.png]
"""

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import fastreg  # noqa: E402
from fastreg.datasets import synthetic_data  # noqa: E402


def mse(est, X, y):
    return float(np.mean((est.predict(X) - y) ** 2) / 2)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="closed_form_vs_sgd.png")
    args = parser.parse_args(argv)

    epochs = 3 if args.quick else 10
    X, y = synthetic_data([2.0, -3.4], 4.2, 1000, noise=0.1, seed=0)
    X_dup = np.c_[X, X[:, :1]]  # third column = first column: rank 2, not 3
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, data, title in ((axes[0], X, "full rank X"), (axes[1], X_dup, "rank-deficient X (duplicated column)")):
        print(f"-- {title}: rank {np.linalg.matrix_rank(data)} of {data.shape[1]}")
        sgd = fastreg.LinearRegression(solver="sgd", lr=0.03, batch_size=10, epochs=epochs, random_state=0)
        sgd.fit(data, y)
        ax.plot(sgd.history_["epoch"], sgd.history_["train_loss"], "o-", label="SGD")
        print(
            f"SGD:         w={np.ravel(sgd.coef_).round(3)} b={np.ravel(sgd.intercept_).round(3)} "
            f"loss={mse(sgd, data, y):.5f}"
        )
        try:
            normal = fastreg.LinearRegression(solver="normal").fit(data, y)
            ax.axhline(mse(normal, data, y), color="k", ls="--", label="closed form")
            print(
                f"closed form: w={np.ravel(normal.coef_).round(3)} b={np.ravel(normal.intercept_).round(3)} "
                f"loss={mse(normal, data, y):.5f}"
            )
        except (ValueError, np.linalg.LinAlgError) as e:
            print(f"closed form: fails: {e}")
            ax.text(
                0.5, 0.6, f"closed form fails:\n{str(e)[:60]}", transform=ax.transAxes, ha="center", color="tab:red"
            )
        ax.set(yscale="log", xlabel="epoch", ylabel="train loss", title=title)
        ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

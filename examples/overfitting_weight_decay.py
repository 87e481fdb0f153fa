"""More epochs -> overfitting, fixed by weight decay (d2l 3.7's experiment): 30 noisy
training examples, 20 features. Without weight decay the test loss reaches its minimum
and then climbs as training goes on (the model fits the noise); with weight decay it
stays near its minimum.

(d2l's version, 200 features and 20 examples, shows this only because it initialises
w ~ N(0, 1); from a small initialisation SGD already finds the small-norm fit.)

    python examples/overfitting_weight_decay.py [--quick] [--out overfitting.png]
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
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="overfitting_weight_decay.png")
    args = parser.parse_args(argv)

    w = np.random.default_rng(0).standard_normal(20)
    X, y = synthetic_data(w, 0.5, 530, noise=1.0, seed=0)
    Xtr, ytr, Xte, yte = X[:30], y[:30], X[30:], y[30:]
    epochs = 20 if args.quick else 100
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, wd in zip(axes, (0.0, 0.1)):
        est = fastreg.LinearRegression(lr=0.05, batch_size=5, epochs=epochs, weight_decay=wd, random_state=0)
        est.fit(Xtr, ytr, eval_set=(Xte, yte))
        h = est.history_
        ax.plot(h["epoch"], h["train_loss"], label="train")
        ax.plot(h["epoch"], h["eval_loss"], label="test")
        ax.set(yscale="log", xlabel="epoch", title=f"weight_decay={wd:g}")
        print(
            f"weight_decay={wd:g}: train loss {h['train_loss'][-1]:.4g}, test loss {h['eval_loss'][-1]:.4g} "
            f"(best {min(h['eval_loss']):.4g}), "
            f"|w| {np.linalg.norm(np.ravel(est.coef_)):.3f}"
        )
    axes[0].set_ylabel("squared loss")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Zero vs normal initialisation (d2l 3.6 exercise) for softmax regression on the digits.

Softmax regression is convex with no hidden layer, so zero initialisation is fine here:
both curves reach the same accuracy (symmetry only hurts once there are hidden units).

    python examples/init_zero_vs_normal.py [--quick] [--out init.png]
"""

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import fastreg  # noqa: E402
from fastreg.datasets import load_digits  # noqa: E402

ZERO_INIT = "zeros"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="init_zero_vs_normal.png")
    args = parser.parse_args(argv)

    X, y = load_digits()
    Xtr, ytr, Xte, yte = X[:1300], y[:1300], X[1300:], y[1300:]
    epochs = 3 if args.quick else 15
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5))
    for init in (ZERO_INIT, "normal"):
        est = fastreg.SoftmaxRegression(lr=0.1, batch_size=32, epochs=epochs, init=init, random_state=0)
        est.fit(Xtr, ytr, eval_set=(Xte, yte))
        h = est.history_
        ax_loss.plot(h["epoch"], h["train_loss"], marker="o", label=f"init={init}")
        ax_acc.plot(h["epoch"], h["eval_acc"], marker="o", label=f"init={init}")
        print(f"init={init:<7} test accuracy {est.score(Xte, yte):.4f}")
    ax_loss.set(xlabel="epoch", ylabel="train loss", title="training loss")
    ax_acc.set(xlabel="epoch", ylabel="test accuracy", title="test accuracy")
    ax_loss.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

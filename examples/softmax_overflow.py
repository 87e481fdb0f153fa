"""Why softmax needs the max-subtraction trick (d2l 3.6/3.7): the naive float32
``exp(z) / sum(exp(z))`` overflows once a logit passes ~88 (exp(89) > 3.4e38) and gives
NaN, while fastreg's fused kernel stays exact. Plots the error against a float64
reference as the largest logit grows (the d2l exercise looks at exp(50) and beyond).

    python examples/softmax_overflow.py [--quick] [--out softmax_overflow.png]
"""

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fastreg import ops  # noqa: E402


def naive_softmax(z):
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)


def reference(z):
    z = z.astype(np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="softmax_overflow.png")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    base = rng.standard_normal((256, 10)).astype(np.float32)
    shifts = np.linspace(0, 120, 13 if args.quick else 121)
    naive_err, fast_err = [], []
    for s in shifts:
        z = base.copy()
        z[:, 0] += np.float32(s)  # one large logit per row
        ref = reference(z)
        naive = naive_softmax(z)
        naive_err.append(np.max(np.abs(naive - ref)) if np.isfinite(naive).all() else np.inf)
        fast_err.append(np.max(np.abs(ops.softmax(z) - ref)))
    naive_err, fast_err = np.array(naive_err), np.array(fast_err)
    first_bad = shifts[np.argmax(~np.isfinite(naive_err))] if (~np.isfinite(naive_err)).any() else None
    print(
        f"naive float32 softmax gives NaN/inf from a logit shift of {first_bad:g}"
        if first_bad is not None
        else "naive softmax never overflowed"
    )
    print(f"fastreg.ops.softmax max error over all shifts: {fast_err.max():.2e}")

    fig, ax = plt.subplots(figsize=(6.5, 4))
    finite = np.isfinite(naive_err)
    ax.semilogy(
        shifts[finite], np.maximum(naive_err[finite], 1e-12), "o--", ms=3, zorder=3, label="naive exp(z)/sum exp(z)"
    )
    if (~finite).any():
        ax.axvspan(shifts[~finite].min(), shifts.max(), color="tab:red", alpha=0.15, label="naive: NaN (overflow)")
    ax.semilogy(shifts, np.maximum(fast_err, 1e-12), "s-", label="fastreg.ops.softmax")
    ax.axvline(50, color="gray", ls=":", lw=1)
    ax.set(
        xlabel="largest logit (shift added to one class)",
        ylabel="max |error| vs float64",
        title="float32 softmax: naive vs stable",
    )
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

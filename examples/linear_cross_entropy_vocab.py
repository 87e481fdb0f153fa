"""Softmax regression over a large vocabulary (d2l chapter 3's exercise): what goes wrong as
the number of classes V grows? Time grows with V (the three products h W^T, G W and G^T h
are 6 N D V flops), and so does memory: torch's ``F.cross_entropy(F.linear(h, W), y)`` holds
the [N, V] logits, their log-softmax and their gradient. ``fastreg.ops.linear_cross_entropy``
never builds them. Measures forward+backward time and peak extra memory against V for both,
prints the table and plots it.

    python examples/linear_cross_entropy_vocab.py [--quick] [--out linear_cross_entropy_vocab.png]

Peak extra memory, in a fresh process per library: the RSS high-water mark is reset just before
each call (Linux ``/proc/self/clear_refs``); the extra is that mark after the call minus the RSS
before it, less the gradients' own bytes (tracemalloc would not see BLAS's or torch's buffers).
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

import numpy as np


def data(n, d, v):
    rng = np.random.default_rng(0)
    h = (rng.standard_normal((n, d)) * 0.1).astype(np.float32)
    w = (rng.standard_normal((v, d)) * 0.1).astype(np.float32)
    return h, w, rng.integers(0, v, n)


def step(impl, h, w, y):
    if impl == "fastreg":
        from fastreg.ops import linear_cross_entropy_with_grad

        return linear_cross_entropy_with_grad(h, w, y)[0]
    import torch
    import torch.nn.functional as F

    ht, wt = torch.from_numpy(h).requires_grad_(), torch.from_numpy(w).requires_grad_()
    loss = F.cross_entropy(F.linear(ht, wt), torch.from_numpy(y))
    loss.backward()
    return loss.item()


def _status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))


def measure_memory(impl, n, d, vocabs):
    """Runs in the subprocess: prints the peak extra bytes of one call per V."""
    step(impl, *data(16, d, 100))  # libraries and BLAS loaded before the first baseline
    for v in vocabs:
        h, w, y = data(n, d, v)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # the high-water mark restarts at the current RSS
        before = _status("VmRSS")
        step(impl, h, w, y)
        print(_status("VmHWM") - before - h.nbytes - w.nbytes)
        del h, w, y


def peak_extra(impl, n, d, vocabs):
    """[peak extra bytes per V] from one fresh process; glibc's mmap threshold is pinned so that
    every large buffer is mapped and unmapped (the default threshold grows after a free, and
    freed memory would then stay in RSS and be reused by the next call)."""
    code = (
        f"import sys; sys.path[:0] = {sys.path!r}; import linear_cross_entropy_vocab as m; "
        f"m.measure_memory({impl!r}, {n}, {d}, {list(vocabs)!r})"
    )
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return [int(line) for line in out.stdout.split()]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, one run each")
    parser.add_argument("--out", default="linear_cross_entropy_vocab.png")
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, d = (256, 64) if args.quick else (2048, 256)
    vocabs = [1000, 4000, 16000] if args.quick else [4000, 8000, 16000, 32000, 64000]
    repeats = 1 if args.quick else 3
    rows = []
    print(f"N={n} D={d} float32, forward+backward; times are medians of {repeats} (the machine may be shared)")
    print(f"{'V':>7} {'torch s':>9} {'fastreg s':>10} {'speed-up':>9} {'torch MiB':>10} {'fastreg MiB':>12}")
    for v in vocabs:
        h, w, y = data(n, d, v)
        ref = step("torch", h, w, y)
        assert abs(step("fastreg", h, w, y) - ref) <= 1e-4 * abs(ref), "fastreg and torch disagree"
        t = {}
        for impl in ("torch", "fastreg"):
            runs = []
            for _ in range(repeats):
                start = time.perf_counter()
                step(impl, h, w, y)
                runs.append(time.perf_counter() - start)
            t[impl] = statistics.median(runs)
        rows.append((v, t["torch"], t["fastreg"]))
    mem = {impl: np.array(peak_extra(impl, n, d, vocabs)) / 2**20 for impl in ("torch", "fastreg")}
    for (v, tt, tf), mt, mf in zip(rows, mem["torch"], mem["fastreg"]):
        print(f"{v:>7} {tt:>9.3f} {tf:>10.3f} {tt / tf:>8.2f}x {mt:>10.1f} {mf:>12.1f}")
    v, tt, tf = map(np.array, zip(*rows))
    mt, mf = mem["torch"], mem["fastreg"]
    print(
        f"torch's extra memory grows by {np.polyfit(v, mt, 1)[0] * 1024:.1f} KiB per class "
        f"(~{np.polyfit(v, mt, 1)[0] * 2**20 / (4 * n):.1f} float32 [N, V] arrays); "
        f"fastreg's by {np.polyfit(v, mf, 1)[0] * 1024:.1f} KiB per class"
    )

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(v, tt, "o-", label="torch F.linear + F.cross_entropy")
    ax1.plot(v, tf, "s-", label="fastreg.ops.linear_cross_entropy")
    ax1.set(xlabel="vocabulary size V", ylabel="forward+backward time (s)", title=f"time, N={n} D={d}")
    ax2.plot(v, mt, "o-", label="torch")
    ax2.plot(v, mf, "s-", label="fastreg")
    ax2.set(xlabel="vocabulary size V", ylabel="peak extra memory (MiB)", title="memory beyond inputs and gradients")
    for ax in (ax1, ax2):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

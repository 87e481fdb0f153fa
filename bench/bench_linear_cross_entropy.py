"""Fused linear + cross-entropy, forward + backward, float32: fastreg.ops vs torch's
F.cross_entropy(F.linear(h, W), y) with autograd, and the floor: the three GEMMs alone
(logits = h W^T, grad_h = G W, grad_W = G^T h) on SciPy's BLAS, the one fastreg calls.

N = 4096, D = 512, V = 32000; V = 128256 too with FASTREG_BENCH_BIG=1 (about 2 GB per [N, V]
float32 array for torch, and minutes per round on two cores). No bias (LLM heads have none).

Peak extra memory: in a fresh subprocess, with the inputs made and the libraries loaded, the
RSS high-water mark is reset (``5 > /proc/self/clear_refs``), one call runs, and the extra is
VmHWM after it minus VmRSS before it, less the gradients' own bytes (tracemalloc would not see
BLAS's or torch's buffers).

    python bench/bench_linear_cross_entropy.py [V ...]   # medians of 5 runs (FASTREG_BENCH_ROUNDS) and peak memory
    pytest bench/bench_linear_cross_entropy.py           # the pytest-benchmark group
"""

import os
import statistics
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from fastreg.linear import _ensure_blas
from fastreg.ops import linear_cross_entropy_with_grad

N, D = 4096, 512
VOCABS = [32000] + ([128256] if os.environ.get("FASTREG_BENCH_BIG") else [])
SMOKE = (64, 32, 1000)  # --benchmark-disable: each case once, small


def _data(n, d, v):
    rng = np.random.default_rng(0)
    h = (rng.standard_normal((n, d)) * 0.1).astype(np.float32)
    w = (rng.standard_normal((v, d)) * 0.1).astype(np.float32)
    return h, w, rng.integers(0, v, n)


def fastreg_step(h, w, y):
    return linear_cross_entropy_with_grad(h, w, y)


def torch_step(h, w, y):
    ht, wt = torch.from_numpy(h).requires_grad_(), torch.from_numpy(w).requires_grad_()
    loss = F.cross_entropy(F.linear(ht, wt), torch.from_numpy(y))
    loss.backward()
    return loss.detach(), ht.grad, wt.grad, None


def floor_step(h, w, y):
    from scipy.linalg import blas

    z = blas.sgemm(1.0, h, w, trans_b=True)  # [N, V]: stands in for the gradient of the logits
    return blas.sgemm(1.0, z, w), blas.sgemm(1.0, z, h, trans_a=True)


IMPLS = {"fastreg": fastreg_step, "torch": torch_step, "three-gemms-floor": floor_step}


def _check(h, w, y):
    """fastreg against torch (float32 both) before anything is timed."""
    got, want = fastreg_step(h, w, y), torch_step(h, w, y)
    for g, r in zip(got[:3], want[:3]):
        r = r.numpy()
        assert np.linalg.norm(g - r) <= 1e-4 * np.linalg.norm(r)


@pytest.mark.parametrize("v", VOCABS)
@pytest.mark.parametrize("impl", list(IMPLS))
def test_linear_cross_entropy_fwd_bwd(benchmark, impl, v):
    n, d, v = SMOKE if benchmark.disabled else (N, D, v)
    benchmark.group = f"linear_cross_entropy fwd+bwd {N}x{D}x{v}"
    _ensure_blas()
    h, w, y = _data(n, d, v)
    if impl == "fastreg":
        _check(h, w, y)
    benchmark.pedantic(IMPLS[impl], args=(h, w, y), rounds=3, iterations=1, warmup_rounds=1)


_MEMORY_CODE = """
import sys
import numpy as np
sys.path[:0] = {path!r}
import torch
sys.path.insert(0, {bench!r})
from bench_linear_cross_entropy import _data, IMPLS
from fastreg.linear import _ensure_blas
_ensure_blas()
impl, n, d, v = {impl!r}, {n}, {d}, {v}
small = _data(64, d, 500)
IMPLS[impl](*small)  # libraries, threads and BLAS buffers loaded before the baseline
h, w, y = _data(n, d, v)
def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the high-water mark restarts at the current RSS
before = status("VmRSS")
out = IMPLS[impl](h, w, y)
grads = h.nbytes + w.nbytes if impl != "three-gemms-floor" else 0
print(status("VmHWM") - before - grads)
"""


def peak_extra_bytes(impl, n, d, v):
    """RSS high-water growth of one call in a fresh process, gradients' bytes left out (Linux)."""
    code = _MEMORY_CODE.format(
        path=sys.path, bench=os.path.dirname(os.path.abspath(__file__)), impl=impl, n=n, d=d, v=v
    )
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=True)
    return int(proc.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self")
def test_linear_cross_entropy_peak_memory(request):
    full = not request.config.getoption("benchmark_disable", False)
    # Smoke: 2048 rows, ~260 MB of logits; the kernel's [256, V] buffer is then 1/8 of one of them.
    n, d, v = (N, D, VOCABS[0]) if full else (2048, 32, 32000)
    fast, ref = peak_extra_bytes("fastreg", n, d, v), peak_extra_bytes("torch", n, d, v)
    print(f"peak extra memory at {n}x{d}x{v}: fastreg {fast / 2**20:.1f} MiB, torch {ref / 2**20:.1f} MiB")
    assert fast <= (0.03 if full else 0.1) * ref


def main(vocabs, rounds=5):
    _ensure_blas()
    for v in vocabs:
        h, w, y = _data(N, D, v)
        _check(h, w, y)
        times = {name: [] for name in IMPLS}
        for _ in range(rounds):  # interleaved, so that a noisy neighbour hits every case alike
            for name, fn in IMPLS.items():
                t = time.perf_counter()
                fn(h, w, y)
                times[name].append(time.perf_counter() - t)
        med = {name: statistics.median(t) for name, t in times.items()}
        print(
            f"N={N} D={D} V={v} float32, median of {rounds} (s): "
            + ", ".join(f"{k} {m:.2f} [{min(times[k]):.2f}-{max(times[k]):.2f}]" for k, m in med.items())
        )
        print(
            f"  torch / fastreg = {med['torch'] / med['fastreg']:.2f}x, "
            f"fastreg / floor = {med['fastreg'] / med['three-gemms-floor']:.2f}x"
        )
        mem = {k: peak_extra_bytes(k, N, D, v) for k in ("fastreg", "torch")}
        print(
            f"  peak extra memory: fastreg {mem['fastreg'] / 2**20:.1f} MiB, torch {mem['torch'] / 2**20:.1f} MiB "
            f"({100 * mem['fastreg'] / mem['torch']:.1f}%)",
            flush=True,
        )


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or VOCABS, int(os.environ.get("FASTREG_BENCH_ROUNDS", "5")))

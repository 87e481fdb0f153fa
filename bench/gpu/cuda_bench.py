"""GPU benchmark of fastreg's CUDA cross-entropy and SGD (run by bench/gpu/run.sh).

Every case checks fastreg's answer against torch before it is timed. Times are the
median of CUDA-event-timed calls after a warm-up; inputs are random (never zeros).
Writes JSON (argv[1]) and prints the table (bench/gpu/table.py).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

import fastreg.cuda
import fastreg.torch as ft

sys.path.insert(0, os.path.dirname(__file__))
from table import render  # noqa: E402

BUDGET_S = float(os.environ.get("BENCH_BUDGET_S", "200"))  # torch.compile is skipped past this
T0 = time.monotonic()


def timeit(fn, reps=40, warmup=5):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e))
    return statistics.median(times)


def copy_bandwidth():
    src = torch.randn(256 * 2**20, device="cuda")  # 1 GiB, far past the 60 MB L2
    dst = torch.empty_like(src)
    ms = timeit(lambda: dst.copy_(src), reps=20)
    mine = timeit(lambda: fastreg.cuda.device_copy(dst, src), reps=20)
    assert torch.equal(dst, src)
    nbytes = 2 * src.numel() * 4
    return nbytes / (ms * 1e-3) / 1e9, nbytes / (mine * 1e-3) / 1e9


def _liger():
    try:
        from liger_kernel.transformers.functional import liger_cross_entropy
    except Exception as err:  # noqa: BLE001 - optional provider
        print(f"liger-kernel not available: {err}")
        return None
    return liger_cross_entropy


def ce_rows(liger):
    rows = []
    compiled = torch.compile(lambda x, t: F.cross_entropy(x, t))
    for dtype in (torch.float32, torch.bfloat16):
        for n, c in ((8192, 32000), (4096, 128256), (16384, 10), (256, 10)):
            x = (torch.randn(n, c, device="cuda") * 2).to(dtype).requires_grad_(True)
            t = torch.randint(0, c, (n,), device="cuda")

            def run(f, x=x, t=t):
                def go():
                    x.grad = None
                    f(x, t).backward()

                return go

            # correctness first
            x.grad = None
            a = ft.cross_entropy(x, t)
            a.backward()
            ga = x.grad.clone()
            x.grad = None
            b = F.cross_entropy(x.float(), t)
            b.backward()
            err = (ga.float() - x.grad.float()).norm() / x.grad.float().norm()
            assert err < (1e-4 if dtype == torch.float32 else 2e-2), f"fastreg grad off by {err:.2e}"
            assert abs(a.item() - b.item()) < 1e-3 * max(1.0, abs(b.item()))
            del ga
            row = dict(
                case=f"CE fwd+bwd {str(dtype)[6:]} {n}x{c}", bytes=2 * n * c * x.element_size() + 8 * n
            )  # read logits, write grad, read labels
            row["fastreg_ms"] = timeit(run(ft.cross_entropy))
            row["torch_ms"] = timeit(run(F.cross_entropy))
            row["compile_ms"] = timeit(run(compiled)) if time.monotonic() - T0 < BUDGET_S else None
            if liger is not None:
                row["other_ms"] = timeit(run(liger))
                row["other"] = "liger"
            rows.append(row)
            print(row, flush=True)
            del x, t
            torch.cuda.empty_cache()
    return rows


def sgd_rows():
    rows = []
    for name, sizes in (("SGD momentum 1x10M f32", [10_000_000]), ("SGD momentum 100x100k f32", [100_000] * 100)):
        base = [torch.randn(s, device="cuda") for s in sizes]
        grads = [torch.randn(s, device="cuda") for s in sizes]

        def make(factory, base=base, grads=grads):
            ps = [b.clone().requires_grad_(True) for b in base]
            for p, g in zip(ps, grads):
                p.grad = g
            return ps, factory(ps)

        mine, opt = make(lambda ps: ft.SGD(ps, lr=1e-3, momentum=0.9))
        ref, ropt = make(lambda ps: torch.optim.SGD(ps, lr=1e-3, momentum=0.9, foreach=False))
        for _ in range(3):
            opt.step()
            ropt.step()
        for p, q in zip(mine, ref):
            torch.testing.assert_close(p, q)
        n = sum(sizes)
        row = dict(case=name, bytes=5 * 4 * n)  # read p, g, buf; write p, buf
        row["fastreg_ms"] = timeit(opt.step)
        _, fused = make(lambda ps: torch.optim.SGD(ps, lr=1e-3, momentum=0.9, fused=True))
        _, foreach = make(lambda ps: torch.optim.SGD(ps, lr=1e-3, momentum=0.9, foreach=True))
        row["torch_ms"] = timeit(fused.step)
        row["compile_ms"] = timeit(foreach.step)
        rows.append(row)
        print(row, flush=True)
    return rows


def main(path):
    assert fastreg.cuda.is_available(), fastreg.cuda.unavailable_reason()
    torch.manual_seed(0)
    copy, mine = copy_bandwidth()
    print(f"copy bandwidth: torch {copy:.0f} GB/s, fastreg device_copy {mine:.0f} GB/s", flush=True)
    rows = ce_rows(_liger()) + sgd_rows()
    results = dict(
        device=f"{torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}",
        copy_gbs=copy,
        fastreg_copy_gbs=mine,
        rows=rows,
        notes="CE: vs eager F.cross_entropy, torch.compile, liger; SGD: vs torch fused=True, foreach=True",
    )
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    print(render(results))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench_cuda.json")

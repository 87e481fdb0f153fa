"""The one table bench/gpu/run.sh prints last, rendered from cuda_bench.py's JSON.

``python bench/gpu/table.py RESULTS.json`` re-renders a saved run.
"""

from __future__ import annotations

import json
import sys


def _ms(v):
    return "n/a" if v is None else f"{v:.4f}"


def _x(a, b):
    return "n/a" if a is None or b is None or a <= 0 else f"{b / a:.2f}x"


def render(results: dict) -> str:
    """results: {"device": str, "copy_gbs": float, "rows": [{"case", "bytes", "fastreg_ms",
    "torch_ms", "compile_ms", "other_ms", "other"}]}; times are medians in ms.
    Columns: fastreg's time, its GB/s over the bytes the op must move (each input read
    once, each output written once) and that as a share of the measured copy bandwidth,
    and speed-ups over torch eager, torch.compile (CE) or foreach (SGD), and a third
    provider (Liger-Kernel for CE, torch fused=True for SGD)."""
    copy = results.get("copy_gbs")
    head = ["case", "fastreg ms", "GB/s", "% copy", "vs eager/fused", "vs compile/foreach", "vs other", "other"]
    lines = []
    for r in results["rows"]:
        t = r.get("fastreg_ms")
        gbs = None if t is None else r["bytes"] / (t * 1e-3) / 1e9
        share = "n/a" if gbs is None or not copy else f"{100 * gbs / copy:.0f}%"
        lines.append(
            [
                r["case"],
                _ms(t),
                "n/a" if gbs is None else f"{gbs:.0f}",
                share,
                _x(t, r.get("torch_ms")),
                _x(t, r.get("compile_ms")),
                _x(t, r.get("other_ms")),
                r.get("other") or "",
            ]
        )
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [
        f"device: {results.get('device', '?')}; copy bandwidth (read + write): "
        + ("n/a" if copy is None else f"{copy:.0f} GB/s"),
        fmt.format(*head),
        fmt.format(*["-" * w for w in widths]),
    ]
    out += [fmt.format(*row) for row in lines]
    return "\n".join(out)


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        print(render(json.load(f)))

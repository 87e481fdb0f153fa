"""Render the README's performance table (and a plot) from one recorded benchmark run.

    pytest bench --benchmark-json=docs/bench/latest.json
    python bench/render.py docs/bench/latest.json            # rewrites README.md's table
    python bench/render.py docs/bench/latest.json --png docs/img/bench.png

Within each group, the case whose parameter id is ``fastreg`` is compared with the
references a user would otherwise run (torch, d2l, scikit-learn), in the same run. The
table says what produced the figures: CPU, SIMD level, BLAS and its core type, threads.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from collections import defaultdict

ROOT = pathlib.Path(__file__).resolve().parents[1]
START, END = "<!-- bench-table:start -->", "<!-- bench-table:end -->"

# References shown in the README, in the order a user would reach for them. Other cases
# (one-thread loops, NumPy copies, premade batches) are floors and ablations: in the JSON
# and in bench/ratios.py, not on the front page.
REFERENCES = (
    "torch-d2l-concise",
    "torch-index-batching",
    "torch",
    "torch-default",
    "torch-foreach",
    "torch-DataLoader",
    "d2l-naive",
    "d2l-data_iter",
    "sklearn",
)


def _impl(bench: dict) -> str:
    """The case's implementation: its ``impl`` (or ``who``) parameter, as the bench files name it."""
    params = bench.get("params") or {}
    return str(params.get("impl", params.get("who", bench.get("param") or bench["name"])))


def _fmt_time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} µs"


def load(path: str) -> tuple[dict, dict[str, dict[str, dict]]]:
    data = json.loads(pathlib.Path(path).read_text())
    groups: dict[str, dict[str, dict]] = defaultdict(dict)
    for b in data["benchmarks"]:
        groups[b["group"] or b["name"]][_impl(b)] = b["stats"]
    return data, groups


def rows(groups: dict[str, dict[str, dict]]) -> list[dict]:
    out = []
    for group in sorted(groups):
        cases = groups[group]
        # fastreg's case: "fastreg"; else "fastreg-torch" (torch tensors in, as the torch
        # reference takes them); else a group's only "fastreg-<variant>" (the drop-ins).
        variants = [k for k in cases if k.startswith("fastreg-")]
        ours = (
            "fastreg"
            if "fastreg" in cases
            else "fastreg-torch"
            if "fastreg-torch" in cases
            else (variants[0] if len(variants) == 1 else None)
        )
        if ours is None:
            continue
        f = cases[ours]
        refs = [(ref, cases[ref]) for ref in REFERENCES if ref in cases]
        refs += [(k, s) for k, s in cases.items() if k.startswith("torch-") and k not in REFERENCES]
        if not refs:
            continue
        out.append({"group": group, "fastreg": f, "refs": refs[:2]})
    return out


def machine_line(data: dict) -> str:
    mi = data.get("machine_info", {})
    cpu = mi.get("cpu", {}).get("brand_raw", "?")
    extra = mi.get("fastreg", {})
    bits = [f"{cpu}, {mi.get('cpu', {}).get('count', '?')} CPUs", f"Python {mi.get('python_version', '?')}"]
    keys = ("version", "simd", "threads", "blas", "blas_coretype", "torch", "numpy", "scipy")
    bits.extend(f"{key} {extra[key]}" for key in keys if key in extra)
    when = data.get("datetime", "?")[:16].replace("T", " ")
    return f"Run of {when} UTC on {'; '.join(bits)}."


def table(data: dict, groups: dict) -> str:
    lines = [
        machine_line(data),
        "Medians (min-max) of one run of `pytest bench`; speed-up = reference median / fastreg median.",
        "",
        "| benchmark | fastreg | reference | speed-up |",
        "|---|---|---|---|",
    ]
    for r in rows(groups):
        f = r["fastreg"]
        ft = f"{_fmt_time(f['median'])} ({_fmt_time(f['min'])}-{_fmt_time(f['max'])})"
        for i, (name, s) in enumerate(r["refs"]):
            lines.append(
                f"| {r['group'] if i == 0 else ''} | {ft if i == 0 else ''} | {name} {_fmt_time(s['median'])} "
                f"| {s['median'] / f['median']:.1f}x |"
            )
    return "\n".join(lines)


def write_readme(text: str, readme: pathlib.Path) -> None:
    src = readme.read_text()
    if START not in src or END not in src:
        raise SystemExit(f"{readme} has no {START} ... {END} markers")
    head, rest = src.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{text}\n{END}{tail}")


def plot(groups: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rs = rows(groups)
    labels = [r["group"] for r in rs]
    ratios = [r["refs"][0][1]["median"] / r["fastreg"]["median"] for r in rs]
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(rs) + 1.2))
    ax.barh(range(len(rs)), ratios, color="#3a7")
    ax.set_yticks(range(len(rs)), [f"{lab} vs {r['refs'][0][0]}" for lab, r in zip(labels, rs)], fontsize=7)
    ax.set_xscale("log")
    ax.axvline(1, color="k", lw=0.8)
    ax.set_xlabel("speed-up over the reference (median, log scale)")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("json", help="pytest-benchmark JSON of one run")
    p.add_argument("--readme", default=str(ROOT / "README.md"), help="file whose marked table is replaced")
    p.add_argument("--png", help="also draw the speed-ups to this PNG")
    p.add_argument("--print", action="store_true", help="print the table instead of writing the README")
    args = p.parse_args(argv)
    data, groups = load(args.json)
    text = table(data, groups)
    if args.print:
        print(text)
    else:
        write_readme(text, pathlib.Path(args.readme))
    if args.png:
        plot(groups, args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())

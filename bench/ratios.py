"""Print median times and speed-up ratios per benchmark group.

Usage: pytest bench --benchmark-json=out.json && python bench/ratios.py out.json
Within a group, the case whose name contains 'fastreg' is compared with each other case.
"""

import json
import sys
from collections import defaultdict


def main(path: str) -> None:
    with open(path) as f:
        data = json.load(f)
    groups = defaultdict(list)
    for b in data["benchmarks"]:
        name = b["name"].removeprefix("test_")
        groups[b["group"] or "-"].append((name, b["stats"]["median"]))
    machine = data.get("machine_info", {})
    print(f"# {machine.get('cpu', {}).get('brand_raw', '?')}, {machine.get('python_version', '?')}")
    print(f"{'group':<34} {'case':<44} {'median':>11} {'fastreg speed-up':>17}")
    for group, cases in sorted(groups.items()):
        fast = [t for name, t in cases if "fastreg" in name]
        for name, t in sorted(cases, key=lambda c: c[1]):
            ratio = f"{t / fast[0]:.2f}x" if fast and "fastreg" not in name else ""
            print(f"{group:<34} {name:<44} {t * 1e3:>9.3f}ms {ratio:>17}")


if __name__ == "__main__":
    main(sys.argv[1])

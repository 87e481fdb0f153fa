"""bench/render.py: the README's table is computed from a run's JSON, not typed in."""

import importlib.util
import json
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("bench_render", ROOT / "bench" / "render.py")
render = importlib.util.module_from_spec(spec)
spec.loader.exec_module(render)


def _bench(group, impl, median, lo=None, hi=None):
    lo = median if lo is None else lo
    hi = median if hi is None else hi
    return {
        "group": group,
        "name": f"test_x[{impl}]",
        "params": {"impl": impl},
        "stats": {"median": median, "min": lo, "max": hi},
    }


@pytest.fixture
def run(tmp_path):
    data = {
        "datetime": "2026-12-04T18:15:00",
        "machine_info": {
            "cpu": {"brand_raw": "Test CPU", "count": 2},
            "python_version": "3.11.7",
            "fastreg": {"simd": "avx512", "blas": "openblas 0.3.30"},
        },
        "benchmarks": [
            _bench("xent 256x10", "fastreg", 2e-6, 1e-6, 5e-6),
            _bench("xent 256x10", "torch", 8e-5),
            _bench("xent 256x10", "numpy-copy", 1e-6),  # a floor, not a reference: not shown
            _bench("no reference here", "fastreg", 1.0),
            _bench("drop-in", "fastreg-Loss", 0.5),
            _bench("drop-in", "torch-Loss", 1.5),
        ],
    }
    path = tmp_path / "run.json"
    path.write_text(json.dumps(data))
    return path


def test_table_ratios_and_machine(run):
    data, groups = render.load(str(run))
    text = render.table(data, groups)
    assert "Test CPU, 2 CPUs" in text and "simd avx512" in text and "openblas 0.3.30" in text
    assert "| xent 256x10 | 2 µs (1 µs-5 µs) | torch 80 µs | 40.0x |" in text
    assert "| drop-in | 500 ms (500 ms-500 ms) | torch-Loss 1.50 s | 3.0x |" in text
    assert "numpy-copy" not in text and "no reference here" not in text


def test_readme_markers_replaced_in_place(run, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"head\n{render.START}\nold table\n{render.END}\ntail\n")
    render.main([str(run), "--readme", str(readme)])
    text = readme.read_text()
    assert text.startswith("head\n") and text.endswith("tail\n") and "old table" not in text
    assert "40.0x" in text
    bare = tmp_path / "bare.md"
    bare.write_text("no markers")
    with pytest.raises(SystemExit, match="markers"):
        render.main([str(run), "--readme", str(bare)])

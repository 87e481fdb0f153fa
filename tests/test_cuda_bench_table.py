"""bench/gpu/table.py renders the GPU run's table from its JSON (checked on made-up
inputs: these are not measurements)."""

import importlib.util
import pathlib

spec = importlib.util.spec_from_file_location(
    "gpu_table", pathlib.Path(__file__).parents[1] / "bench" / "gpu" / "table.py"
)
table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(table)


def test_table_computes_bandwidth_share_and_speedups():
    res = {
        "device": "made-up",
        "copy_gbs": 4000.0,
        "rows": [
            {"case": "a", "bytes": 2e9, "fastreg_ms": 1.0, "torch_ms": 3.0, "compile_ms": 1.5, "other_ms": None},
            {
                "case": "b",
                "bytes": 1e6,
                "fastreg_ms": None,
                "torch_ms": 1.0,
                "compile_ms": None,
                "other_ms": 2.0,
                "other": "liger",
            },
        ],
    }
    lines = table.render(res).splitlines()
    assert "4000 GB/s" in lines[0]
    a = lines[3].split()
    assert a[:7] == ["a", "1.0000", "2000", "50%", "3.00x", "1.50x", "n/a"]
    b = lines[4].split()
    assert b[:4] == ["b", "n/a", "n/a", "n/a"] and b[-1] == "liger"
    assert len({len(line) for line in lines[1:3]}) == 1  # header and rule line up


def test_table_without_copy_bandwidth():
    out = table.render({"rows": [{"case": "x", "bytes": 1e9, "fastreg_ms": 2.0}]})
    assert "copy bandwidth (read + write): n/a" in out and "500" in out

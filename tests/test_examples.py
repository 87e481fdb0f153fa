"""Each example runs in its quick mode, exits 0 and writes a PNG."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import fastreg

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# example -> the parts of fastreg it needs (skipped, with the reason, where they are missing)
REQUIRES = {
    "batch_size_speed.py": ["data_iter"],
    "closed_form_vs_sgd.py": ["LinearRegression"],
    "distributed_fit.py": ["SoftmaxRegression"],
    "init_zero_vs_normal.py": ["SoftmaxRegression"],
    "linear_cross_entropy_vocab.py": ["ops"],
    "lr_sweep.py": ["LinearRegression"],
    "overfitting_weight_decay.py": ["LinearRegression"],
    "robust_losses.py": ["LinearRegression"],
    "softmax_overflow.py": ["ops"],
}


def test_every_example_is_listed():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(REQUIRES)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REQUIRES))
def test_example_runs_quick(tmp_path, name):
    pytest.importorskip("matplotlib")
    missing = [attr for attr in REQUIRES[name] if not hasattr(fastreg, attr)]
    if missing:
        pytest.skip(f"needs fastreg.{', fastreg.'.join(missing)}")
    out = tmp_path / "out.png"
    # The examples must import the fastreg under test, not one installed elsewhere: a relative
    # PYTHONPATH (PYTHONPATH=python) would not resolve from tmp_path.
    package_root = str(Path(fastreg.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {out}" in proc.stdout

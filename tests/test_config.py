import io
import os
import subprocess
import sys

import numpy as np
import pytest

import fastreg
from fastreg import _core


def test_import_does_not_import_torch():
    code = "import sys, fastreg; fastreg.show_config(); assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_show_config_lists_everything():
    buf = io.StringIO()
    fastreg.show_config(file=buf)
    text = buf.getvalue()
    for key in ("fastreg", "compiler", "simd", "threads", "blas", "cuda module", "gpu"):
        assert f"\n{key} " in "\n" + text, key
    assert fastreg.__version__ in text
    assert fastreg.simd_level() in text


def test_threads_roundtrip_and_validation():
    default = fastreg.get_num_threads()
    assert default == _core.default_num_threads() == len(os.sched_getaffinity(0))
    try:
        fastreg.set_num_threads(1)
        assert fastreg.get_num_threads() == 1
        fastreg.set_num_threads(np.int64(3))
        assert fastreg.get_num_threads() == 3
        with pytest.raises(ValueError, match=">= 1"):
            fastreg.set_num_threads(0)
        with pytest.raises(TypeError, match="int"):
            fastreg.set_num_threads(2.5)
        with pytest.raises(TypeError, match="int"):
            fastreg.set_num_threads(True)
    finally:
        fastreg.set_num_threads(default)


def test_simd_level_can_be_forced(simd_levels):
    for level in simd_levels:
        fastreg.set_simd_level(level)
        assert fastreg.simd_level() == level
    with pytest.raises(ValueError, match="'auto', 'avx2' or 'scalar'"):
        fastreg.set_simd_level("avx512")
    with pytest.raises(TypeError):
        fastreg.set_simd_level(2)


def test_simd_env_var_forces_scalar():
    env = dict(os.environ, FASTREG_SIMD="scalar")
    out = subprocess.run(
        [sys.executable, "-c", "import fastreg; print(fastreg.simd_level())"],
        check=True, capture_output=True, text=True, env=env,
    )
    assert out.stdout.strip() == "scalar"


def test_cli_info_runs():
    out = subprocess.run(
        [sys.executable, "-m", "fastreg", "info"], check=True, capture_output=True, text=True
    )
    assert "simd" in out.stdout

import io
import os
import subprocess
import sys

import numpy as np
import pytest

import fastreg
from conftest import SIMD_LEVELS, cpu_simd_levels
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


def test_blas_info_matches_threadpoolctl():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    pytest.importorskip("scipy")
    info = fastreg._config.blas_info()  # loads SciPy's BLAS first
    libs = [
        i
        for i in threadpoolctl.threadpool_info()
        if i.get("user_api") == "blas" and "scipy.libs" in i.get("filepath", "")
    ]
    if not libs:
        pytest.skip("threadpoolctl does not see SciPy's BLAS here")
    lib = libs[0]
    assert info["library"] == lib["internal_api"] and info["version"] == lib["version"]
    assert info["core_type"] == lib.get("architecture") and info["threads"] == lib["num_threads"]
    assert info["openblas_coretype"] == os.environ.get("OPENBLAS_CORETYPE")
    line = io.StringIO()
    fastreg.show_config(file=line)
    blas_row = next(r for r in line.getvalue().splitlines() if r.startswith("blas "))
    assert f"{lib['internal_api']} {lib['version']}" in blas_row and f"{lib['num_threads']} threads" in blas_row
    if lib.get("architecture"):
        assert f"core type {lib['architecture']}" in blas_row
    # The environment's own setting is reported as it is (tests never change it).
    coretype = os.environ.get("OPENBLAS_CORETYPE")
    expected = f"OPENBLAS_CORETYPE={coretype}" if coretype is not None else "OPENBLAS_CORETYPE unset"
    assert expected in fastreg._config.config_info()["blas"]


def test_show_config_names_a_forced_simd_level():
    out = subprocess.run(
        [sys.executable, "-c", "import fastreg; fastreg.show_config()"],
        check=True,
        capture_output=True,
        text=True,
        env=dict(os.environ, FASTREG_SIMD="scalar"),
    )
    simd_row = next(r for r in out.stdout.splitlines() if r.startswith("simd "))
    assert f"scalar (cpu supports {cpu_simd_levels()[-1]}; FASTREG_SIMD=scalar)" in simd_row


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
    fastreg.set_simd_level("auto")
    assert fastreg.simd_level() == _core.cpu_simd_level() == cpu_simd_levels()[-1]
    with pytest.raises(ValueError, match="'auto', 'avx512', 'avx2' or 'scalar', got 'avx1024'"):
        fastreg.set_simd_level("avx1024")
    with pytest.raises(TypeError):
        fastreg.set_simd_level(2)


@pytest.mark.parametrize("level", SIMD_LEVELS[1:])
def test_simd_level_the_cpu_lacks_is_refused(level):
    if level in cpu_simd_levels():
        pytest.skip(f"this CPU supports {level}")
    before = fastreg.simd_level()
    with pytest.raises(ValueError, match=f"does not support SIMD level '{level}'"):
        fastreg.set_simd_level(level)
    assert fastreg.simd_level() == before


def _simd_at_import(value):
    env = dict(os.environ, FASTREG_SIMD=value)
    return subprocess.run(
        [sys.executable, "-c", "import fastreg; print(fastreg.simd_level())"], capture_output=True, text=True, env=env
    )


@pytest.mark.parametrize("level", SIMD_LEVELS)
def test_simd_env_var_sets_the_level(level):
    out = _simd_at_import(level)
    if level in cpu_simd_levels():
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == level
    else:
        assert out.returncode != 0
        assert f"FASTREG_SIMD={level} but this CPU" in out.stderr


def test_simd_env_var_auto_and_typos():
    out = _simd_at_import("auto")
    assert out.returncode == 0 and out.stdout.strip() == _core.cpu_simd_level()
    out = _simd_at_import("AVX2")
    assert (
        out.returncode != 0
        and "FASTREG_SIMD must be 'auto', 'scalar', 'avx2', 'avx512' or unset, got 'AVX2'" in out.stderr
    )


def test_cli_info_runs():
    out = subprocess.run([sys.executable, "-m", "fastreg", "info"], check=True, capture_output=True, text=True)
    assert "simd" in out.stdout

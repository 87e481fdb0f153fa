"""Benchmarks: run ``pytest bench`` (timed) or ``pytest bench --benchmark-disable``
(each case once, as CI does so they never rot). Every case checks its answer
before it is timed. ``python bench/ratios.py RESULT.json`` prints the speed-ups.

Each result records what produced it: the saved JSON's machine_info["fastreg"] holds
fastreg's show_config() (SIMD level, threads, the BLAS with its version, core type,
threads and OPENBLAS_CORETYPE), and every benchmark's extra_info the SIMD level, fastreg
threads and BLAS core type and threads at the time it ran. Compare SIMD levels with
``FASTREG_SIMD=avx2 pytest bench ...`` against ``FASTREG_SIMD=avx512 ...``."""

import numpy as np
import pytest

# Rounds of at least 100 us: a microsecond-scale call (a 256x10 loss, a 7850-parameter
# SGD step) is then timed over many calls per round instead of alone, so the harness's
# own per-round cost (two timer reads and a Python loop, ~1-2 us when the call runs
# alone) is not counted as part of the call. Slower calls (torch's) are unaffected.
# An explicit --benchmark-min-time still wins.
MIN_ROUND = "0.0001"


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    try:
        from pytest_benchmark.utils import parse_seconds
    except ImportError:  # another pytest-benchmark layout: keep its defaults
        return
    if config.getoption("benchmark_min_time", None) == parse_seconds("0.000005"):  # pytest-benchmark's default
        config.option.benchmark_min_time = parse_seconds(MIN_ROUND)


def pytest_benchmark_update_machine_info(config, machine_info):
    from fastreg._config import config_info

    machine_info["fastreg"] = config_info()


@pytest.fixture(autouse=True)
def _record_fastreg_config(request):
    if "benchmark" not in request.fixturenames:
        yield
        return
    import fastreg
    from fastreg._config import blas_info

    bench = request.getfixturevalue("benchmark")
    yield
    # After the case: a level or thread count it set is what it ran with.
    blas = blas_info()
    bench.extra_info.update(
        simd=fastreg.simd_level(),
        fastreg_threads=fastreg.get_num_threads(),
        blas=f"{blas.get('library')} {blas.get('version')}",
        blas_core_type=blas.get("core_type"),
        blas_threads=blas.get("threads"),
        openblas_coretype=blas.get("openblas_coretype"),
    )


@pytest.fixture
def rng():
    return np.random.default_rng(0)

"""Benchmarks: run ``pytest bench`` (timed) or ``pytest bench --benchmark-disable``
(each case once, as CI does so they never rot). Every case checks its answer
before it is timed. ``python bench/ratios.py RESULT.json`` prints the speed-ups."""

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


@pytest.fixture
def rng():
    return np.random.default_rng(0)

"""Benchmarks: run ``pytest bench`` (timed) or ``pytest bench --benchmark-disable``
(each case once, as CI does so they never rot). Every case checks its answer
before it is timed. ``python bench/ratios.py RESULT.json`` prints the speed-ups."""

import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(0)

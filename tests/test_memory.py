"""Leaks: repeated kernel calls keep RSS flat, and bindings hold no references."""

import os
import sys

import numpy as np
import pytest

from fastreg import _core
from fastreg.optim import sgd_step

UNDER_ASAN = "asan" in os.environ.get("LD_PRELOAD", "")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(UNDER_ASAN, reason="ASan's allocator quarantine grows RSS by design")
def test_100k_sgd_calls_keep_rss_flat():
    p, g, b = np.zeros(1000, np.float32), np.ones(1000, np.float32), np.zeros(1000, np.float32)
    for _ in range(2000):  # warm-up: let allocator pools settle
        _core.sgd_update(p, g, b, lr=1e-3, momentum=0.9)
    before = _rss_bytes()
    for _ in range(100_000):
        _core.sgd_update(p, g, b, lr=1e-3, momentum=0.9)
    growth = _rss_bytes() - before
    assert growth < 2 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB over 1e5 calls"


def test_bindings_do_not_leak_references():
    p, g, b = np.zeros(64), np.ones(64), np.zeros(64)
    counts = [sys.getrefcount(x) for x in (p, g, b)]
    for _ in range(1000):
        sgd_step([p], [g], [b], lr=1e-3, momentum=0.9)
        with pytest.raises(ValueError):
            _core.sgd_update(p, g[:3], b, lr=1e-3)
    assert [sys.getrefcount(x) for x in (p, g, b)] == counts

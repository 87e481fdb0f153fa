import zlib

import numpy as np
import pytest


@pytest.fixture
def rng(request):
    """A fresh, reproducible generator per test (seeded from the test's name)."""
    # crc32, not hash(): str hashes change per process, and a test's inputs should not.
    seed = zlib.crc32(request.node.nodeid.encode())
    return np.random.default_rng(seed)


@pytest.fixture
def simd_levels():
    """The SIMD levels this CPU can run; restores the default after the test."""
    import fastreg
    from fastreg import _core

    levels = ["scalar"] + (["avx2"] if _core.cpu_simd_level() == "avx2" else [])
    yield levels
    fastreg.set_simd_level("auto")

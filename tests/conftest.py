import zlib

import numpy as np
import pytest


@pytest.fixture
def rng(request):
    """A fresh, reproducible generator per test (seeded from the test's name)."""
    # crc32, not hash(): str hashes change per process, and a test's inputs should not.
    seed = zlib.crc32(request.node.nodeid.encode())
    return np.random.default_rng(seed)


# Every SIMD level fastreg has, lowest first; each includes the ones before it.
SIMD_LEVELS = ("scalar", "avx2", "avx512")


def cpu_simd_levels():
    """The levels this CPU can run: scalar up to the best it supports."""
    from fastreg import _core

    return list(SIMD_LEVELS[: SIMD_LEVELS.index(_core.cpu_simd_level()) + 1])


@pytest.fixture
def simd_levels():
    """The SIMD levels this CPU can run; restores the default after the test."""
    import fastreg

    yield cpu_simd_levels()
    fastreg.set_simd_level("auto")


@pytest.fixture(params=SIMD_LEVELS[1:])
def vector_level(request):
    """Each vector level in turn (skipped where this CPU lacks it), to compare with scalar."""
    import fastreg

    if request.param not in cpu_simd_levels():
        pytest.skip(f"this CPU has no {request.param}")
    yield request.param
    fastreg.set_simd_level("auto")

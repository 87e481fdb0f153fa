import os
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


def tested_simd_levels():
    """The levels the tests run kernels at: the CPU's, capped by FASTREG_SIMD when it names
    a level, so ``FASTREG_SIMD=avx2 pytest`` tests as an AVX2-only machine would."""
    levels = cpu_simd_levels()
    cap = os.environ.get("FASTREG_SIMD", "")
    return levels[: levels.index(cap) + 1] if cap in levels else levels


@pytest.fixture
def simd_levels():
    """The SIMD levels to test; restores the level that was active after the test."""
    import fastreg

    before = fastreg.simd_level()
    yield tested_simd_levels()
    fastreg.set_simd_level(before)


@pytest.fixture(params=SIMD_LEVELS[1:])
def vector_level(request):
    """Each vector level in turn (skipped where this CPU, or FASTREG_SIMD, rules it out), to
    compare with scalar; restores the level that was active after the test."""
    import fastreg

    if request.param not in tested_simd_levels():
        pytest.skip(
            f"{request.param} is not available here (CPU best: {cpu_simd_levels()[-1]}, "
            f"FASTREG_SIMD={os.environ.get('FASTREG_SIMD')!r})"
        )
    before = fastreg.simd_level()
    yield request.param
    fastreg.set_simd_level(before)

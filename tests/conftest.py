import numpy as np
import pytest


@pytest.fixture
def rng(request):
    """A fresh, reproducible generator per test (seeded from the test's name)."""
    seed = abs(hash(request.node.nodeid)) % (2**32)
    return np.random.default_rng(seed)


@pytest.fixture
def simd_levels():
    """The SIMD levels this CPU can run; restores the default after the test."""
    import fastreg
    from fastreg import _core

    levels = ["scalar"] + (["avx2"] if _core.cpu_simd_level() == "avx2" else [])
    yield levels
    fastreg.set_simd_level("auto")

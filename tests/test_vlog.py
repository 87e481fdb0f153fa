"""The vectorised log1p the small-C cross-entropy kernel uses (cpp/vlog.hpp: _core.vlog1p),
measured in ulp against long double at every SIMD level."""

import numpy as np
import pytest

import fastreg
from fastreg import _core


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vlog1p_accuracy_in_ulp(rng, dtype, simd_levels):
    # The small-C kernel's log1p(t), t = the sum of the non-max exps, in [0, C - 1].
    tiny = np.finfo(dtype).tiny
    x = np.concatenate(
        [
            rng.uniform(0, 16, 100_000),
            10.0 ** rng.uniform(-30, 0, 100_000),
            rng.uniform(0, 2**20, 20_000),
            [0.0, tiny, 1e-8, 0.4142135, 1.0, 15.0],
        ]
    ).astype(dtype)
    ref = np.log1p(x.astype(np.longdouble))
    ulp = np.maximum(np.spacing(ref.astype(dtype)).astype(np.longdouble), np.finfo(dtype).smallest_subnormal)
    for level in simd_levels:
        fastreg.set_simd_level(level)
        got = np.empty_like(x)
        _core.vlog1p(x, got)
        err = np.abs(got.astype(np.longdouble) - ref) / ulp
        assert err.max() <= 2, (level, float(err.max()), x[np.argmax(err)])
        assert got[-6] == 0
        nan = np.array([np.nan] * 9, dtype=dtype)
        _core.vlog1p(nan, nan)
        assert np.all(np.isnan(nan))

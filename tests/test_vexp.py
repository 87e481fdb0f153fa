"""The vectorised exp the softmax row kernels use (cpp/vexp.hpp: _core.vexp, _core.vexp_shifted),
measured in ulp against long double at every SIMD level."""

import numpy as np
import pytest

import fastreg
from fastreg import _core


@pytest.mark.parametrize("dtype, max_ulp", [(np.float32, 2), (np.float64, 2)])
def test_vexp_accuracy_in_ulp(rng, dtype, max_ulp, simd_levels):
    lim = {np.float32: (-104.0, 89.0), np.float64: (-746.0, 710.0)}[dtype]
    x = np.concatenate(
        [
            rng.uniform(*lim, 200_000),
            rng.uniform(-1, 1, 50_000),
            rng.uniform(-20, 0, 50_000),
            [0.0, -0.0, 1.0, -1.0, lim[0], lim[1], -np.inf, np.inf],
        ]
    ).astype(dtype)
    ref = np.exp(x.astype(np.longdouble))
    with np.errstate(over="ignore"):  # exp(x) beyond the type's max rounds to inf
        ref_t = ref.astype(dtype)
    # ulp of the reference in the target type (subnormal spacing below the normal range)
    tiny = np.finfo(dtype).smallest_subnormal
    ulp = np.maximum(np.spacing(ref_t).astype(np.longdouble), tiny)
    finite = np.isfinite(ref_t)
    for level in simd_levels:
        fastreg.set_simd_level(level)
        got = np.empty_like(x)
        _core.vexp(x, got)
        err = np.abs(got[finite].astype(np.longdouble) - ref[finite]) / ulp[finite]
        assert err.max() <= max_ulp, (level, float(err.max()), x[finite][np.argmax(err)])
        assert np.all(got[~finite] == np.inf)
        assert got[-2] == 0 and got[-1] == np.inf
        nan = np.array([np.nan] * 9, dtype=dtype)
        _core.vexp(nan, nan)
        assert np.all(np.isnan(nan))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vexp_shifted_accuracy_in_ulp(rng, dtype, simd_levels):
    # The row kernels' exp of x - max <= 0 (float32: table + exponent-add fast path for
    # x >= -86.5, exp_avx2 for any vector with a lane below that or NaN).
    lo = {np.float32: -104.0, np.float64: -746.0}[dtype]
    fast = np.concatenate(
        [
            rng.uniform(-86.5, 0, 200_000),
            -(10.0 ** rng.uniform(-30, 1, 50_000)),
            rng.uniform(-87, -86, 20_000),
            [0.0, -0.0, -86.5],
        ]
    ).astype(dtype)
    slow = np.concatenate([rng.uniform(lo, -86.5, 20_000), [lo, -np.inf, -1e4]]).astype(dtype)
    # Every other 8-lane vector holds one slow lane: both paths, and the switch per vector.
    x = np.concatenate([fast, slow])
    mixed = fast[: 8 * 1000].copy().reshape(-1, 8)
    mixed[::2, 3] = slow[: len(mixed[::2])]
    x = np.concatenate([x, mixed.ravel()])
    ref = np.exp(x.astype(np.longdouble))
    ulp = np.maximum(np.spacing(ref.astype(dtype)).astype(np.longdouble), np.finfo(dtype).smallest_subnormal)
    in_fast = x >= -86.5
    for level in simd_levels:
        fastreg.set_simd_level(level)
        got = np.empty_like(x)
        _core.vexp_shifted(x, got)
        err = np.abs(got.astype(np.longdouble) - ref) / ulp
        fast_ulp = 1 if dtype == np.float32 else 2  # float64 is exp_avx2 / exp_scalar throughout
        assert err[in_fast].max() <= fast_ulp, (level, float(err[in_fast].max()), x[in_fast][np.argmax(err[in_fast])])
        assert err.max() <= 2, (level, float(err.max()), x[np.argmax(err)])
        assert np.all(got[x == 0] == 1)  # exactly: the small-C kernel relies on it
        assert np.all(got[x == -np.inf] == 0)
        nan = np.array([np.nan, -1.0] * 8, dtype=dtype)
        _core.vexp_shifted(nan, nan)
        assert np.all(np.isnan(nan[::2]))
        np.testing.assert_allclose(nan[1::2], np.exp(-1.0), rtol=2 * np.finfo(dtype).eps)

"""Helpers the op test files share (tests/test_<op>.py)."""

import numpy as np

TOL = {np.float32: 1e-5, np.float64: 1e-6}


def _close(got, ref, dtype, what=""):
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    # Errors are relative to the largest reference value; an all-zero reference (e.g. the
    # gradient when C == 1) is compared at the scale of a gradient entry of these tests (~1e-2).
    scale = max(np.abs(ref).max(initial=0.0), 1e-2)
    np.testing.assert_allclose(got, ref, rtol=TOL[dtype], atol=TOL[dtype] * scale, err_msg=what)

"""Runtime configuration: threads, SIMD level, and ``show_config()``."""

from __future__ import annotations

import operator
import os
import sys

from . import _core

# Lowest first; each level includes the ones before it.
SIMD_LEVELS = ("scalar", "avx2", "avx512")


def _check_simd_env() -> None:
    """Refuse a FASTREG_SIMD this build or CPU cannot honour (the C++ side, which reads it
    first, then keeps the best level): a typo or a level the machine lacks would otherwise
    run at some other level unnoticed."""
    wanted = os.environ.get("FASTREG_SIMD", "")
    if wanted in ("", "auto"):
        return
    if wanted not in SIMD_LEVELS:
        raise ImportError(
            f"FASTREG_SIMD must be 'auto', {', '.join(repr(v) for v in SIMD_LEVELS)} or unset, got {wanted!r}"
        )
    best = _core.cpu_simd_level()
    if SIMD_LEVELS.index(wanted) > SIMD_LEVELS.index(best):
        raise ImportError(
            f"FASTREG_SIMD={wanted} but this CPU (or OS) does not support it (best available: {best!r})"
        )


_check_simd_env()


def get_num_threads() -> int:
    """Number of threads fastreg's kernels may use."""
    return _core.num_threads()


def set_num_threads(n: int) -> None:
    """Set the number of threads fastreg's kernels may use (``n >= 1``).

    The default is the number of CPUs this process may run on. It does not
    change torch's or the BLAS's own thread counts.
    """
    if isinstance(n, bool):
        raise TypeError(f"n must be an int, got {n!r}")
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"n must be an int, got {type(n).__name__}") from None
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    _core.set_num_threads(n)


def simd_level() -> str:
    """SIMD variant the kernels use now: ``'avx512'`` (AVX-512 F/BW/VL/DQ), ``'avx2'``
    (AVX2+FMA) or ``'scalar'`` (baseline x86-64)."""
    return _core.simd_level()


def set_simd_level(level: str) -> None:
    """Force a SIMD variant: ``'auto'`` (best the CPU has), ``'avx512'``, ``'avx2'`` or ``'scalar'``.

    Meant for testing, debugging and benchmarking; the environment variable
    ``FASTREG_SIMD`` (same names) does the same at import time. A level this CPU
    does not support raises ValueError (ImportError for the variable).
    """
    if not isinstance(level, str):
        raise TypeError(f"level must be a str, got {type(level).__name__}")
    _core.set_simd_level(level)


def _blas_info() -> str:
    """Which BLAS the linear layer calls: SciPy's, through scipy.linalg.cython_blas."""
    try:
        from .linear import _ensure_blas

        _ensure_blas()
        import scipy
    except ImportError as exc:
        return f"unavailable ({exc})"
    detail = ""
    try:  # threadpoolctl (installed with scikit-learn) names the library and its threads
        from threadpoolctl import threadpool_info

        libs = [i for i in threadpool_info() if i.get("user_api") == "blas" and "scipy.libs" in i.get("filepath", "")]
        if libs:
            info = libs[0]
            detail = f": {info.get('internal_api')} {info.get('version')}, {info.get('num_threads')} threads"
    except Exception:  # noqa: BLE001 - optional detail only
        pass
    control = _core.blas_thread_control()
    return f"SciPy {scipy.__version__} BLAS via scipy.linalg.cython_blas{detail} (epoch loops: 1 thread, {control} control)"


def show_config(file=None) -> None:
    """Print how this fastreg was built and what it uses at run time."""
    from . import __version__, cuda

    file = sys.stdout if file is None else file
    rows = [
        ("fastreg", __version__),
        ("python", sys.version.split()[0]),
        ("compiler", _core.compiler()),
        ("simd", f"{simd_level()} (cpu supports {_core.cpu_simd_level()})"),
        ("threads", f"{get_num_threads()} (default {_core.default_num_threads()})"),
        ("blas", _blas_info()),
        ("cuda module", "built" if cuda.is_built() else "not built"),
        ("gpu", cuda.describe()),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}} : {value}", file=file)

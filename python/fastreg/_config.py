"""Runtime configuration: threads, SIMD level, and ``show_config()``."""

from __future__ import annotations

import os
import sys

from . import _core
from ._checks import check_int

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
        raise ImportError(f"FASTREG_SIMD={wanted} but this CPU (or OS) does not support it (best available: {best!r})")


_check_simd_env()


def get_num_threads() -> int:
    """Number of threads fastreg's kernels may use."""
    return _core.num_threads()


def max_num_threads() -> int:
    """The most threads ``set_num_threads`` accepts: 4 per CPU this process may run on,
    and at least 8. The kernels' worker threads live as long as the process, so a count
    far past the CPUs would only leave idle threads behind that slow every call."""
    return max(8, 4 * _core.default_num_threads())


def set_num_threads(n: int) -> None:
    """Set the number of threads fastreg's kernels may use (``1 <= n <= max_num_threads()``).

    The default is the number of CPUs this process may run on. It does not
    change torch's or the BLAS's own thread counts. A larger ``n`` raises ValueError.
    """
    _core.set_num_threads(check_int(n, "n", 1, max_num_threads()))


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


def blas_info() -> dict:
    """The BLAS the linear layer calls (SciPy's, through scipy.linalg.cython_blas).

    Keys: ``scipy`` (version), ``library`` (``'openblas'``, ``'mkl'``, ...), ``version``,
    ``core_type`` (the kernel family OpenBLAS picked, e.g. ``'SkylakeX'`` or ``'Haswell'``),
    ``threads``, ``threading_layer`` (from threadpoolctl, when installed; else ``None``),
    ``openblas_coretype`` (the ``OPENBLAS_CORETYPE`` variable, which overrides OpenBLAS's
    choice; ``None`` when unset), and ``error`` when SciPy is missing.
    """
    info: dict = {"openblas_coretype": os.environ.get("OPENBLAS_CORETYPE")}
    try:
        from .linear import _ensure_blas

        _ensure_blas()
        import scipy
    except ImportError as exc:
        info["error"] = str(exc)
        return info
    info.update(scipy=scipy.__version__, library=None, version=None, core_type=None, threads=None, threading_layer=None)
    try:  # threadpoolctl (installed with scikit-learn) names the library, its kernels and threads
        from threadpoolctl import threadpool_info

        libs = [i for i in threadpool_info() if i.get("user_api") == "blas" and "scipy.libs" in i.get("filepath", "")]
        if libs:
            lib = libs[0]
            info.update(
                library=lib.get("internal_api"),
                version=lib.get("version"),
                core_type=lib.get("architecture"),
                threads=lib.get("num_threads"),
                threading_layer=lib.get("threading_layer"),
            )
    except Exception:  # noqa: BLE001 - optional detail only
        pass
    return info


def _blas_line() -> str:
    info = blas_info()
    if "error" in info:
        return f"unavailable ({info['error']})"
    parts = []
    if info["library"]:
        parts.append(f"{info['library']} {info['version']}")
        if info["core_type"]:
            parts.append(f"core type {info['core_type']}")
        parts.append(f"{info['threads']} threads ({info['threading_layer']})")
    env = info["openblas_coretype"]
    parts.append(f"OPENBLAS_CORETYPE={env}" if env is not None else "OPENBLAS_CORETYPE unset")
    control = _core.blas_thread_control()
    return (
        f"SciPy {info['scipy']} BLAS via scipy.linalg.cython_blas: {', '.join(parts)} "
        f"(epoch loops: 1 thread, {control} control)"
    )


def config_info() -> dict:
    """What ``show_config()`` prints, as a dict of strings (the benchmarks record it)."""
    from . import __version__, cuda

    env = os.environ.get("FASTREG_SIMD")
    return {
        "fastreg": __version__,
        "python": sys.version.split()[0],
        "compiler": _core.compiler(),
        "simd": f"{simd_level()} (cpu supports {_core.cpu_simd_level()}" + (f"; FASTREG_SIMD={env})" if env else ")"),
        "threads": f"{get_num_threads()} (default {_core.default_num_threads()})",
        "blas": _blas_line(),
        "cuda module": "built" if cuda.is_built() else "not built",
        "gpu": cuda.describe(),
    }


def show_config(file=None) -> None:
    """Print how this fastreg was built and what it uses at run time: version, compiler,
    SIMD level in use, threads, the BLAS (library, version, core type, threads and
    ``OPENBLAS_CORETYPE``), and CUDA."""
    file = sys.stdout if file is None else file
    rows = config_info()
    width = max(len(k) for k in rows)
    for key, value in rows.items():
        print(f"{key:<{width}} : {value}", file=file)

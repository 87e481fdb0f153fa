"""Argument rules shared by the Python API, each with one message.

The C++ kernels take 64-bit integers: a Python int outside that range would reach a
binding as pybind11's "incompatible function arguments" (a TypeError listing C++
signatures). Integers are checked here first, so the error names the argument.
"""

from __future__ import annotations

import math
import numbers
import operator

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


def check_int(value, name: str, minimum: int = INT64_MIN, maximum: int = INT64_MAX) -> int:
    """``value`` as a Python int in ``[minimum, maximum]`` (any int-like but bool)."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got bool ({value!r})")
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})") from None
    if v < minimum and minimum == INT64_MIN or v > maximum and maximum == INT64_MAX:
        raise OverflowError(f"{name} must fit in a signed 64-bit integer, got {v}")
    if v < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {v}")
    if v > maximum:
        powers_of_two = maximum > 0 and (maximum + 1) & maximum == 0
        bound = f"< 2**{maximum.bit_length()}" if powers_of_two else f"<= {maximum}"
        raise ValueError(f"{name} must be {bound}, got {v}")
    return v


def check_real(value, name: str) -> float:
    """``value`` as a float: any real number but bool (NaN and inf pass; callers bound them)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return float(value)


# The hyper-parameter rule, one message per parameter. fastreg.torch.SGD must raise
# torch.optim.SGD's own messages ("Invalid learning rate: -1.0"), so those words start
# the one message everywhere; the rule the value broke follows in parentheses.
_HYPER_WORDS = {"lr": "learning rate"}


def hyper_error(name: str, value, rule: str) -> ValueError:
    """The ValueError for hyper-parameter ``name`` given ``value``, which breaks ``rule``."""
    return ValueError(f"Invalid {_HYPER_WORDS.get(name, name + ' value')}: {value} ({name} must be {rule})")


def check_hyper(value, name: str, *, positive: bool = False, finite: bool = True):
    """A hyper-parameter (lr, momentum, dampening, weight_decay, temperature, delta, beta):
    a number (not a bool), finite and >= 0, or > 0 when ``positive``. Returns it as a
    float; raises TypeError for a non-number, ValueError otherwise.

    ``finite=False`` is torch.optim.SGD's construction rule, for fastreg.torch.SGD: any
    value that compares with 0 (a float, a 1-element tensor) and is not negative; it is
    returned unchanged, and NaN/inf pass as in torch (the step refuses them)."""
    if not finite:
        if value < 0.0:
            raise hyper_error(name, value, ">= 0")
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        raise hyper_error(name, value, f"a finite number {'> 0' if positive else '>= 0'}")
    return v


def check_lr(value) -> float:
    """The learning-rate rule of the estimators and of ``fastreg train --lr``: a finite
    number > 0 (an epoch at lr 0 would change nothing). Returns it as a float; raises
    TypeError/ValueError otherwise. The optimizers (fastreg.optim, fastreg.torch.SGD)
    accept lr 0, like torch.optim.SGD: ``check_hyper(lr, "lr")``."""
    return check_hyper(value, "lr", positive=True)


def check_momentum(value) -> float:
    """The momentum rule of the estimators and of ``fastreg train --momentum``: a number
    in [0, 1). Momentum 1 never forgets a gradient and above 1 the steps grow without
    bound, so both only diverge (torch.optim.SGD accepts them and then diverges)."""
    v = check_hyper(value, "momentum")
    if v >= 1:
        raise hyper_error("momentum", value, "in [0, 1)")
    return v


def labels_as_int64(y, n_classes: int, ignore_index: int):
    """Integer class labels as int64 (the kernels' type), without wrapping: an unsigned label
    past int64 is reported as itself, in the kernel's words, instead of as a negative number."""
    import numpy as np

    if y.dtype == np.int64:
        return y
    if y.dtype.kind == "u" and y.dtype.itemsize == 8 and y.size:
        big = np.flatnonzero(y.reshape(-1) > INT64_MAX)
        if big.size:
            row = int(big[0])
            raise IndexError(
                f"Target {int(y.reshape(-1)[row])} at row {row} is out of bounds: class indices must be in "
                f"[0, {n_classes}) or equal ignore_index ({ignore_index})"
            )
    return y.astype(np.int64)

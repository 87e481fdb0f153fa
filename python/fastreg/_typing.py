"""Type aliases for fastreg's public signatures.

Array arguments take float32/float64 NumPy arrays, CPU torch tensors (viewed, not copied) and,
on the CUDA paths, CuPy arrays or CUDA tensors: all of these are ``numpy.typing.ArrayLike``
(they implement ``__array__``). Results come back in the input's type, hence ``ArrayOrTensor``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Union

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

if TYPE_CHECKING:  # torch is optional: only type checkers import it here
    import torch

# An array result: a NumPy array for array inputs, a tensor for tensor inputs.
ArrayOrTensor = Union[NDArray[Any], "torch.Tensor"]
# A loss: a 0-d NumPy scalar (reduction 'mean'/'sum') or an array (reduction 'none'), or a tensor.
Loss = Union[np.floating, NDArray[Any], "torch.Tensor"]
# An estimator's random_state: None, an int >= 0, a SeedSequence, a Generator (used as it is,
# so it advances) or a legacy RandomState (scikit-learn's own).
RandomState = Union[int, np.random.SeedSequence, np.random.Generator, np.random.RandomState, None]

__all__ = ["ArrayLike", "ArrayOrTensor", "DTypeLike", "Loss", "NDArray", "RandomState"]

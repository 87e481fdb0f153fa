"""fastreg: C++-accelerated linear and softmax regression.

Fast kernels for the first models of deep learning (Dive into Deep Learning,
chapter 3): shuffled minibatch iteration, fused numerically stable softmax
cross-entropy, and the fused SGD update, under a NumPy/PyTorch-style API.
torch is optional: ``import fastreg`` needs only NumPy.
"""

__version__ = "0.1.0"

from . import cuda, datasets, linear, models, ops, optim, plot
from ._config import (
    get_num_threads,
    max_num_threads,
    set_num_threads,
    set_simd_level,
    show_config,
    simd_level,
)
from .data import DataLoader, data_iter, load_array

__all__ = [
    "DataLoader",
    "LinearRegression",
    "SoftmaxRegression",
    "__version__",
    "cuda",
    "data_iter",
    "datasets",
    "get_num_threads",
    "linear",
    "load_array",
    "max_num_threads",
    "models",
    "ops",
    "optim",
    "plot",
    "set_num_threads",
    "set_simd_level",
    "show_config",
    "simd_level",
]


def __getattr__(name):
    # The estimators are built on first use: with scikit-learn installed they derive from
    # its BaseEstimator, and importing scikit-learn takes ~0.8 s (fastreg itself ~0.3 s).
    if name in ("LinearRegression", "SoftmaxRegression"):
        return getattr(models, name)
    # fastreg.torch imports torch, so it is loaded only when first used.
    if name == "torch":
        import importlib

        return importlib.import_module(".torch", __name__)
    raise AttributeError(f"module 'fastreg' has no attribute {name!r}")

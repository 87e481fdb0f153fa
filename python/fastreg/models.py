"""Estimators with scikit-learn's conventions: ``LinearRegression`` and ``SoftmaxRegression``.

Both train by minibatch SGD (torch.optim.SGD's update, optional momentum and weight
decay) where each epoch runs entirely in C++: gather the batch's rows, linear forward
on the BLAS, loss and gradient, linear backward, SGD update, with the GIL released and
Python touched once per epoch. ``LinearRegression(solver="normal")`` solves least
squares in closed form instead.

Parameters follow ``torch.nn.Linear``/scikit-learn: ``coef_`` is ``[n_classes,
n_features]`` for SoftmaxRegression and ``[n_features]`` for LinearRegression;
``intercept_`` is ``[n_classes]`` / a scalar. Weight decay applies to ``coef_`` only,
not to the intercept (as d2l's weight-decay chapter and scikit-learn's ``alpha``).

With scikit-learn installed the two classes derive from ``sklearn.base.BaseEstimator``
and ``ClassifierMixin``/``RegressorMixin`` (so ``clone``, ``Pipeline``, ``GridSearchCV``,
metadata routing and the HTML repr work); without it, from a small base of fastreg's own
with the same API. Importing scikit-learn takes ~0.8 s (measured with ``python -X
importtime``; ``import fastreg`` itself ~0.3 s), so the classes are built on first use
(the module's ``__getattr__``), not when fastreg is imported.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
import re
import sys
import time
import warnings
import zipfile
from typing import IO, Any, Literal, TypeVar, Union

import numpy as np

from . import _core, _distributed
from ._checks import check_hyper, check_int, check_lr, check_momentum
from ._linear_cross_entropy import linear_cross_entropy
from ._typing import ArrayLike, RandomState
from .linear import _ensure_blas

# fit and partial_fit return the estimator itself; the classes are built on first use (see _build).
_Est = TypeVar("_Est", bound="_SGDEstimator")
# A path or a binary file object.
_File = Union[str, "os.PathLike[str]", IO[bytes]]

# The two estimators and NotFittedError are created on first use, by __getattr__ below.
__all__ = [
    "LinearRegression",  # noqa: F822 (created on first use)
    "NotFittedError",  # noqa: F822
    "SoftmaxRegression",  # noqa: F822
    "TrainingDivergedError",
    "check_lr",
    "check_momentum",
    "load",
]


class TrainingDivergedError(ValueError, FloatingPointError):
    """The training loss became inf/nan (usually: the learning rate is too large).

    A ValueError (like the other bad-setting errors, so ``except ValueError`` catches
    it) and a FloatingPointError (what it is)."""


class _FastregNotFittedError(ValueError, AttributeError):
    """An estimator was used before fit (scikit-learn's NotFittedError when it is installed)."""


_UINT8_SCALE = 1.0 / 255.0


# ---------------------------------------------------------------------------
# input checks


class _NonFiniteX(ValueError):
    """X holds NaN/inf (found by the first epoch's own pass over X)."""


def _is_sparse(X) -> bool:
    return type(X).__module__.startswith("scipy.sparse")


def _check_X(X, name: str = "X", *, check_finite: bool = True) -> np.ndarray:
    """2-D, C-contiguous, float32/float64 or uint8 images (read as x / 255); anything else
    NumPy converts to float64. Finite unless check_finite is False (fit and partial_fit
    leave that to the first epoch, which reads every row anyway). Any layout is taken."""
    if _is_sparse(X):
        raise TypeError(
            f"{name} is a scipy.sparse matrix; sparse input is not supported, pass a dense array ({name}.toarray())"
        )
    if hasattr(X, "detach") and hasattr(X, "numpy"):  # a CPU torch tensor
        X = X.detach().numpy()
    X = np.asarray(X)
    if X.dtype.kind == "c":
        raise ValueError(f"Complex data not supported: {name} has dtype {X.dtype}")
    if X.dtype not in (np.uint8, np.float32, np.float64):
        if X.dtype.kind not in "biufO":
            raise TypeError(f"{name} must be numeric, got dtype {X.dtype}")
        X = X.astype(np.float64)  # an object array of numbers converts; of anything else, TypeError
    if X.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D [n_samples, n_features], got shape {X.shape}. Reshape your data "
            f"either using X.reshape(-1, 1) if it has a single feature or X.reshape(1, -1) if "
            f"it contains a single sample."
        )
    # scikit-learn's words: a model of no samples or no features is a mistake, not a fit
    if X.shape[0] == 0:
        raise ValueError(
            f"Found array with 0 sample(s) (shape={X.shape}) while a minimum of 1 is required "
            f"({name} must hold at least one sample)."
        )
    if X.shape[1] == 0:
        raise ValueError(
            f"Found array with 0 feature(s) (shape={X.shape}) while a minimum of 1 is required "
            f"({name} must hold at least one feature)."
        )
    X = np.ascontiguousarray(X)
    if check_finite and X.dtype != np.uint8:
        row = _core.first_nonfinite_row(X)
        if row >= 0:
            raise ValueError(f"{name} contains NaN or infinity at row {row}")
    return X


def _check_y_1d(y, n: int, name: str = "y", owner: str = "This estimator") -> np.ndarray:
    if y is None:
        raise ValueError(f"{owner} requires y to be passed, but the target y is None")
    if _is_sparse(y):
        raise TypeError(f"{name} is a scipy.sparse matrix; pass a dense 1-D array")
    if hasattr(y, "detach") and hasattr(y, "numpy"):
        y = y.detach().numpy()
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:  # a column vector: taken, with scikit-learn's warning
        warnings.warn(
            f"A column-vector {name} was passed when a 1d array was expected. Please change the shape "
            f"of {name} to (n_samples,), for example using ravel().",
            _data_conversion_warning(),
            stacklevel=4,
        )
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D with one entry per sample, got shape {y.shape} (use y.ravel())")
    if y.shape[0] != n:
        raise ValueError(f"{name} has {y.shape[0]} entries but X has {n} rows")
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y)
        if bad.any():
            raise ValueError(f"{name} contains NaN or infinity at row {int(np.argmax(bad))}")
    return y


def _check_sample_weight(sample_weight, n: int, dtype) -> np.ndarray | None:
    """None, or float[n] (of the model's dtype, C-contiguous): finite and >= 0; a scalar
    is the same weight for every row."""
    if sample_weight is None:
        return None
    if _is_sparse(sample_weight):
        raise TypeError("sample_weight must be a dense 1-D array, got a scipy.sparse matrix")
    sw = np.asarray(sample_weight)
    if sw.dtype.kind not in "biuf":
        raise TypeError(f"sample_weight must be numeric, got dtype {sw.dtype}")
    if sw.ndim == 0:
        sw = np.full(n, sw, dtype=np.float64)
    if sw.shape != (n,):
        raise ValueError(f"sample_weight.shape == {sw.shape}, expected {(n,)}!")
    sw = sw.astype(dtype)  # a copy of the caller's array: it is never written
    bad = ~np.isfinite(sw) | (sw < 0)
    if bad.any():
        row = int(np.argmax(bad))
        raise ValueError(f"sample_weight must be finite and >= 0, got {sw[row]} at row {row}")
    if not sw.any():
        raise ValueError(
            "Sample weights must contain at least one non-zero number (every weight is zero: "
            "there is nothing to learn from)"
        )
    return sw


def _classes_and_codes(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(classes, codes): np.unique(y) and int64[n] indices of y's labels into it (C-contiguous).

    Small non-negative integer labels (the usual 0..C-1) take a histogram instead of
    np.unique's sort (~0.1 ms instead of ~2 ms for 60000 labels); when every label in
    0..max occurs, the labels are their own codes."""
    if y.dtype.kind in "iu" and y.size and y.min() >= 0 and y.max() <= 2 * y.size + 1024:
        present = np.bincount(y) > 0
        classes = np.flatnonzero(present).astype(y.dtype)
        if len(classes) == len(present):
            return classes, np.ascontiguousarray(y, dtype=np.int64)
        return classes, (np.cumsum(present) - 1)[y]
    classes, codes = np.unique(y, return_inverse=True)
    return classes, np.ascontiguousarray(codes.reshape(-1), dtype=np.int64)


def _check_classification_targets(y: np.ndarray, name: str = "y") -> None:
    """Class labels, not continuous values (scikit-learn's ``Unknown label type``)."""
    if y.dtype.kind == "f" and y.size and np.any(y != np.round(y)):
        raise ValueError(
            f"Unknown label type: continuous values in {name} (e.g. {y[np.argmax(y != np.round(y))]!r}); "
            "SoftmaxRegression needs class labels (use LinearRegression for continuous targets)"
        )


def _model_dtype(X: np.ndarray):
    return np.float64 if X.dtype == np.float64 else np.float32


def _scale_for(X: np.ndarray) -> float:
    return _UINT8_SCALE if X.dtype == np.uint8 else 1.0


def _as_float_rows(X: np.ndarray, dtype) -> np.ndarray:
    """X as the model's float dtype (uint8 images are read as x / 255)."""
    if X.dtype == np.uint8:
        return X.astype(dtype) * np.dtype(dtype).type(_UINT8_SCALE)
    return X.astype(dtype, copy=False)


def _data_conversion_warning():
    mod = sys.modules.get("sklearn.exceptions")
    return mod.DataConversionWarning if mod is not None else UserWarning


def _rng_from(random_state) -> np.random.Generator:
    """The estimator's Generator: from None, an int, a SeedSequence or a Generator (used as
    it is, so it advances), or a legacy RandomState (scikit-learn's own; one draw seeds it)."""
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(np.iinfo(np.int32).max))
    if isinstance(random_state, (bool, np.bool_)):
        raise TypeError("random_state must be None, an int, a numpy Generator or RandomState, got bool")
    try:
        return np.random.default_rng(random_state)
    except (TypeError, ValueError) as e:
        raise type(e)(
            f"random_state must be None, an int >= 0, a numpy Generator or RandomState, got {random_state!r}"
        ) from None


# ---------------------------------------------------------------------------
# shared SGD machinery


def _epoch_order(rng: np.random.Generator, n: int) -> np.ndarray:
    """One epoch's permutation of range(n): a seed drawn from the estimator's Generator
    drives fastreg's own shuffle (the DataLoader's), ~4x faster than
    ``Generator.permutation`` (0.14 vs 0.53 ms for 60000 rows, ~3% of an epoch)."""
    return _core.random_permutation(n, int(rng.integers(2**63)), 0)


def _on_cache_lines(a, dtype) -> np.ndarray:
    """A C-contiguous copy of ``a`` as ``dtype`` that starts on a 64-byte boundary. The
    epoch's forward reads the weights with 64-byte loads; from an array that does not
    start on a cache line (NumPy aligns small arrays to 16 bytes) it works on a copy,
    which it must refresh after every update."""
    a = np.asarray(a)
    nbytes = a.size * np.dtype(dtype).itemsize
    buf = np.empty(nbytes + 64, np.uint8)
    start = -buf.ctypes.data % 64
    out = buf[start : start + nbytes].view(dtype).reshape(a.shape)
    out[...] = a
    return out


def _snapshot(value):
    """What a failed call must put back: arrays and history lists are changed in place by
    training, so they are copied; the Generator advances, so its state is kept and put
    back into the same Generator (a deep copy of it is far slower, and runs on every fit)."""
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, dict):
        return {k: list(v) if isinstance(v, list) else v for k, v in value.items()}
    if isinstance(value, np.random.Generator):
        return value.bit_generator.state
    return value


# Saved-model format (see save/load): an .npz read with allow_pickle=False.
_FORMAT_NAME = "fastreg-estimator"
_FORMAT_VERSION = 1


# The devices an estimator (and `fastreg train --device`) accepts.
DEVICE_PATTERN = r"cpu|cuda(:[0-9]+)?"


def _check_device(device) -> None:
    """device="cpu" trains here; "cuda"/"cuda:N" is validated and, until the device epoch of
    issue 16 lands, refused with the reason, so a script asking for the GPU never silently
    trains on the CPU."""
    if not isinstance(device, str) or not re.fullmatch(DEVICE_PATTERN, device):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if device == "cpu":
        return
    from . import cuda

    reason = cuda.unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"device={device!r} needs fastreg's CUDA kernels, which are unavailable: {reason}")
    raise NotImplementedError(
        f"device={device!r}: the on-device training epoch (issue 16) is not built yet; use device='cpu'"
    )


class _SGDEstimator:
    """Hyper-parameter checks, fitted state, the epoch driver, and save/load."""

    _default_lr = 0.1
    _has_accuracy = False

    # -- hyper-parameter checks ------------------------------------------------
    def _check_hyper(self) -> None:
        check_lr(self.lr)
        check_momentum(self.momentum)
        check_hyper(self.weight_decay, "weight_decay")
        check_int(self.batch_size, "batch_size", 1)
        check_int(self.epochs, "epochs", 1)
        if self.init not in ("normal", "zeros"):
            raise ValueError(f"init must be 'normal' or 'zeros', got {self.init!r}")
        if not isinstance(self.warm_start, (bool, np.bool_)):
            raise TypeError(f"warm_start must be True or False, got {type(self.warm_start).__name__}")
        _check_device(self.device)

    # -- state -------------------------------------------------------------
    def _init_state(self, n_features: int, n_outputs: int, dtype) -> None:
        self._rng = _rng_from(self.random_state)
        if self.init == "normal":  # d2l: w ~ N(0, 0.01^2), b = 0
            w = self._rng.normal(0.0, 0.01, size=(n_outputs, n_features))
        else:
            w = np.zeros((n_outputs, n_features))
        self._w = _on_cache_lines(w, dtype)
        self._b = np.zeros(n_outputs, dtype=dtype)
        self._w_buf = self._b_buf = None
        self._first_step = True
        self.n_features_in_ = n_features
        self.n_iter_ = 0
        self.history_ = {"epoch": [], "train_loss": []}
        if self._has_accuracy:
            self.history_["train_acc"] = []
        self.history_["seconds"] = []

    def _ensure_buffers(self) -> None:
        if self.momentum != 0 and self._w_buf is None:
            self._w_buf = np.zeros_like(self._w)
            self._b_buf = np.zeros_like(self._b)
            self._first_step = True

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "_w")

    def _check_fitted(self) -> None:
        if not hasattr(self, "_w"):
            raise _NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with "
                f"appropriate arguments before using this estimator."
            )

    def _check_features(self, X: np.ndarray) -> None:
        if X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input."
            )

    def _validate(self, X_raw, X: np.ndarray, *, reset: bool) -> None:
        """n_features_in_ and feature_names_in_ (from a DataFrame's columns): set when reset,
        else checked, with scikit-learn's own messages and warnings when it is installed."""
        if _validate_data is not None:
            _validate_data(self, X_raw, reset=reset, skip_check_array=True)
            if not reset:
                self._check_features(X)
            return
        names = _feature_names(X_raw)
        if reset:
            self.n_features_in_ = X.shape[1]
            if names is not None:
                self.feature_names_in_ = names
            else:
                self.__dict__.pop("feature_names_in_", None)
            return
        self._check_features(X)
        fitted = getattr(self, "feature_names_in_", None)
        cls = type(self).__name__
        if fitted is not None and names is None:
            warnings.warn(
                f"X does not have valid feature names, but {cls} was fitted with feature names",
                UserWarning,
                stacklevel=4,
            )
        elif fitted is None and names is not None:
            warnings.warn(f"X has feature names, but {cls} was fitted without feature names", UserWarning, stacklevel=4)
        elif fitted is not None and (len(fitted) != len(names) or np.any(fitted != names)):
            raise ValueError(
                f"The feature names should match those that were passed during fit: fitted with "
                f"{list(fitted)}, got {list(names)}"
            )

    # -- failed calls change nothing -------------------------------------------
    @contextlib.contextmanager
    def _unchanged_on_error(self):
        """fit and partial_fit either succeed or leave the estimator exactly as it was: the
        same attributes, the same values, and arrays the caller holds (coef_) keep their
        identity, whatever failed (bad input found late, a bad eval_set, divergence, NaN,
        an interrupt). The epoch checks X's rows as it gathers them, so a NaN can surface
        only after training began."""
        saved = {k: (v, _snapshot(v)) for k, v in self.__dict__.items()}
        try:
            yield
        except BaseException:
            self.__dict__.clear()
            for key, (obj, snap) in saved.items():
                if isinstance(obj, np.ndarray):
                    obj[...] = snap
                elif isinstance(obj, dict):
                    obj.clear()
                    obj.update(snap)
                elif isinstance(obj, np.random.Generator):
                    obj.bit_generator.state = snap
                else:
                    obj = snap
                self.__dict__[key] = obj
            raise

    # -- the epoch driver ------------------------------------------------------
    def _run_epochs(self, X, y_fit, epochs: int, eval_data, data_parallel=None, sample_weight=None) -> None:
        """``epochs`` epochs, each in C++; the first also checks X for NaN/inf (X was not
        scanned). With ``data_parallel`` (a ``_distributed.DataParallel``; X was scanned
        up front) each rank trains on its shard and the gradients are all-reduced every step.
        Raises on a non-finite loss; the caller's _unchanged_on_error puts everything back."""
        _ensure_blas()
        self._ensure_buffers()
        n = X.shape[0]
        if data_parallel is not None:
            data_parallel.sync(self, X, epochs, self._loss_name())
        if eval_data is not None:
            for key in ("eval_loss", "eval_acc") if self._has_accuracy else ("eval_loss",):
                self.history_.setdefault(key, [])
        show = self.verbose and (data_parallel is None or data_parallel.rank == 0)
        bar = _progress(epochs, type(self).__name__) if show else None
        try:
            for epoch_index in range(epochs):
                epoch = self.n_iter_ + 1
                order = _epoch_order(self._rng, n) if self.shuffle else np.arange(n, dtype=np.int64)
                t0 = time.perf_counter()
                if data_parallel is None:
                    loss_sum, correct, rows, finite, bad = self._epoch(X, y_fit, order, epoch_index == 0, sample_weight)
                else:
                    loss_sum, correct, rows, finite = data_parallel.epoch(self, X, y_fit, order)
                    bad = -1
                seconds = time.perf_counter() - t0
                if bad >= 0:  # the epoch stopped before using that row; report the first bad one
                    raise _NonFiniteX(f"X contains NaN or infinity at row {_core.first_nonfinite_row(X)}")
                if not finite or not math.isfinite(loss_sum):
                    if data_parallel is None and epoch_index == 0 and X.dtype != np.uint8:
                        # A huge finite value can make the loss overflow before the gather
                        # reaches a NaN/inf row: bad input is reported as such, with its row.
                        row = _core.first_nonfinite_row(X)
                        if row >= 0:
                            raise _NonFiniteX(f"X contains NaN or infinity at row {row}")
                    raise TrainingDivergedError(
                        f"training diverged in epoch {epoch}: the loss became inf/nan after {rows} of "
                        f"{n if data_parallel is None else data_parallel.shard(order).size * data_parallel.world_size} "
                        f"samples. The estimator is left as it was before this call; try a smaller "
                        f"lr (got lr={self.lr})"
                    )
                self._first_step = False
                self.n_iter_ = epoch
                h = self.history_
                h["epoch"].append(epoch)
                h["train_loss"].append(loss_sum / rows)
                if self._has_accuracy:
                    h["train_acc"].append(correct / rows)
                h["seconds"].append(seconds)
                if eval_data is not None:
                    ev = self._evaluate(*eval_data)
                    h["eval_loss"].append(ev[0])
                    if self._has_accuracy:
                        h["eval_acc"].append(ev[1])
                if bar is not None:
                    bar.update({k: v[-1] for k, v in h.items() if k not in ("epoch", "seconds")}, epoch)
        finally:
            if bar is not None:
                bar.close()

    def _fit_args(self):
        return dict(
            lr=float(self.lr),
            momentum=float(self.momentum),
            weight_decay=float(self.weight_decay),
            batch_size=int(self.batch_size),
            first_step=self._first_step,
        )

    def _resolve(self, distributed, sample_weight):
        data_parallel = _distributed.resolve(distributed)
        if data_parallel is not None and sample_weight is not None:
            raise ValueError("sample_weight is not supported with data-parallel training (distributed)")
        return data_parallel

    def _prepare_warm(self, X: np.ndarray) -> np.ndarray:
        """X for a model that already has parameters: its features checked, its dtype the model's."""
        self._check_features(X)
        if _model_dtype(X) != self._w.dtype:
            X = np.ascontiguousarray(_as_float_rows(X, self._w.dtype))
        return X

    # -- save / load -----------------------------------------------------------
    def save(self, file: _File) -> None:
        """Write the fitted estimator to ``file`` (a path or a binary file object) as an
        ``.npz`` that ``fastreg.models.load`` reads with ``allow_pickle=False``: nothing
        in it runs code when loaded. It holds the format name and version, the class,
        get_params() (as JSON), the learned arrays, momentum buffers and the Generator's
        state (so partial_fit continues exactly as it would have), n_iter_, history_,
        classes_ and feature_names_in_. A path is written as given (no ``.npz`` is added).
        Labels must be numbers or strings; a random_state that is a Generator or
        RandomState is saved as None. Use pickle for anything else."""
        self._check_fitted()
        params = self.get_params()
        if not isinstance(params.get("random_state"), (int, np.integer, type(None))):
            params["random_state"] = None
        params = {k: v.item() if isinstance(v, np.generic) else v for k, v in params.items()}
        arrays = {
            "format": np.array(_FORMAT_NAME),
            "format_version": np.array(_FORMAT_VERSION),
            "estimator": np.array(type(self).__name__),
            "params": np.array(json.dumps(params)),
            "coef": self._w,
            "intercept": self._b,
            "n_iter": np.array(self.n_iter_),
            "first_step": np.array(self._first_step),
            "history": np.array(json.dumps(self.history_)),
            "rng_state": np.array(json.dumps(self._rng.bit_generator.state)),
        }
        if self._w_buf is not None:
            arrays["coef_buffer"], arrays["intercept_buffer"] = self._w_buf, self._b_buf
        if hasattr(self, "classes_"):
            classes = self.classes_
            if classes.dtype.kind == "O":
                if not all(isinstance(c, str) for c in classes):
                    raise TypeError(
                        "classes_ holds objects that are neither numbers nor strings; "
                        "save this estimator with pickle instead"
                    )
                classes = classes.astype(str)
            if classes.dtype.kind not in "biufU":
                raise TypeError(f"classes_ of dtype {classes.dtype} cannot be saved without pickle; use pickle")
            arrays["classes"] = classes
        if hasattr(self, "feature_names_in_"):
            arrays["feature_names"] = np.asarray(self.feature_names_in_).astype(str)
        if isinstance(file, (str, os.PathLike)):
            with open(file, "wb") as f:
                np.savez(f, **arrays)
        else:
            np.savez(file, **arrays)

    @classmethod
    def load(cls: type[_Est], file: _File) -> _Est:
        """Read an estimator written by ``save``; it must be of this class (use
        ``fastreg.models.load`` for either)."""
        est = load(file)
        if not isinstance(est, cls):
            raise TypeError(f"{file!r} holds a {type(est).__name__}, not a {cls.__name__}")
        return est


def load(file: _File) -> _SGDEstimator:
    """Read an estimator written by ``SoftmaxRegression.save``/``LinearRegression.save``
    (an ``.npz``, read with ``allow_pickle=False``). Raises ValueError for a file that is
    not such a model, or of a newer format version."""
    name = os.fspath(file) if isinstance(file, (str, os.PathLike)) else getattr(file, "name", "the file")
    try:
        with contextlib.ExitStack() as stack:
            if isinstance(file, (str, os.PathLike)):  # opened here, so a bad file is closed too
                file = stack.enter_context(open(file, "rb"))
            with np.load(file, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # not an npz, truncated, or holding pickles
        raise ValueError(f"{name!r} is not a saved fastreg model: {e}") from None
    if data.get("format") is None or str(data["format"]) != _FORMAT_NAME:
        raise ValueError(f"{name!r} is not a saved fastreg model (no '{_FORMAT_NAME}' format entry)")
    version = int(data["format_version"])
    if version > _FORMAT_VERSION:
        raise ValueError(
            f"{name!r} was written in fastreg model format {version}; this fastreg reads "
            f"format {_FORMAT_VERSION} and older: upgrade fastreg"
        )
    name = str(data["estimator"])
    if name not in ("SoftmaxRegression", "LinearRegression"):
        raise ValueError(f"{name!r} holds an unknown estimator {name!r}")
    try:
        cls = globals()[name] if name in globals() else __getattr__(name)
        est = cls(**json.loads(str(data["params"])))
        w = np.ascontiguousarray(data["coef"])
        b = np.ascontiguousarray(data["intercept"])
        if w.dtype not in (np.float32, np.float64) or w.ndim != 2 or b.dtype != w.dtype or b.shape != (w.shape[0],):
            raise ValueError(f"coef {w.dtype}{w.shape} and intercept {b.dtype}{b.shape} do not make a model")
        est._w, est._b = _on_cache_lines(w, w.dtype), b
        est._w_buf = est._b_buf = None
        if "coef_buffer" in data:
            est._w_buf = np.ascontiguousarray(data["coef_buffer"], dtype=w.dtype)
            est._b_buf = np.ascontiguousarray(data["intercept_buffer"], dtype=w.dtype)
            if est._w_buf.shape != w.shape or est._b_buf.shape != b.shape:
                raise ValueError("the momentum buffers do not match coef and intercept")
        est._first_step = bool(data["first_step"])
        est._rng = np.random.default_rng()
        est._rng.bit_generator.state = json.loads(str(data["rng_state"]))
        est.n_features_in_ = w.shape[1]
        est.n_iter_ = int(data["n_iter"])
        est.history_ = json.loads(str(data["history"]))
        if "classes" in data:
            est.classes_ = data["classes"]
            if est.classes_.shape != (w.shape[0],):
                raise ValueError(f"{len(est.classes_)} classes for {w.shape[0]} rows of coef")
        elif name == "SoftmaxRegression":
            raise ValueError("a SoftmaxRegression without classes")
        if "feature_names" in data:
            est.feature_names_in_ = data["feature_names"].astype(object)
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"{name!r} is a damaged fastreg model: {type(e).__name__}: {e}") from None
    return est


class _progress:
    """A tqdm bar over epochs with the latest metrics; a printed line per epoch without tqdm."""

    def __init__(self, total: int, desc: str) -> None:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            self._bar = None
        else:
            self._bar = tqdm(total=total, desc=desc, unit="epoch")

    def update(self, metrics: dict, epoch: int) -> None:
        text = {k: f"{v:.4f}" for k, v in metrics.items()}
        if self._bar is not None:
            self._bar.set_postfix(text, refresh=False)
            self._bar.update(1)
        else:
            print(f"epoch {epoch}: " + ", ".join(f"{k} {v}" for k, v in text.items()), file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _log_softmax(z: np.ndarray) -> np.ndarray:
    # fastreg's stable kernel: no overflow, and a diverged model's inf logits give
    # torch's answer (nan) without NumPy's inf - inf warnings.
    from . import ops

    return ops.log_softmax(np.ascontiguousarray(z), axis=1)


def _feature_names(X):
    """A DataFrame's column names as an object array when they are all strings, else None."""
    cols = getattr(X, "columns", None)
    if cols is None or not hasattr(X, "iloc"):
        return None
    names = np.asarray(list(cols), dtype=object)
    return names if len(names) and all(isinstance(c, str) for c in names) else None


# ---------------------------------------------------------------------------


class _SoftmaxRegression(_SGDEstimator):
    """Multinomial logistic (softmax) regression trained by minibatch SGD in C++.

    Parameters: lr (> 0), batch_size, epochs, momentum (in [0, 1)), weight_decay (L2 on
    coef_), init ("normal": N(0, 0.01^2) as d2l, or "zeros"), shuffle (a new permutation
    of the rows each epoch, seeded from ``numpy.random.default_rng(random_state)``),
    random_state, verbose (a progress bar per epoch with loss/accuracy; tqdm optional),
    warm_start (fit continues from the current parameters instead of starting anew),
    device ("cpu", the default; "cuda"/"cuda:N" are validated and refused with the reason
    until the on-device epoch of issue 16 lands: docs/cuda.md).

    X: float32 (trained in float32), float64 (in float64), uint8 (read as x / 255 in
    float32, as torchvision's ``ToTensor``) or anything NumPy converts to float64,
    shape ``[n_samples, n_features]``, any memory layout; a pandas DataFrame sets
    feature_names_in_. y: ``[n_samples]`` labels of any type; they are encoded as
    scikit-learn does (``classes_ = numpy.unique(y)``). sample_weight: ``[n_samples]``
    finite weights >= 0 (a batch's loss is ``sum_i w_i l_i / batch_rows``).

    Attributes: coef_ ``[n_classes, n_features]``, intercept_ ``[n_classes]``,
    classes_, n_features_in_, feature_names_in_ (DataFrames with string columns),
    n_iter_ (epochs run since the parameters were initialised), history_ (dict of
    per-epoch lists: epoch, train_loss, train_acc, eval_loss and eval_acc with
    eval_set, seconds). train_loss and train_acc are running means over the epoch's
    batches, taken while the model was still changing; ``score`` measures the final one.
    """

    _has_accuracy = True

    def __init__(
        self,
        lr: float = 0.1,
        batch_size: int = 256,
        epochs: int = 10,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        init: Literal["normal", "zeros"] = "normal",
        shuffle: bool = True,
        random_state: RandomState = None,
        verbose: bool = False,
        warm_start: bool = False,
        device: str = "cpu",
    ) -> None:
        self.lr = lr
        self.batch_size = batch_size
        self.epochs = epochs
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.init = init
        self.shuffle = shuffle
        self.random_state = random_state
        self.verbose = verbose
        self.warm_start = warm_start
        self.device = device

    def _encode(self, y, n: int, name: str = "y") -> np.ndarray:
        y = _check_y_1d(y, n, name, type(self).__name__)
        idx = np.searchsorted(self.classes_, y)
        idx = np.clip(idx, 0, len(self.classes_) - 1)
        unknown = self.classes_[idx] != y
        if unknown.any():
            row = int(np.argmax(unknown))
            known = self.classes_.tolist()
            if len(known) > 20:  # a large vocabulary: its ends, not a page of labels
                known = (
                    f"[{', '.join(map(repr, known[:10]))}, ..., {', '.join(map(repr, known[-5:]))}] "
                    f"({len(known)} classes)"
                )
            raise ValueError(f"{name} contains label {y[row]!r} at row {row}, which is not one of classes_ {known}")
        return np.ascontiguousarray(idx, dtype=np.int64)

    def _prepare_eval(self, eval_set):
        if eval_set is None:
            return None
        if not isinstance(eval_set, tuple) or len(eval_set) != 2:
            raise TypeError("eval_set must be a tuple (X_eval, y_eval)")
        Xe = _check_X(eval_set[0], "X_eval")
        self._check_features(Xe)
        return Xe, self._encode(eval_set[1], Xe.shape[0], "y_eval")

    def fit(
        self: _Est,
        X: ArrayLike,
        y: ArrayLike,
        sample_weight: ArrayLike | None = None,
        eval_set: tuple[ArrayLike, ArrayLike] | None = None,
        *,
        distributed: Any = None,
    ) -> _Est:
        """Train for ``epochs`` epochs (from new parameters, or from the current ones with
        warm_start); returns self.

        X: ``[n_samples, n_features]``; y: ``[n_samples]`` labels; sample_weight: optional
        ``[n_samples]`` weights >= 0; eval_set: optional ``(X_eval, y_eval)`` evaluated
        after every epoch (history_ eval_loss/eval_acc).
        distributed: data-parallel training over ``torch.distributed`` (docs/distributed.md):
        None (default) when an initialised process group has more than one rank, True to
        require it, False never. Every rank passes the whole data set; each trains on
        its shard with ``batch_size`` rows per step and the gradients are averaged.
        Raises TrainingDivergedError (a ValueError) naming the epoch if the loss
        becomes inf/nan. Whatever fails, the estimator is left as it was.
        """
        with self._unchanged_on_error():
            self._check_hyper()
            data_parallel = self._resolve(distributed, sample_weight)
            # The single-process epoch checks rows for NaN/inf as it gathers them; the
            # data-parallel path scans X up front.
            Xa = _check_X(X, check_finite=data_parallel is not None)
            y = _check_y_1d(y, Xa.shape[0], owner=type(self).__name__)
            _check_classification_targets(y)
            warm = self.warm_start and hasattr(self, "_w")
            if warm:
                Xa = self._prepare_warm(Xa)
                self._validate(X, Xa, reset=False)
                codes = self._encode(y, Xa.shape[0])
            else:
                self.classes_, codes = _classes_and_codes(y)
                self._init_state(Xa.shape[1], len(self.classes_), _model_dtype(Xa))
                self._validate(X, Xa, reset=True)
            sw = _check_sample_weight(sample_weight, Xa.shape[0], self._w.dtype)
            eval_data = self._prepare_eval(eval_set)
            self._run_epochs(Xa, codes, int(self.epochs), eval_data, data_parallel, sw)
        return self

    def partial_fit(
        self: _Est,
        X: ArrayLike,
        y: ArrayLike,
        classes: ArrayLike | None = None,
        sample_weight: ArrayLike | None = None,
        eval_set: tuple[ArrayLike, ArrayLike] | None = None,
        *,
        distributed: Any = None,
    ) -> _Est:
        """One more epoch over (X, y), keeping the parameters (and momentum) so far.

        classes: every label that will ever appear, as for SGDClassifier; needed on the
        first call unless this y already holds every class, and if given later it must
        equal classes_. sample_weight, eval_set and ``distributed`` as for fit.
        Whatever fails, the estimator is left as it was.
        """
        with self._unchanged_on_error():
            self._check_hyper()
            data_parallel = self._resolve(distributed, sample_weight)
            Xa = _check_X(X, check_finite=data_parallel is not None)
            if not hasattr(self, "_w"):
                y1 = _check_y_1d(y, Xa.shape[0], owner=type(self).__name__)
                _check_classification_targets(y1)
                if classes is None:
                    self.classes_ = np.unique(y1)
                else:
                    self.classes_ = np.unique(np.asarray(classes))
                    _check_classification_targets(self.classes_, "classes")
                self._init_state(Xa.shape[1], len(self.classes_), _model_dtype(Xa))
                self._validate(X, Xa, reset=True)
            else:
                if classes is not None and not np.array_equal(np.unique(np.asarray(classes)), self.classes_):
                    raise ValueError(
                        f"classes={np.asarray(classes).tolist()!r} is not the same as on the first "
                        f"call to partial_fit, was: {self.classes_.tolist()!r}"
                    )
                Xa = self._prepare_warm(Xa)
                self._validate(X, Xa, reset=False)
            codes = self._encode(y, Xa.shape[0])
            sw = _check_sample_weight(sample_weight, Xa.shape[0], self._w.dtype)
            self._run_epochs(Xa, codes, 1, self._prepare_eval(eval_set), data_parallel, sw)
        return self

    def _epoch(self, X, y, order, check_finite, sample_weight=None):
        return _core.softmax_epoch(
            X,
            y,
            order,
            self._w,
            self._b,
            self._w_buf,
            self._b_buf,
            scale=_scale_for(X),
            check_finite=check_finite,
            sample_weight=sample_weight,
            **self._fit_args(),
        )

    def _batch_grad(self, X, y, idx, grad):
        return _core.softmax_batch_grad(X, y, idx, self._w, self._b, grad, scale=_scale_for(X))

    def _loss_name(self) -> str:
        return "cross_entropy"

    def _logits(self, X) -> np.ndarray:
        """``X @ coef_.T + intercept_``: ``[n_samples, n_classes]`` of coef_'s dtype."""
        self._check_fitted()
        Xa = _check_X(X)
        self._validate(X, Xa, reset=False)
        _ensure_blas()
        return _core.linear_forward(np.ascontiguousarray(_as_float_rows(Xa, self._w.dtype)), self._w, self._b)

    def decision_function(self, X: ArrayLike) -> np.ndarray:
        """Logits ``X @ coef_.T + intercept_``: ``[n_samples, n_classes]`` of coef_'s dtype.
        With two classes, as scikit-learn's classifiers: ``[n_samples]``, the second class's
        logit minus the first's (> 0 predicts classes_[1])."""
        z = self._logits(X)
        return z[:, 1] - z[:, 0] if z.shape[1] == 2 else z

    def predict_log_proba(self, X: ArrayLike) -> np.ndarray:
        """Log-softmax of the logits: ``[n_samples, n_classes]`` (order of classes_), computed
        stably (no log of an underflowed probability)."""
        return _log_softmax(self._logits(X))

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        """Softmax of the logits: ``[n_samples, n_classes]``, rows sum to 1 (order of classes_)."""
        return np.exp(self.predict_log_proba(X))

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Most probable class label per sample: ``[n_samples]`` from classes_."""
        if self._many_classes():  # the fused kernel's argmax: no [n_samples, n_classes] logits
            Xf = self._rows(X)
            _, am = linear_cross_entropy(
                Xf,
                self._w,
                np.full(len(Xf), -1, np.int64),
                self._b,
                ignore_index=-1,
                reduction="sum",
                return_argmax=True,
            )  # every row ignored: argmax only
            return self.classes_[am]
        z = self._logits(X)  # first: it raises NotFittedError on an unfitted estimator
        return self.classes_[np.argmax(z, axis=1)]

    def _many_classes(self) -> bool:
        """Whether the model's classes are many enough that the epoch runs the fused linear +
        cross-entropy kernel (cpp/epoch.hpp kManyClasses); predict and the per-epoch evaluation
        then use it too, and never hold [n_samples, n_classes] logits (one chunk of rows' at a time)."""
        self._check_fitted()
        return _core.epoch_many_classes(self._w.shape[0], False)

    def _rows(self, X) -> np.ndarray:
        Xa = _check_X(X)
        self._validate(X, Xa, reset=False)
        _ensure_blas()
        return np.ascontiguousarray(_as_float_rows(Xa, self._w.dtype))

    def _evaluate(self, X, y_idx):
        if self._many_classes():
            loss, am = linear_cross_entropy(
                self._rows(X), self._w, np.asarray(y_idx, np.int64), self._b, return_argmax=True
            )
            return float(loss), float(np.mean(am == y_idx))
        logp = _log_softmax(self._logits(X).astype(np.float64))
        loss = float(-logp[np.arange(len(y_idx)), y_idx].mean())
        return loss, float(np.mean(np.argmax(logp, axis=1) == y_idx))


class _LinearRegression(_SGDEstimator):
    """Linear regression: minibatch SGD in C++ (d2l 3.2/3.3) or closed-form least squares.

    Parameters as SoftmaxRegression, plus ``loss`` ("squared": 0.5 r^2 as d2l's
    ``squared_loss``, "huber": 0.5 r^2 for |r| <= 1 else |r| - 0.5, "l1": |r|; the
    mean over the batch is minimised) and ``solver`` ("sgd", or "normal": least
    squares via ``numpy.linalg.lstsq``, an SVD, never an explicit inverse; a
    rank-deficient X gives the minimum-norm solution of ``[X, 1] @ [w; b] = y`` and a
    RuntimeWarning; only the squared loss, and the SGD options are ignored; with
    sample_weight, weighted least squares).

    X: ``[n_samples, n_features]`` (float32 trains in float32, uint8 is read as x / 255
    in float32 as SoftmaxRegression reads it, anything else in float64), any layout;
    y: ``[n_samples]`` finite numbers; sample_weight: ``[n_samples]`` weights >= 0.
    Attributes: coef_ ``[n_features]``, intercept_ (float), n_features_in_,
    feature_names_in_, n_iter_, history_ (epoch, train_loss, eval_loss with eval_set,
    seconds).
    """

    def __init__(
        self,
        lr: float = 0.03,
        batch_size: int = 10,
        epochs: int = 3,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        init: Literal["normal", "zeros"] = "normal",
        shuffle: bool = True,
        random_state: RandomState = None,
        verbose: bool = False,
        loss: Literal["squared", "huber", "l1"] = "squared",
        solver: Literal["sgd", "normal"] = "sgd",
        warm_start: bool = False,
        device: str = "cpu",
    ) -> None:
        self.lr = lr
        self.batch_size = batch_size
        self.epochs = epochs
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.init = init
        self.shuffle = shuffle
        self.random_state = random_state
        self.verbose = verbose
        self.loss = loss
        self.solver = solver
        self.warm_start = warm_start
        self.device = device

    def _check_hyper(self) -> None:
        super()._check_hyper()
        if self.loss not in ("squared", "huber", "l1"):
            raise ValueError(f"loss must be 'squared', 'huber' or 'l1', got {self.loss!r}")
        if self.solver not in ("sgd", "normal"):
            raise ValueError(f"solver must be 'sgd' or 'normal', got {self.solver!r}")
        if self.solver == "normal" and self.loss != "squared":
            raise ValueError(f"solver='normal' solves the squared loss only, got loss={self.loss!r}")

    def _prepare(self, X, y, name="X", check_finite=True):
        X = _check_X(X, name, check_finite=check_finite)
        y = _check_y_1d(y, X.shape[0], "y" if name == "X" else "y_eval", type(self).__name__)
        if y.dtype.kind == "O":  # an object array of numbers converts; of anything else, TypeError
            y = y.astype(np.float64)
        if y.dtype.kind not in "biuf":
            raise TypeError(f"y must be numeric, got dtype {y.dtype}")
        return X, np.ascontiguousarray(y, dtype=_model_dtype(X))

    def _prepare_eval(self, eval_set):
        if eval_set is None:
            return None
        if not isinstance(eval_set, tuple) or len(eval_set) != 2:
            raise TypeError("eval_set must be a tuple (X_eval, y_eval)")
        Xe, ye = self._prepare(*eval_set, name="X_eval")
        self._check_features(Xe)
        return Xe, ye.astype(self._w.dtype, copy=False)

    def fit(
        self: _Est,
        X: ArrayLike,
        y: ArrayLike,
        sample_weight: ArrayLike | None = None,
        eval_set: tuple[ArrayLike, ArrayLike] | None = None,
        *,
        distributed: Any = None,
    ) -> _Est:
        """Fit on X ``[n_samples, n_features]``, y ``[n_samples]``; returns self.

        sample_weight: optional ``[n_samples]`` weights >= 0. distributed: data-parallel
        SGD over ``torch.distributed``, as in ``SoftmaxRegression.fit`` (solver="sgd"
        only; with None, solver="normal" solves on each rank alone). With warm_start, SGD
        continues from the current parameters. Whatever fails, the estimator is left as it was.
        """
        with self._unchanged_on_error():
            self._check_hyper()
            if distributed and self.solver != "sgd":
                raise ValueError(f"distributed training needs solver='sgd', got solver={self.solver!r}")
            data_parallel = self._resolve(distributed, sample_weight) if self.solver == "sgd" else None
            # The single-process sgd epoch checks X for NaN/inf as it gathers rows; the
            # closed form and the data-parallel path scan X up front.
            Xa, ya = self._prepare(X, y, check_finite=self.solver == "normal" or data_parallel is not None)
            if data_parallel is not None and Xa.dtype == np.uint8:  # the per-step path reads floats
                Xa = _as_float_rows(Xa, np.float32)
            if self.warm_start and self.solver == "sgd" and hasattr(self, "_w"):
                Xa = self._prepare_warm(Xa)
                ya = ya.astype(self._w.dtype, copy=False)
                self._validate(X, Xa, reset=False)
            else:
                self._init_state(Xa.shape[1], 1, _model_dtype(Xa))
                self._validate(X, Xa, reset=True)
            sw = _check_sample_weight(sample_weight, Xa.shape[0], self._w.dtype)
            eval_data = self._prepare_eval(eval_set)
            if self.solver == "normal":
                self._solve_normal(Xa, ya, eval_data, sw)
            else:
                self._run_epochs(Xa, ya, int(self.epochs), eval_data, data_parallel, sw)
        return self

    def partial_fit(
        self: _Est,
        X: ArrayLike,
        y: ArrayLike,
        sample_weight: ArrayLike | None = None,
        eval_set: tuple[ArrayLike, ArrayLike] | None = None,
        *,
        distributed: Any = None,
    ) -> _Est:
        """One more SGD epoch over (X, y), keeping the parameters so far (solver='sgd').
        sample_weight and ``distributed`` as for fit. Whatever fails, the estimator is
        left as it was."""
        with self._unchanged_on_error():
            self._check_hyper()
            if self.solver != "sgd":
                raise ValueError("partial_fit needs solver='sgd'")
            data_parallel = self._resolve(distributed, sample_weight)
            Xa, ya = self._prepare(X, y, check_finite=data_parallel is not None)  # else the epoch checks X
            if data_parallel is not None and Xa.dtype == np.uint8:
                Xa = _as_float_rows(Xa, np.float32)
            if not hasattr(self, "_w"):
                self._init_state(Xa.shape[1], 1, _model_dtype(Xa))
                self._validate(X, Xa, reset=True)
            else:
                Xa = self._prepare_warm(Xa)
                ya = ya.astype(self._w.dtype, copy=False)
                self._validate(X, Xa, reset=False)
            sw = _check_sample_weight(sample_weight, Xa.shape[0], self._w.dtype)
            self._run_epochs(Xa, ya, 1, self._prepare_eval(eval_set), data_parallel, sw)
        return self

    def _epoch(self, X, y, order, check_finite, sample_weight=None):
        return _core.regression_epoch(
            X,
            y,
            order,
            self._w,
            self._b,
            self._w_buf,
            self._b_buf,
            loss=self.loss,
            scale=_scale_for(X),
            check_finite=check_finite,
            sample_weight=sample_weight,
            **self._fit_args(),
        )

    def _batch_grad(self, X, y, idx, grad):
        return _core.regression_batch_grad(X, y, idx, self._w, self._b, grad, loss=self.loss)

    def _loss_name(self) -> str:
        return self.loss

    def _solve_normal(self, X, y, eval_data, sample_weight=None) -> None:
        t0 = time.perf_counter()
        A = np.empty((X.shape[0], X.shape[1] + 1))
        A[:, :-1] = _as_float_rows(X, np.float64)
        A[:, -1] = 1.0
        rhs = y.astype(np.float64)
        if sample_weight is not None:  # weighted least squares: rows scaled by sqrt(w)
            root = np.sqrt(sample_weight.astype(np.float64))
            A *= root[:, None]
            rhs = rhs * root
        sol, _, rank, _ = np.linalg.lstsq(A, rhs, rcond=None)
        if rank < A.shape[1]:
            warnings.warn(
                f"X with an intercept column is rank-deficient (rank {rank} < {A.shape[1]}): "
                "returning the minimum-norm least-squares solution",
                RuntimeWarning,
                stacklevel=4,
            )
        self._w = _on_cache_lines(sol[:-1].reshape(1, -1), self._w.dtype)
        self._b = sol[-1:].astype(self._b.dtype)
        self.n_iter_ = 1
        h = self.history_
        h["epoch"].append(1)
        h["train_loss"].append(self._evaluate(X, y)[0])
        h["seconds"].append(time.perf_counter() - t0)
        if eval_data is not None:
            h["eval_loss"] = [self._evaluate(*eval_data)[0]]

    @property
    def coef_(self) -> np.ndarray:
        self._check_fitted()
        return self._w[0]

    @property
    def intercept_(self) -> float:
        self._check_fitted()
        return float(self._b[0])

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Predictions ``X @ coef_ + intercept_``: ``[n_samples]`` of coef_'s dtype."""
        self._check_fitted()
        Xa = _check_X(X)
        self._validate(X, Xa, reset=False)
        _ensure_blas()
        return _core.linear_forward(np.ascontiguousarray(_as_float_rows(Xa, self._w.dtype)), self._w, self._b)[:, 0]

    def _evaluate(self, X, y):
        r = self.predict(X).astype(np.float64) - y
        a = np.abs(r)
        if self.loss == "squared":
            per = 0.5 * r * r
        elif self.loss == "huber":
            per = np.where(a <= 1, 0.5 * r * r, a - 0.5)
        else:
            per = a
        return (float(per.mean()),)


def _softmax_coef(self) -> np.ndarray:
    self._check_fitted()
    return self._w


def _softmax_intercept(self) -> np.ndarray:
    self._check_fitted()
    return self._b


_SoftmaxRegression.coef_ = property(_softmax_coef, doc="coef_ [n_classes, n_features]")
_SoftmaxRegression.intercept_ = property(_softmax_intercept, doc="intercept_ [n_classes]")


# ---------------------------------------------------------------------------
# the public classes, built on first use


class _Params:
    """fastreg's own base when scikit-learn is absent: get_params/set_params and a repr."""

    @classmethod
    def _get_param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict:
        """Constructor parameters as a dict (scikit-learn convention)."""
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params):
        """Set constructor parameters; returns self. Unknown names raise ValueError."""
        valid = self._get_param_names()
        for key, value in params.items():
            if key not in valid:
                raise ValueError(
                    f"Invalid parameter {key!r} for estimator {type(self).__name__}; "
                    f"valid parameters: {', '.join(valid)}"
                )
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        sig = inspect.signature(type(self).__init__)
        changed = [
            f"{k}={getattr(self, k)!r}"
            for k, p in sig.parameters.items()
            if k != "self" and getattr(self, k) is not p.default and getattr(self, k) != p.default
        ]
        return f"{type(self).__name__}({', '.join(changed)})"


class _ClassifierScore:
    def score(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None) -> float:
        """Mean accuracy of predict(X) against y (weighted by sample_weight)."""
        y = np.asarray(y)
        return float(np.average(self.predict(X) == y, weights=sample_weight))


class _RegressorScore:
    def score(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None) -> float:
        """Coefficient of determination R^2 of predict(X) against y (weighted by sample_weight);
        1.0 for a perfect fit of a constant y, 0.0 for an imperfect one (scikit-learn's r2_score)."""
        y = np.asarray(y, dtype=np.float64)
        w = np.ones_like(y) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        resid = ((y - self.predict(X)) ** 2 * w).sum()
        total = (((y - np.average(y, weights=w)) ** 2) * w).sum()
        if total == 0:
            return 1.0 if resid == 0 else 0.0
        return float(1.0 - resid / total)


# Checks of scikit-learn's own suite that these estimators are declared to fail, with why.
_EXPECTED_FAILED_CHECKS = {
    "check_sample_weight_equivalence_on_dense_data": (
        "minibatch SGD over a shuffled order: a row of weight 2 and the same row twice give the "
        "same expected gradient, not the same parameters after a few epochs (as SGDClassifier)"
    ),
}


def _expected_failed_checks(estimator) -> dict:
    """``expected_failed_checks`` for ``sklearn.utils.estimator_checks``: check name -> reason."""
    return dict(_EXPECTED_FAILED_CHECKS)


_NotFittedError = _FastregNotFittedError
_validate_data = None
_BUILT: dict = {}
_PUBLIC = ("SoftmaxRegression", "LinearRegression")


def _build() -> None:
    """Creates SoftmaxRegression and LinearRegression: scikit-learn estimators when it can be
    imported, else on fastreg's own base. The classes are created once; their module and
    name are fastreg.models.<name>, so pickle finds them."""
    global _NotFittedError, _validate_data
    try:
        from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
        from sklearn.exceptions import NotFittedError
        from sklearn.utils.validation import validate_data
    except ImportError:
        bases = {
            "SoftmaxRegression": (_ClassifierScore, _SoftmaxRegression, _Params),
            "LinearRegression": (_RegressorScore, _LinearRegression, _Params),
        }
        sklearn = False
    else:
        _NotFittedError, _validate_data = NotFittedError, validate_data
        bases = {
            "SoftmaxRegression": (ClassifierMixin, _SoftmaxRegression, BaseEstimator),
            "LinearRegression": (RegressorMixin, _LinearRegression, BaseEstimator),
        }

        sklearn = True
    for name in _PUBLIC:
        impl = bases[name][1]
        ns = {"__module__": __name__, "__qualname__": name, "__doc__": impl.__doc__}
        cls = _BUILT[name] = type(name, bases[name], ns)
        if sklearn:
            cls.__sklearn_tags__ = _tags_for(cls)
    globals().update(_BUILT)
    globals()["NotFittedError"] = _NotFittedError


def _tags_for(cls):
    def __sklearn_tags__(self):
        tags = super(cls, self).__sklearn_tags__()
        tags.input_tags.sparse = False  # dense arrays only: a sparse X raises TypeError saying so
        tags.input_tags.allow_nan = False
        return tags

    return __sklearn_tags__


def __getattr__(name: str):
    if name in _PUBLIC or name == "NotFittedError":
        _build()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC) | {"NotFittedError"})

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
"""

from __future__ import annotations

import contextlib
import inspect
import math
import sys
import time
import warnings

import numpy as np

from . import _core, _distributed
from .linear import _ensure_blas

__all__ = ["LinearRegression", "SoftmaxRegression", "TrainingDivergedError"]


class TrainingDivergedError(ValueError, FloatingPointError):
    """The training loss became inf/nan (usually: the learning rate is too large).

    A ValueError (like the other bad-setting errors, so ``except ValueError`` catches
    it) and a FloatingPointError (what it is)."""

_UINT8_SCALE = 1.0 / 255.0


# ---------------------------------------------------------------------------
# input checks


class _NonFiniteX(ValueError):
    """X holds NaN/inf (found by the first epoch's own pass over X)."""


def _check_X(X, name: str = "X", *, allow_uint8: bool = True, check_finite: bool = True) -> np.ndarray:
    """2-D, C-contiguous, float32/float64 (or uint8 images); finite unless check_finite is
    False (fit and partial_fit leave that to the first epoch, which reads every row anyway)."""
    if hasattr(X, "detach") and hasattr(X, "numpy"):  # a CPU torch tensor
        X = X.detach().numpy()
    X = np.asarray(X)
    if X.dtype == np.uint8 and allow_uint8:
        pass
    elif X.dtype not in (np.float32, np.float64):
        if X.dtype.kind not in "biuf":
            raise TypeError(f"{name} must be numeric, got dtype {X.dtype}")
        X = X.astype(np.float64)
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D [n_samples, n_features], got shape {X.shape}")
    if X.shape[0] == 0:
        raise ValueError(f"{name} has 0 samples; at least one is required")
    if X.shape[1] == 0:  # as scikit-learn: a model of no features is a mistake, not a fit
        raise ValueError(f"{name} has 0 features (shape {X.shape}); at least one is required")
    X = np.ascontiguousarray(X)
    if check_finite and X.dtype != np.uint8:
        row = _core.first_nonfinite_row(X)
        if row >= 0:
            raise ValueError(f"{name} contains NaN or infinity at row {row}")
    return X


def _check_y_1d(y, n: int, name: str = "y") -> np.ndarray:
    if hasattr(y, "detach") and hasattr(y, "numpy"):
        y = y.detach().numpy()
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D with one entry per sample, got shape {y.shape} (use y.ravel())")
    if y.shape[0] != n:
        raise ValueError(f"{name} has {y.shape[0]} entries but X has {n} rows")
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y)
        if bad.any():
            raise ValueError(f"{name} contains NaN or infinity at row {int(np.argmax(bad))}")
    return y


def _classes_and_codes(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(classes, codes): np.unique(y) and int64[n] indices of y's labels into it.

    Small non-negative integer labels (the usual 0..C-1) take a histogram instead of
    np.unique's sort (~0.1 ms instead of ~2 ms for 60000 labels); when every label in
    0..max occurs, the labels are their own codes."""
    if y.dtype.kind in "iu" and y.size and y.min() >= 0 and y.max() <= 2 * y.size + 1024:
        present = np.bincount(y) > 0
        classes = np.flatnonzero(present).astype(y.dtype)
        if len(classes) == len(present):
            return classes, y.astype(np.int64, copy=False)
        return classes, (np.cumsum(present) - 1)[y]
    classes, codes = np.unique(y, return_inverse=True)
    return classes, codes.reshape(-1).astype(np.int64, copy=False)


def _model_dtype(X: np.ndarray):
    return np.float64 if X.dtype == np.float64 else np.float32


def _scale_for(X: np.ndarray) -> float:
    return _UINT8_SCALE if X.dtype == np.uint8 else 1.0


def _as_float_rows(X: np.ndarray, dtype) -> np.ndarray:
    """X as the model's float dtype (uint8 images are read as x / 255)."""
    if X.dtype == np.uint8:
        return X.astype(dtype) * np.dtype(dtype).type(_UINT8_SCALE)
    return X.astype(dtype, copy=False)


# ---------------------------------------------------------------------------
# shared SGD machinery


def _epoch_order(rng: np.random.Generator, n: int) -> np.ndarray:
    """One epoch's permutation of range(n): a seed drawn from the estimator's Generator
    drives fastreg's own shuffle (the DataLoader's), ~4x faster than
    ``Generator.permutation`` (0.14 vs 0.53 ms for 60000 rows, ~3% of an epoch)."""
    return _core.random_permutation(n, int(rng.integers(2**63)), 0)


class _SGDEstimator:
    """Constructor storage, get/set_params, and the epoch driver."""

    _default_lr = 0.1
    _has_accuracy = False

    # -- scikit-learn parameter protocol --------------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict:
        """Constructor parameters as a dict (scikit-learn convention)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params):
        """Set constructor parameters; returns self. Unknown names raise ValueError."""
        valid = self._param_names()
        for key, value in params.items():
            if key not in valid:
                raise ValueError(f"Invalid parameter {key!r} for {type(self).__name__}; valid: {', '.join(valid)}")
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        sig = inspect.signature(type(self).__init__)
        changed = [
            f"{k}={getattr(self, k)!r}"
            for k, p in sig.parameters.items()
            if k != "self" and getattr(self, k) != p.default
        ]
        return f"{type(self).__name__}({', '.join(changed)})"

    # -- hyper-parameter checks ------------------------------------------------
    def _check_hyper(self) -> None:
        def number(name, positive):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise TypeError(f"{name} must be a number, got {type(v).__name__}")
            if not math.isfinite(v) or v < 0 or (positive and v == 0):
                raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {v}")

        def count(name):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"{name} must be an int, got {type(v).__name__}")
            if v <= 0:
                raise ValueError(f"{name} must be >= 1, got {v}")

        number("lr", True)
        number("momentum", False)
        number("weight_decay", False)
        count("batch_size")
        count("epochs")
        if self.init not in ("normal", "zeros"):
            raise ValueError(f"init must be 'normal' or 'zeros', got {self.init!r}")

    # -- state -------------------------------------------------------------
    def _init_state(self, n_features: int, n_outputs: int, dtype) -> None:
        self._rng = np.random.default_rng(self.random_state)
        if self.init == "normal":  # d2l: w ~ N(0, 0.01^2), b = 0
            w = self._rng.normal(0.0, 0.01, size=(n_outputs, n_features))
        else:
            w = np.zeros((n_outputs, n_features))
        self._w = np.ascontiguousarray(w, dtype=dtype)
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

    def _check_fitted(self) -> None:
        if not hasattr(self, "_w"):
            raise RuntimeError(f"This {type(self).__name__} instance is not fitted yet; call fit first")

    def _check_features(self, X: np.ndarray) -> None:
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} was fitted with "
                             f"{self.n_features_in_}")

    # -- the epoch driver ------------------------------------------------------
    def _run_epochs(self, X, y_fit, epochs: int, eval_data, data_parallel=None) -> None:
        """``epochs`` epochs, each in C++; the first also checks X for NaN/inf (X was not
        scanned). With ``data_parallel`` (a ``_distributed.DataParallel``; X was scanned
        up front) each rank trains on its shard and the gradients are all-reduced every step."""
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
                saved = (self._w.copy(), self._b.copy(),
                         None if self._w_buf is None else self._w_buf.copy(),
                         None if self._b_buf is None else self._b_buf.copy())
                t0 = time.perf_counter()
                if data_parallel is None:
                    loss_sum, correct, rows, finite, bad = self._epoch(X, y_fit, order, check_finite=epoch_index == 0)
                else:
                    loss_sum, correct, rows, finite = data_parallel.epoch(self, X, y_fit, order)
                    bad = -1
                seconds = time.perf_counter() - t0
                if bad >= 0:  # the epoch stopped before using that row; report the first bad one
                    self._restore(saved)
                    raise _NonFiniteX(f"X contains NaN or infinity at row {_core.first_nonfinite_row(X)}")
                if not finite or not math.isfinite(loss_sum):
                    self._restore(saved)
                    if data_parallel is None and epoch_index == 0 and X.dtype != np.uint8:
                        # A huge finite value can make the loss overflow before the gather
                        # reaches a NaN/inf row: bad input is reported as such, with its row.
                        row = _core.first_nonfinite_row(X)
                        if row >= 0:
                            raise _NonFiniteX(f"X contains NaN or infinity at row {row}")
                    raise TrainingDivergedError(
                        f"training diverged in epoch {epoch}: the loss became inf/nan after {rows} of "
                        f"{n if data_parallel is None else data_parallel.shard(order).size * data_parallel.world_size} "
                        f"samples. The parameters are left as they were before this epoch; try a smaller "
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

    def _restore(self, saved) -> None:
        """Puts back the parameters saved before an epoch, in place (arrays keep their identity)."""
        for cur, old in zip((self._w, self._b, self._w_buf, self._b_buf), saved):
            if cur is not None:
                cur[...] = old

    @contextlib.contextmanager
    def _unchanged_if_X_rejected(self):
        """fit/partial_fit do not scan X for NaN/inf up front (a full extra pass over X): the
        first epoch checks each row as it gathers it. If it finds one, the estimator is put back
        exactly as it was, as if X had been rejected before anything was touched."""
        state = dict(self.__dict__)
        try:
            yield
        except _NonFiniteX:
            self.__dict__.clear()
            self.__dict__.update(state)
            raise

    def _fit_args(self):
        return dict(
            lr=float(self.lr), momentum=float(self.momentum), weight_decay=float(self.weight_decay),
            batch_size=int(self.batch_size), first_step=self._first_step,
        )

    @property
    def coef_(self) -> np.ndarray:
        self._check_fitted()
        return self._w

    @property
    def intercept_(self):
        self._check_fitted()
        return self._b


class _progress:
    """A tqdm bar over epochs with the latest metrics; a printed line per epoch without tqdm."""

    def __init__(self, total: int, desc: str):
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


# ---------------------------------------------------------------------------


class SoftmaxRegression(_SGDEstimator):
    """Multinomial logistic (softmax) regression trained by minibatch SGD in C++.

    Parameters: lr (> 0), batch_size, epochs, momentum, weight_decay (L2 on coef_),
    init ("normal": N(0, 0.01^2) as d2l, or "zeros"), shuffle (a new permutation of the
    rows each epoch, seeded from ``numpy.random.default_rng(random_state)``), random_state,
    verbose (a progress bar per epoch with loss/accuracy; tqdm optional).

    X: float32 (trained in float32), float64 (in float64), uint8 (read as x / 255 in
    float32, as torchvision's ``ToTensor``) or anything NumPy converts to float64,
    shape ``[n_samples, n_features]``. y: ``[n_samples]`` labels of any type; they are
    encoded as scikit-learn does (``classes_ = numpy.unique(y)``).

    Attributes: coef_ ``[n_classes, n_features]``, intercept_ ``[n_classes]``,
    classes_, n_features_in_, n_iter_ (epochs run), history_ (dict of per-epoch lists:
    epoch, train_loss, train_acc, eval_loss and eval_acc with eval_set, seconds).
    """

    _has_accuracy = True

    def __init__(self, lr=0.1, batch_size=256, epochs=10, momentum=0.0, weight_decay=0.0, init="normal",
                 shuffle=True, random_state=None, verbose=False):
        self.lr = lr
        self.batch_size = batch_size
        self.epochs = epochs
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.init = init
        self.shuffle = shuffle
        self.random_state = random_state
        self.verbose = verbose

    def _encode(self, y, n: int, name: str = "y") -> np.ndarray:
        y = _check_y_1d(y, n, name)
        idx = np.searchsorted(self.classes_, y)
        idx = np.clip(idx, 0, len(self.classes_) - 1)
        unknown = self.classes_[idx] != y
        if unknown.any():
            row = int(np.argmax(unknown))
            raise ValueError(f"{name} contains label {y[row]!r} at row {row}, which is not one of classes_ "
                             f"{self.classes_.tolist()}")
        return idx.astype(np.int64)

    def _prepare_eval(self, eval_set):
        if eval_set is None:
            return None
        if not isinstance(eval_set, tuple) or len(eval_set) != 2:
            raise TypeError("eval_set must be a tuple (X_eval, y_eval)")
        Xe = _check_X(eval_set[0], "X_eval")
        self._check_features(Xe)
        return Xe, self._encode(eval_set[1], Xe.shape[0], "y_eval")

    def fit(self, X, y, eval_set=None, *, distributed=None):
        """Train from scratch for ``epochs`` epochs; returns self.

        X: ``[n_samples, n_features]``; y: ``[n_samples]`` labels; eval_set: optional
        ``(X_eval, y_eval)`` evaluated after every epoch (history_ eval_loss/eval_acc).
        distributed: data-parallel training over ``torch.distributed`` (docs/distributed.md):
        None (default) when an initialised process group has more than one rank, True to
        require it, False never. Every rank passes the whole data set; each trains on
        its shard with ``batch_size`` rows per step and the gradients are averaged.
        Raises TrainingDivergedError (a ValueError) naming the epoch if the loss
        becomes inf/nan.
        """
        self._check_hyper()
        data_parallel = _distributed.resolve(distributed)
        # The single-process epoch checks rows for NaN/inf as it gathers them; the
        # data-parallel path scans X up front.
        X = _check_X(X, check_finite=data_parallel is not None)
        y = _check_y_1d(y, X.shape[0])
        with self._unchanged_if_X_rejected():
            self.classes_, codes = _classes_and_codes(y)
            self._init_state(X.shape[1], len(self.classes_), _model_dtype(X))
            eval_data = self._prepare_eval(eval_set)
            self._run_epochs(X, codes, int(self.epochs), eval_data, data_parallel)
        return self

    def partial_fit(self, X, y, classes=None, eval_set=None, *, distributed=None):
        """One more epoch over (X, y), keeping the parameters (and momentum) so far.

        On the first call ``classes`` (all labels that will ever appear) is needed
        unless y already holds every class, as scikit-learn's partial_fit.
        ``distributed`` as for fit.
        """
        self._check_hyper()
        data_parallel = _distributed.resolve(distributed)
        X = _check_X(X, check_finite=data_parallel is not None)
        with self._unchanged_if_X_rejected():
            if not hasattr(self, "_w"):
                y1 = _check_y_1d(y, X.shape[0])
                self.classes_ = np.unique(y1 if classes is None else np.asarray(classes))
                self._init_state(X.shape[1], len(self.classes_), _model_dtype(X))
            else:
                self._check_features(X)
                if _model_dtype(X) != self._w.dtype:
                    X = np.ascontiguousarray(_as_float_rows(X, self._w.dtype))
            self._run_epochs(X, self._encode(y, X.shape[0]), 1, self._prepare_eval(eval_set), data_parallel)
        return self

    def _epoch(self, X, y, order, check_finite):
        return _core.softmax_epoch(X, y, order, self._w, self._b, self._w_buf, self._b_buf,
                                   scale=_scale_for(X), check_finite=check_finite, **self._fit_args())

    def _batch_grad(self, X, y, idx, grad):
        return _core.softmax_batch_grad(X, y, idx, self._w, self._b, grad, scale=_scale_for(X))

    def _loss_name(self) -> str:
        return "cross_entropy"

    def decision_function(self, X) -> np.ndarray:
        """Logits ``X @ coef_.T + intercept_``: ``[n_samples, n_classes]`` of coef_'s dtype."""
        self._check_fitted()
        X = _check_X(X)
        self._check_features(X)
        _ensure_blas()
        return _core.linear_forward(np.ascontiguousarray(_as_float_rows(X, self._w.dtype)), self._w, self._b)

    def predict_proba(self, X) -> np.ndarray:
        """Softmax of the logits: ``[n_samples, n_classes]``, rows sum to 1 (order of classes_)."""
        return np.exp(_log_softmax(self.decision_function(X)))

    def predict(self, X) -> np.ndarray:
        """Most probable class label per sample: ``[n_samples]`` from classes_."""
        scores = self.decision_function(X)
        return self.classes_[np.argmax(scores, axis=1)]

    def score(self, X, y) -> float:
        """Mean accuracy of predict(X) against y."""
        return float(np.mean(self.predict(X) == np.asarray(y)))

    def _evaluate(self, X, y_idx):
        logp = _log_softmax(self.decision_function(X).astype(np.float64))
        loss = float(-logp[np.arange(len(y_idx)), y_idx].mean())
        return loss, float(np.mean(np.argmax(logp, axis=1) == y_idx))


class LinearRegression(_SGDEstimator):
    """Linear regression: minibatch SGD in C++ (d2l 3.2/3.3) or closed-form least squares.

    Parameters as SoftmaxRegression, plus ``loss`` ("squared": 0.5 r^2 as d2l's
    ``squared_loss``, "huber": 0.5 r^2 for |r| <= 1 else |r| - 0.5, "l1": |r|; the
    mean over the batch is minimised) and ``solver`` ("sgd", or "normal": least
    squares via ``numpy.linalg.lstsq``, an SVD, never an explicit inverse; a
    rank-deficient X gives the minimum-norm solution of ``[X, 1] @ [w; b] = y`` and a
    RuntimeWarning; only the squared loss, and the SGD options are ignored).

    X: ``[n_samples, n_features]`` (float32 trains in float32, anything else in
    float64); y: ``[n_samples]`` finite numbers. Attributes: coef_ ``[n_features]``,
    intercept_ (float), n_features_in_, n_iter_, history_ (epoch, train_loss,
    eval_loss with eval_set, seconds).
    """

    def __init__(self, lr=0.03, batch_size=10, epochs=3, momentum=0.0, weight_decay=0.0, init="normal",
                 shuffle=True, random_state=None, verbose=False, loss="squared", solver="sgd"):
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

    def _check_hyper(self) -> None:
        super()._check_hyper()
        if self.loss not in ("squared", "huber", "l1"):
            raise ValueError(f"loss must be 'squared', 'huber' or 'l1', got {self.loss!r}")
        if self.solver not in ("sgd", "normal"):
            raise ValueError(f"solver must be 'sgd' or 'normal', got {self.solver!r}")
        if self.solver == "normal" and self.loss != "squared":
            raise ValueError(f"solver='normal' solves the squared loss only, got loss={self.loss!r}")

    def _prepare(self, X, y, name="X", check_finite=True):
        X = _check_X(X, name, allow_uint8=False, check_finite=check_finite)
        y = _check_y_1d(y, X.shape[0], "y" if name == "X" else "y_eval")
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
        return Xe, ye

    def fit(self, X, y, eval_set=None, *, distributed=None):
        """Fit on X ``[n_samples, n_features]``, y ``[n_samples]``; returns self.

        distributed: data-parallel SGD over ``torch.distributed``, as in
        ``SoftmaxRegression.fit`` (solver="sgd" only; with None, solver="normal" solves
        on each rank alone).
        """
        self._check_hyper()
        if distributed and self.solver != "sgd":
            raise ValueError(f"distributed training needs solver='sgd', got solver={self.solver!r}")
        data_parallel = _distributed.resolve(distributed) if self.solver == "sgd" else None
        # The single-process sgd epoch checks X for NaN/inf as it gathers rows; the
        # closed form and the data-parallel path scan X up front.
        X, y = self._prepare(X, y, check_finite=self.solver == "normal" or data_parallel is not None)
        with self._unchanged_if_X_rejected():
            self._init_state(X.shape[1], 1, _model_dtype(X))
            eval_data = self._prepare_eval(eval_set)
            if self.solver == "normal":
                self._solve_normal(X, y, eval_data)
            else:
                self._run_epochs(X, y, int(self.epochs), eval_data, data_parallel)
        return self

    def partial_fit(self, X, y, eval_set=None, *, distributed=None):
        """One more SGD epoch over (X, y), keeping the parameters so far (solver='sgd').
        ``distributed`` as for fit."""
        self._check_hyper()
        if self.solver != "sgd":
            raise ValueError("partial_fit needs solver='sgd'")
        data_parallel = _distributed.resolve(distributed)
        X, y = self._prepare(X, y, check_finite=data_parallel is not None)  # else the epoch checks X
        with self._unchanged_if_X_rejected():
            if not hasattr(self, "_w"):
                self._init_state(X.shape[1], 1, _model_dtype(X))
            else:
                self._check_features(X)
                X, y = X.astype(self._w.dtype, copy=False), y.astype(self._w.dtype, copy=False)
            self._run_epochs(X, y, 1, self._prepare_eval(eval_set), data_parallel)
        return self

    def _epoch(self, X, y, order, check_finite):
        return _core.regression_epoch(X, y, order, self._w, self._b, self._w_buf, self._b_buf,
                                      loss=self.loss, check_finite=check_finite, **self._fit_args())

    def _batch_grad(self, X, y, idx, grad):
        return _core.regression_batch_grad(X, y, idx, self._w, self._b, grad, loss=self.loss)

    def _loss_name(self) -> str:
        return self.loss

    def _solve_normal(self, X, y, eval_data) -> None:
        t0 = time.perf_counter()
        A = np.empty((X.shape[0], X.shape[1] + 1))
        A[:, :-1] = X
        A[:, -1] = 1.0
        sol, _, rank, _ = np.linalg.lstsq(A, y.astype(np.float64), rcond=None)
        if rank < A.shape[1]:
            warnings.warn(
                f"X with an intercept column is rank-deficient (rank {rank} < {A.shape[1]}): "
                "returning the minimum-norm least-squares solution",
                RuntimeWarning, stacklevel=3,
            )
        self._w = sol[:-1].reshape(1, -1).astype(self._w.dtype)
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

    def predict(self, X) -> np.ndarray:
        """Predictions ``X @ coef_ + intercept_``: ``[n_samples]`` of coef_'s dtype."""
        self._check_fitted()
        X = _check_X(X, allow_uint8=False)
        self._check_features(X)
        _ensure_blas()
        return _core.linear_forward(np.ascontiguousarray(X, dtype=self._w.dtype), self._w, self._b)[:, 0]

    def score(self, X, y) -> float:
        """Coefficient of determination R^2 of predict(X) against y."""
        y = np.asarray(y, dtype=np.float64)
        resid = y - self.predict(X)
        total = ((y - y.mean()) ** 2).sum()
        return float(1.0 - (resid @ resid) / total) if total > 0 else 0.0

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

"""Time to accuracy: fastreg.SoftmaxRegression against what a scikit-learn user would pick.

Each group is one problem and one reference estimator: LogisticRegression (lbfgs),
LogisticRegression (saga) and SGDClassifier(loss="log_loss"), each with scikit-learn's
defaults (max_iter and tol included; a ConvergenceWarning is what such a user gets, and is
silenced here). The reference is fitted once, untimed, to get its held-out accuracy; then
SoftmaxRegression's epochs are counted (by partial_fit, untimed) until its held-out
accuracy is within 1 percentage point of the reference's. The timed cases are then the
reference's fit and a fresh SoftmaxRegression fit with that many epochs (fit with k epochs
gives exactly the parameters of k partial_fit calls, as both draw the same random numbers).
Every case asserts its accuracy before it is timed. ``extra_info`` holds both accuracies
and the epochs, so ``--benchmark-json`` keeps them; ``python bench/ratios.py`` prints the
ratio of times.

Problems:
- digits: scikit-learn's 8x8 digits (1797 x 64), standardised on the training split, a
  seeded 75/25 split; SoftmaxRegression(lr=0.1, batch_size=32).
- synthetic-60000x784 (only with FASTREG_BENCH_LARGE=1: saga alone takes minutes there):
  float32 rows x = A z + noise, where the 20-dimensional latent z is a class centre plus
  N(0, 1), so the classes overlap and no linear model reaches 100%; 60000 training and
  10000 held-out rows, 10 classes; SoftmaxRegression(lr=0.1, batch_size=256, momentum=0.9).
With --benchmark-disable (smoke, as CI runs it) every case runs once.
"""

import os
import warnings

import numpy as np
import pytest

import fastreg

sklearn = pytest.importorskip("sklearn")
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, SGDClassifier

LARGE = os.environ.get("FASTREG_BENCH_LARGE") == "1"
TOLERANCE = 0.01  # within 1 percentage point of the reference's held-out accuracy
MAX_EPOCHS = 200

REFERENCES = {
    "lbfgs": lambda: LogisticRegression(),
    "saga": lambda: LogisticRegression(solver="saga", random_state=0),
    "sgd-log-loss": lambda: SGDClassifier(loss="log_loss", random_state=0),
}


def _digits():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(X))
    n_train = int(0.75 * len(X))
    tr, te = order[:n_train], order[n_train:]
    mean, std = X[tr].mean(0), X[tr].std(0) + 1e-8
    Xs = ((X - mean) / std).astype(np.float32)
    return Xs[tr], y[tr], Xs[te], y[te], dict(lr=0.1, batch_size=32)


def _synthetic(n_train=60_000, n_test=10_000, d=784, c=10, k=20):
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 1.0, (c, k))
    A = rng.normal(0, 1 / np.sqrt(k), (k, d))
    y = rng.integers(0, c, n_train + n_test)
    z = centers[y] + rng.normal(0, 1.0, (len(y), k))
    X = (z @ A + rng.normal(0, 0.5, (len(y), d))).astype(np.float32)
    return X[:n_train], y[:n_train], X[n_train:], y[n_train:], dict(lr=0.1, batch_size=256, momentum=0.9)


PROBLEMS = {"digits": _digits}
if LARGE:
    PROBLEMS["synthetic-60000x784"] = _synthetic

_cache: dict = {}


def _problem(name):
    if name not in _cache:
        _cache[name] = PROBLEMS[name]()
    return _cache[name]


def _fit_reference(ref, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return REFERENCES[ref]().fit(X, y)


def _epochs_to_reach(target, Xtr, ytr, Xte, yte, settings):
    """The fewest epochs after which SoftmaxRegression's held-out accuracy reaches target."""
    est = fastreg.SoftmaxRegression(random_state=0, **settings)
    classes = np.unique(ytr)
    for epoch in range(1, MAX_EPOCHS + 1):
        est.partial_fit(Xtr, ytr, classes=classes)
        acc = est.score(Xte, yte)
        if acc >= target:
            return epoch, acc
    pytest.fail(f"SoftmaxRegression did not reach {target:.4f} in {MAX_EPOCHS} epochs (last {acc:.4f})")


@pytest.mark.parametrize("problem", list(PROBLEMS))
@pytest.mark.parametrize("ref", list(REFERENCES))
@pytest.mark.parametrize("who", ["fastreg", "sklearn"])
def test_time_to_accuracy(benchmark, problem, ref, who):
    Xtr, ytr, Xte, yte, settings = _problem(problem)
    key = (problem, ref)
    if key not in _cache:
        ref_acc = _fit_reference(ref, Xtr, ytr).score(Xte, yte)
        epochs, acc = _epochs_to_reach(ref_acc - TOLERANCE, Xtr, ytr, Xte, yte, settings)
        _cache[key] = ref_acc, epochs, acc
    ref_acc, epochs, acc = _cache[key]
    benchmark.group = f"sklearn-time-to-accuracy-{problem}-{ref}"
    benchmark.extra_info.update(reference_accuracy=ref_acc, fastreg_accuracy=acc, fastreg_epochs=epochs)
    rounds = 1 if LARGE and problem != "digits" else 3
    if who == "sklearn":
        est = benchmark.pedantic(_fit_reference, args=(ref, Xtr, ytr), rounds=rounds, iterations=1)
        assert est.score(Xte, yte) == pytest.approx(ref_acc, abs=0.02)  # saga/SGD differ a little by run
    else:

        def fit():
            return fastreg.SoftmaxRegression(random_state=0, epochs=epochs, **settings).fit(Xtr, ytr)

        est = benchmark.pedantic(fit, rounds=max(rounds, 5), iterations=1)
        assert est.score(Xte, yte) == acc >= ref_acc - TOLERANCE

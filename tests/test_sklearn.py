"""fastreg's estimators as scikit-learn estimators: scikit-learn's own estimator checks,
and the tools a scikit-learn user reaches for (clone, Pipeline, grid and random search,
cross-validation, set_output, metadata routing, the HTML repr, DataFrames)."""

import pickle
import subprocess
import sys

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn.base import clone, is_classifier, is_regressor  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import (  # noqa: E402
    GridSearchCV,
    RandomizedSearchCV,
    cross_val_score,
    cross_validate,
)
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import fastreg  # noqa: E402
from fastreg import models  # noqa: E402


def _dtype_by_value() -> bool:
    """Whether the bindings compare dtypes by value (issue 21 item 1): an unpickled
    float32 array's dtype is equal to, but not the same object as, NumPy's."""
    a = pickle.loads(pickle.dumps(np.ones((2, 3), np.float32)))
    try:
        fastreg.ops.softmax(a)
    except TypeError:
        return False
    return True


DTYPE_BY_VALUE = _dtype_by_value()
needs_dtype_by_value = pytest.mark.xfail(
    not DTYPE_BY_VALUE, strict=True, raises=TypeError,
    reason="the bindings compare dtypes by identity until issue 21 item 1 is merged; unpickled arrays are refused",
)


def _reads_unpickled_or_memmapped(check) -> bool:
    """The checks that hand the estimator arrays whose dtype is not NumPy's own object."""
    keywords, f = {}, check
    while hasattr(f, "func"):
        keywords.update(f.keywords)
        f = f.func
    name = getattr(f, "__name__", "")
    return bool(keywords.get("readonly_memmap")) or name in ("check_estimators_pickle", "check_readonly_memmap_input")


@parametrize_with_checks(
    [fastreg.SoftmaxRegression(random_state=0), fastreg.LinearRegression(random_state=0)],
    expected_failed_checks=models._expected_failed_checks,
)
def test_sklearn_estimator_checks(estimator, check):
    if not DTYPE_BY_VALUE and _reads_unpickled_or_memmapped(check):
        # Runs (and must pass) once issue 21 item 1 is merged.
        pytest.xfail("the bindings compare dtypes by identity (issue 21 item 1): unpickled/memmapped arrays refused")
    check(estimator)

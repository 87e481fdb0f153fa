"""fastreg's estimators as scikit-learn estimators: scikit-learn's own estimator checks,
and the tools a scikit-learn user reaches for (clone, Pipeline, grid and random search,
cross-validation, set_output, metadata routing, the HTML repr, DataFrames)."""

import pickle
import subprocess
import sys

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn.base import clone, is_classifier, is_regressor
from sklearn.model_selection import (
    GridSearchCV,
    RandomizedSearchCV,
    cross_val_score,
    cross_validate,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import fastreg
from fastreg import models


@parametrize_with_checks(
    [fastreg.SoftmaxRegression(random_state=0), fastreg.LinearRegression(random_state=0)],
    expected_failed_checks=models._expected_failed_checks,
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# --- the tools, with both estimators ---------------------------------------------


@pytest.fixture
def clf_data(rng):
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return X.astype(np.float32), y


@pytest.fixture
def reg_data(rng):
    X = rng.standard_normal((300, 5))
    y = X @ rng.standard_normal(5) + 1.5 + 0.01 * rng.standard_normal(300)
    return X, y


def _est(kind):
    if kind == "clf":
        return fastreg.SoftmaxRegression(epochs=10, batch_size=32, random_state=0)
    return fastreg.LinearRegression(epochs=20, batch_size=16, random_state=0)


@pytest.fixture(params=["clf", "reg"])
def case(request, clf_data, reg_data):
    X, y = clf_data if request.param == "clf" else reg_data
    return request.param, X, y


def test_is_a_scikit_learn_estimator():
    assert is_classifier(fastreg.SoftmaxRegression()) and not is_regressor(fastreg.SoftmaxRegression())
    assert is_regressor(fastreg.LinearRegression()) and not is_classifier(fastreg.LinearRegression())
    assert isinstance(fastreg.SoftmaxRegression(), sklearn.base.BaseEstimator)
    c = clone(fastreg.SoftmaxRegression(lr=0.5, warm_start=True))
    assert c.lr == 0.5 and c.warm_start is True


def test_pipeline_with_scaler_and_cross_val_score(case):
    kind, X, y = case
    pipe = make_pipeline(StandardScaler(), _est(kind))
    scores = cross_val_score(pipe, X, y, cv=3, error_score="raise")
    assert scores.shape == (3,) and np.isfinite(scores).all()
    assert scores.min() > (0.85 if kind == "clf" else 0.95)
    res = cross_validate(pipe, X, y, cv=3, return_train_score=True, error_score="raise")
    assert np.isfinite(res["test_score"]).all() and np.isfinite(res["train_score"]).all()
    np.testing.assert_array_equal(res["test_score"], scores)  # the same seeds give the same models


def test_grid_and_randomized_search(case):
    kind, X, y = case
    pipe = make_pipeline(StandardScaler(), _est(kind))
    name = pipe.steps[-1][0]
    grid = GridSearchCV(pipe, {f"{name}__lr": [1e-4, 0.05]}, cv=3, error_score="raise").fit(X, y)
    assert grid.best_params_[f"{name}__lr"] == 0.05  # 1e-4 barely moves from the start in these epochs
    assert np.isfinite(grid.cv_results_["mean_test_score"]).all()
    rand = RandomizedSearchCV(
        pipe, {f"{name}__batch_size": [16, 32, 64]}, n_iter=2, cv=3, random_state=0, error_score="raise"
    ).fit(X, y)
    assert np.isfinite(rand.best_score_)


def test_pipeline_set_output_pandas_and_html_repr(case):
    pytest.importorskip("pandas")
    kind, X, y = case
    pipe = make_pipeline(StandardScaler(), _est(kind)).set_output(transform="pandas")
    pipe.fit(X, y)
    est = pipe[-1]
    assert list(est.feature_names_in_) == [f"x{i}" for i in range(X.shape[1])]  # the scaler's DataFrame
    html = est._repr_html_()
    assert type(est).__name__ in html and "random_state" in html


def test_html_repr_without_pandas(case):
    kind = case[0]
    html = make_pipeline(StandardScaler(), _est(kind))._repr_html_()
    assert type(_est(kind)).__name__ in html


def test_metadata_routing_sample_weight(clf_data):
    X, y = clf_data
    sw = np.where(y == 3, 5.0, 1.0)
    with sklearn.config_context(enable_metadata_routing=True):
        est = fastreg.SoftmaxRegression(epochs=5, batch_size=32, random_state=0).set_fit_request(sample_weight=True)
        routing = est.get_metadata_routing()
        assert routing.fit.requests["sample_weight"] is True
        est.set_score_request(sample_weight=False)
        grid = GridSearchCV(est, {"lr": [0.05]}, cv=3, error_score="raise").fit(X, y, sample_weight=sw)
        direct = fastreg.SoftmaxRegression(epochs=5, batch_size=32, random_state=0, lr=0.05).fit(X, y, sample_weight=sw)
        np.testing.assert_array_equal(grid.best_estimator_.coef_, direct.coef_)


def test_dataframe_round_trip_and_column_mismatch_warning(case):
    pd = pytest.importorskip("pandas")
    kind, X, y = case
    cols = [f"f{i}" for i in range(X.shape[1])]
    df = pd.DataFrame(X, columns=cols)
    est = _est(kind).fit(df, y)
    np.testing.assert_array_equal(est.feature_names_in_, np.array(cols, dtype=object))
    np.testing.assert_array_equal(est.predict(df), _est(kind).fit(X, y).predict(X))
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        est.predict(X)
    with pytest.raises(ValueError, match="feature names should match"):
        est.predict(df[cols[::-1]])
    bare = _est(kind).fit(X, y)
    with pytest.warns(UserWarning, match="fitted without feature names"):
        bare.predict(df)
    assert not hasattr(bare, "feature_names_in_")


def test_not_fitted_error_is_scikit_learns():
    from sklearn.exceptions import NotFittedError

    for est in (fastreg.SoftmaxRegression(), fastreg.LinearRegression()):
        with pytest.raises(NotFittedError, match="not fitted"):
            est.predict(np.ones((2, 3)))
        assert not hasattr(est, "coef_")
    with pytest.raises(NotFittedError):
        fastreg.SoftmaxRegression().predict_proba(np.ones((2, 3)))


def test_pickled_estimators_predict_the_same(case):
    kind, X, y = case
    est = _est(kind).fit(X, y)
    back = pickle.loads(pickle.dumps(est))
    assert type(back) is type(est)
    np.testing.assert_array_equal(back.predict(X), est.predict(X))
    back.partial_fit(X, y)  # the unpickled parameters train on


def test_pickled_arrays_fit_and_predict(case):
    kind, X, y = case
    Xp, yp = pickle.loads(pickle.dumps((X, y)))
    est = _est(kind).fit(Xp, yp)
    np.testing.assert_array_equal(est.predict(Xp), _est(kind).fit(X, y).predict(X))


# --- scikit-learn stays optional and is not imported by `import fastreg` -----------


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout


def test_import_fastreg_does_not_import_sklearn():
    out = _run(
        "import sys, fastreg; print('sklearn' in sys.modules); fastreg.SoftmaxRegression; "
        "print('sklearn' in sys.modules)"
    )
    assert out.split() == ["False", "True"]


def test_without_scikit_learn_the_same_api_works():
    code = """
import sys
sys.modules['sklearn'] = None  # as if scikit-learn were not installed
import numpy as np, fastreg, pickle
rng = np.random.default_rng(0)
X = rng.standard_normal((200, 4)); y = (X[:, 0] > 0).astype(int)
m = fastreg.SoftmaxRegression(epochs=20, random_state=0, warm_start=False)
try:
    m.predict(X)
except fastreg.models.NotFittedError as e:
    assert isinstance(e, ValueError) and isinstance(e, AttributeError)
m.fit(X, y, sample_weight=np.ones(200))
assert m.score(X, y) > 0.9 and m.predict_log_proba(X).shape == (200, 2) and m.decision_function(X).shape == (200,)
assert m.get_params()['epochs'] == 20 and m.set_params(lr=0.2).lr == 0.2 and repr(m).startswith('SoftmaxRegression(')
r = fastreg.LinearRegression(epochs=10, random_state=0).fit(X, X @ [1.0, 2.0, 0.0, -1.0])
assert r.score(X, X @ [1.0, 2.0, 0.0, -1.0]) > 0.99
assert type(m).__mro__[1].__module__ == 'fastreg.models' and 'sklearn' not in str(type(m).__mro__)
print('ok')
"""
    assert _run(code).strip() == "ok"

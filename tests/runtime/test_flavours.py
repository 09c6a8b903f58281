"""Each model flavour survives `package` -> `load_predictor` and scores as the model it came from.

Every round trip checks two loaded predictors: the one on the runtime packaging chose (often the
ONNX fast path) and the one from the flavour's own files, which serving falls back to.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import lightgbm as lgb
import numpy as np
import onnxruntime
import pandas as pd
import pytest
import sklearn
import xgboost as xgb
from skl2onnx import to_onnx
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingRegressor, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

# The ONNX fast path is kept only when it agrees with the native model this closely.
ONNX_ATOL = 1e-5
# A model reloaded from its own files by its own library reproduces it up to float rounding.
NATIVE_ATOL = 1e-9

NUMERIC = ["amount", "hour", "distance", "velocity"]

Serve = Callable[[Any, pd.DataFrame], Any]


def _lightgbm_classifier() -> lgb.LGBMClassifier:
    return lgb.LGBMClassifier(n_estimators=20, num_leaves=8, n_jobs=1, verbose=-1, random_state=0)


def _xgboost_classifier() -> xgb.XGBClassifier:
    return xgb.XGBClassifier(n_estimators=20, max_depth=3, n_jobs=1, random_state=0)


def _fraud_pipeline() -> Pipeline:
    features = ColumnTransformer(
        [
            ("num", StandardScaler(), [*NUMERIC, "items"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["merchant"]),
        ]
    )
    return Pipeline([("features", features), ("clf", LogisticRegression())])


def test_logistic_regression_on_a_numeric_matrix_serves_the_same_probabilities_after_reload(
    serve: Serve, features: np.ndarray, frame: pd.DataFrame, binary_labels: np.ndarray
) -> None:
    model = LogisticRegression().fit(features, binary_labels)

    served = serve(model, frame)

    expected = model.predict_proba(features)
    assert served.packaged.runtime == "onnxruntime"
    assert served.info.flavour == "sklearn"
    assert served.info.task == "binary"
    assert served.info.classes == [0, 1]
    np.testing.assert_allclose(served.predictor.predict(served.columns), expected, atol=ONNX_ATOL)
    np.testing.assert_allclose(served.native.predict(served.columns), expected, atol=NATIVE_ATOL)


def test_pipeline_over_string_and_numeric_columns_serves_the_same_probabilities_after_reload(
    serve: Serve, mixed_frame: pd.DataFrame, binary_labels: np.ndarray
) -> None:
    model = _fraud_pipeline().fit(mixed_frame, binary_labels)

    served = serve(model, mixed_frame)

    expected = model.predict_proba(mixed_frame)
    assert served.packaged.runtime == "onnxruntime"
    # the graph takes one input per column, strings included
    assert served.info.extra["onnx_plan"]["mode"] == "columns"
    np.testing.assert_allclose(served.predictor.predict(served.columns), expected, atol=ONNX_ATOL)
    np.testing.assert_allclose(served.native.predict(served.columns), expected, atol=NATIVE_ATOL)


def test_regressor_serves_the_same_values_after_reload(
    serve: Serve, frame: pd.DataFrame, target: np.ndarray
) -> None:
    model = GradientBoostingRegressor(n_estimators=20, max_depth=3, random_state=0)
    model.fit(frame, target)

    served = serve(model, frame)

    expected = model.predict(frame)
    assert served.info.task == "regression"
    assert served.info.classes is None
    assert served.packaged.runtime == "onnxruntime"
    served_values = served.predictor.predict(served.columns)
    assert served_values.shape == (len(frame),)
    np.testing.assert_allclose(served_values, expected, atol=ONNX_ATOL)
    np.testing.assert_allclose(served.native.predict(served.columns), expected, atol=NATIVE_ATOL)


@pytest.mark.parametrize(
    ("make_model", "names"),
    [
        pytest.param(
            lambda: RandomForestClassifier(n_estimators=10, max_depth=4, random_state=0, n_jobs=1),
            ["low", "mid", "high"],
            id="sklearn-forest-with-string-labels",
        ),
        pytest.param(
            _lightgbm_classifier, ["low", "mid", "high"], id="lightgbm-with-string-labels"
        ),
        pytest.param(_xgboost_classifier, None, id="xgboost"),
    ],
)
def test_multiclass_classifier_serves_one_probability_per_class_in_the_models_class_order(
    serve: Serve,
    frame: pd.DataFrame,
    class_labels: np.ndarray,
    make_model: Callable[[], Any],
    names: list[str] | None,
) -> None:
    labels = np.array(names, dtype=object)[class_labels] if names else class_labels
    model = make_model().fit(frame, labels)

    served = serve(model, frame)

    expected = model.predict_proba(frame)
    assert served.info.task == "multiclass"
    assert served.info.classes == list(model.classes_)
    assert served.packaged.runtime == "onnxruntime"
    probabilities = served.predictor.predict(served.columns)
    assert probabilities.shape == (len(frame), 3)
    np.testing.assert_allclose(probabilities, expected, atol=ONNX_ATOL)
    np.testing.assert_allclose(served.native.predict(served.columns), expected, atol=NATIVE_ATOL)


def test_lightgbm_classifier_serves_the_same_probabilities_after_reload(
    serve: Serve, frame: pd.DataFrame, binary_labels: np.ndarray
) -> None:
    model = _lightgbm_classifier().fit(frame, binary_labels)

    served = serve(model, frame)

    expected = model.predict_proba(frame)
    assert served.info.flavour == "lightgbm"
    assert served.info.task == "binary"
    assert served.packaged.runtime == "onnxruntime"
    np.testing.assert_allclose(served.predictor.predict(served.columns), expected, atol=ONNX_ATOL)
    np.testing.assert_allclose(served.native.predict(served.columns), expected, atol=NATIVE_ATOL)
    assert served.native.runtime == "lightgbm"


def test_lightgbm_booster_serves_the_same_probabilities_after_reload(
    serve: Serve, features: np.ndarray, frame: pd.DataFrame, binary_labels: np.ndarray
) -> None:
    params = {"objective": "binary", "num_leaves": 8, "num_threads": 1, "verbose": -1, "seed": 0}
    booster = lgb.train(params, lgb.Dataset(features, binary_labels), num_boost_round=20)

    served = serve(booster, frame)

    positive = booster.predict(features)
    expected = np.column_stack([1 - positive, positive])
    assert served.info.flavour == "lightgbm"
    assert served.info.task == "binary"
    assert served.info.classes == [0, 1]
    np.testing.assert_allclose(served.predictor.predict(served.columns), expected, atol=ONNX_ATOL)
    np.testing.assert_allclose(served.native.predict(served.columns), expected, atol=NATIVE_ATOL)


def test_xgboost_classifier_serves_the_same_probabilities_after_reload(
    serve: Serve, frame: pd.DataFrame, binary_labels: np.ndarray
) -> None:
    model = _xgboost_classifier().fit(frame, binary_labels)

    served = serve(model, frame)

    expected = model.predict_proba(frame)
    assert served.info.flavour == "xgboost"
    assert served.info.task == "binary"
    assert served.packaged.runtime == "onnxruntime"
    np.testing.assert_allclose(served.predictor.predict(served.columns), expected, atol=ONNX_ATOL)
    np.testing.assert_allclose(served.native.predict(served.columns), expected, atol=NATIVE_ATOL)
    assert served.native.runtime == "xgboost"


def test_xgboost_booster_with_binary_logistic_serves_the_same_probabilities_after_reload(
    serve: Serve, features: np.ndarray, frame: pd.DataFrame, binary_labels: np.ndarray
) -> None:
    params = {"objective": "binary:logistic", "max_depth": 3, "nthread": 1, "seed": 0}
    booster = xgb.train(params, xgb.DMatrix(features, label=binary_labels), num_boost_round=20)

    served = serve(booster, frame)

    positive = booster.predict(xgb.DMatrix(features))
    expected = np.column_stack([1 - positive, positive])
    assert served.info.flavour == "xgboost"
    assert served.info.task == "binary"
    assert served.info.classes == [0, 1]
    np.testing.assert_allclose(served.predictor.predict(served.columns), expected, atol=ONNX_ATOL)
    np.testing.assert_allclose(served.native.predict(served.columns), expected, atol=NATIVE_ATOL)


def test_onnx_model_serves_the_probabilities_of_the_model_it_was_exported_from(
    serve: Serve, features: np.ndarray, frame: pd.DataFrame, binary_labels: np.ndarray
) -> None:
    X32 = features.astype(np.float32)
    labels = np.array(["legit", "fraud"], dtype=object)[binary_labels]
    model = LogisticRegression().fit(X32, labels)
    graph = to_onnx(model, X32[:1])  # skl2onnx's default: a ZipMap of {label: probability}

    served = serve(graph, frame)

    assert served.info.flavour == "onnx"
    assert served.packaged.runtime == "onnxruntime"
    assert served.info.task == "binary"
    assert served.info.classes == list(model.classes_)
    expected = model.predict_proba(X32)
    np.testing.assert_allclose(served.predictor.predict(served.columns), expected, atol=ONNX_ATOL)


def _reversed(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return dict(reversed(list(columns.items())))


@pytest.mark.parametrize(
    "make_model",
    [
        pytest.param(LogisticRegression, id="sklearn"),
        pytest.param(_lightgbm_classifier, id="lightgbm"),
        pytest.param(_xgboost_classifier, id="xgboost"),
    ],
)
def test_predictors_read_columns_by_name_whatever_order_the_request_lists_them_in(
    serve: Serve, frame: pd.DataFrame, binary_labels: np.ndarray, make_model: Callable[[], Any]
) -> None:
    model = make_model().fit(frame, binary_labels)
    served = serve(model, frame)
    shuffled = _reversed(served.columns)
    assert list(shuffled) != list(served.columns)

    expected = model.predict_proba(frame)
    np.testing.assert_allclose(served.predictor.predict(shuffled), expected, atol=ONNX_ATOL)
    np.testing.assert_allclose(served.native.predict(shuffled), expected, atol=NATIVE_ATOL)


def test_pipeline_reads_string_and_numeric_columns_by_name_in_any_request_order(
    serve: Serve, mixed_frame: pd.DataFrame, binary_labels: np.ndarray
) -> None:
    model = _fraud_pipeline().fit(mixed_frame, binary_labels)
    served = serve(model, mixed_frame)

    shuffled = _reversed(served.columns)

    expected = model.predict_proba(mixed_frame)
    np.testing.assert_allclose(served.predictor.predict(shuffled), expected, atol=ONNX_ATOL)
    np.testing.assert_allclose(served.native.predict(shuffled), expected, atol=NATIVE_ATOL)


@pytest.mark.parametrize(
    "make_model",
    [
        pytest.param(LogisticRegression, id="sklearn"),
        pytest.param(_lightgbm_classifier, id="lightgbm"),
        pytest.param(_xgboost_classifier, id="xgboost"),
    ],
)
def test_model_fitted_on_named_columns_is_fed_in_its_own_order_when_the_sample_differs(
    serve: Serve, frame: pd.DataFrame, binary_labels: np.ndarray, make_model: Callable[[], Any]
) -> None:
    model = make_model().fit(frame, binary_labels)
    sample = frame[list(reversed(NUMERIC))]

    served = serve(model, sample)

    assert served.info.input_order == NUMERIC
    expected = model.predict_proba(frame)
    np.testing.assert_allclose(served.predictor.predict(served.columns), expected, atol=ONNX_ATOL)
    np.testing.assert_allclose(served.native.predict(served.columns), expected, atol=NATIVE_ATOL)


@pytest.mark.parametrize(
    ("make_model", "pins"),
    [
        pytest.param(
            LogisticRegression,
            {"scikit-learn": sklearn.__version__, "onnxruntime": onnxruntime.__version__},
            id="sklearn",
        ),
        pytest.param(_lightgbm_classifier, {"lightgbm": lgb.__version__}, id="lightgbm"),
        pytest.param(_xgboost_classifier, {"xgboost": xgb.__version__}, id="xgboost"),
    ],
)
def test_requirements_pin_the_installed_version_of_each_library_the_model_needs(
    serve: Serve,
    frame: pd.DataFrame,
    binary_labels: np.ndarray,
    make_model: Callable[[], Any],
    pins: dict[str, str],
) -> None:
    served = serve(make_model().fit(frame, binary_labels), frame)

    requirements = served.packaged.requirements
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+==\S+", line) for line in requirements), requirements
    for name, version in {**pins, "numpy": np.__version__}.items():
        assert f"{name}=={version}" in requirements

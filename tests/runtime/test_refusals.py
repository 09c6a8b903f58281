"""Models shipyard cannot serve are refused at packaging, with a message that says what to do."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from shipyard.core import Signature
from shipyard.core.errors import InvalidInput, UnsupportedModel
from shipyard.runtime import detect_flavour, package


def _package(model: Any, sample: pd.DataFrame, folder: Path) -> None:
    signature = Signature.infer(sample)
    package(model, signature, signature.validate_frame(sample), folder)


@pytest.mark.parametrize(
    "model",
    [
        pytest.param(object(), id="object"),
        pytest.param({"coef": [1.0, 2.0]}, id="dict"),
        pytest.param(np.zeros((2, 2)), id="numpy-array"),
    ],
)
def test_detect_flavour_refuses_an_unsupported_object_naming_what_is_supported(model: Any) -> None:
    with pytest.raises(UnsupportedModel) as refused:
        detect_flavour(model)

    message = str(refused.value)
    assert type(model).__name__ in message
    for supported in ("scikit-learn", "LightGBM", "XGBoost", "ONNX", "MLflow"):
        assert supported in message
    assert isinstance(refused.value, InvalidInput)


def test_detect_flavour_tells_tree_libraries_sklearn_api_from_scikit_learn(
    frame: pd.DataFrame, binary_labels: np.ndarray, features: np.ndarray
) -> None:
    # LGBMClassifier and XGBClassifier are scikit-learn estimators too; their own flavour wins
    assert detect_flavour(LogisticRegression()).name == "sklearn"
    assert detect_flavour(lgb.LGBMClassifier()).name == "lightgbm"
    assert detect_flavour(xgb.XGBClassifier()).name == "xgboost"
    graph = to_onnx(LogisticRegression().fit(features, binary_labels), features[:1])
    assert detect_flavour(graph).name == "onnx"


@pytest.mark.parametrize(
    "model",
    [
        pytest.param(LogisticRegression(), id="sklearn-estimator"),
        pytest.param(make_pipeline(StandardScaler(), LogisticRegression()), id="sklearn-pipeline"),
        pytest.param(lgb.LGBMClassifier(n_jobs=1), id="lightgbm"),
        pytest.param(xgb.XGBClassifier(n_jobs=1), id="xgboost"),
    ],
)
def test_unfitted_model_is_refused_with_a_message_to_call_fit(
    model: Any, frame: pd.DataFrame, tmp_path: Path
) -> None:
    with pytest.raises(UnsupportedModel, match=r"not fitted; call fit\(\)"):
        _package(model, frame, tmp_path / "model")


def test_classifier_without_predict_proba_is_refused_with_advice(
    frame: pd.DataFrame, binary_labels: np.ndarray, tmp_path: Path
) -> None:
    model = LinearSVC().fit(frame, binary_labels)

    with pytest.raises(UnsupportedModel, match="LinearSVC has no predict_proba") as refused:
        _package(model, frame, tmp_path / "model")
    assert "CalibratedClassifierCV" in str(refused.value)


def _softmax_classifier(frame: pd.DataFrame, labels: np.ndarray) -> Any:
    model = xgb.XGBClassifier(objective="multi:softmax", n_estimators=5, max_depth=2, n_jobs=1)
    return model.fit(frame, labels)


def _softmax_booster(frame: pd.DataFrame, labels: np.ndarray) -> Any:
    params = {"objective": "multi:softmax", "num_class": 3, "max_depth": 2, "nthread": 1}
    return xgb.train(params, xgb.DMatrix(frame, label=labels), num_boost_round=5)


@pytest.mark.parametrize(
    "train",
    [
        pytest.param(_softmax_classifier, id="XGBClassifier"),
        pytest.param(_softmax_booster, id="Booster"),
    ],
)
def test_xgboost_multi_softmax_is_refused_because_it_gives_labels_not_probabilities(
    train: Callable[[pd.DataFrame, np.ndarray], Any],
    frame: pd.DataFrame,
    class_labels: np.ndarray,
    tmp_path: Path,
) -> None:
    model = train(frame, class_labels)

    with pytest.raises(UnsupportedModel, match="'multi:softmax' gives no probabilities") as refused:
        _package(model, frame, tmp_path / "model")
    assert "multi:softprob" in str(refused.value)


def test_model_that_fails_on_its_sample_is_refused_naming_the_error(
    features: np.ndarray, frame: pd.DataFrame, binary_labels: np.ndarray, tmp_path: Path
) -> None:
    model = LogisticRegression().fit(features, binary_labels)  # four unnamed features

    with pytest.raises(UnsupportedModel, match="fails on the sample") as refused:
        _package(model, frame[["amount", "hour"]], tmp_path / "model")
    assert "features" in str(refused.value)


def test_lightgbm_model_is_refused_a_sample_with_a_different_number_of_features(
    features: np.ndarray, frame: pd.DataFrame, binary_labels: np.ndarray, tmp_path: Path
) -> None:
    model = lgb.LGBMClassifier(n_estimators=5, n_jobs=1, verbose=-1)
    model.fit(features, binary_labels)  # generic feature names Column_0..Column_3

    with pytest.raises(UnsupportedModel, match="takes 4 features but the sample has 2 columns"):
        _package(model, frame[["amount", "hour"]], tmp_path / "model")

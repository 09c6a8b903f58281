"""A sample is needed only when nothing describes a model's inputs: an MLflow model's signature
(and input example), an ONNX graph's typed inputs, a LightGBM or XGBoost model's features do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightgbm
import mlflow.pyfunc
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
import xgboost
from mlflow.models import infer_signature
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression

from shipyard.core import Settings
from shipyard.core import errors as e
from shipyard.registry import Registry

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture
def registry(sqlite_settings: Settings) -> Any:
    with Registry.from_settings(sqlite_settings) as reg:
        yield reg


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(5)
    frame = pd.DataFrame(rng.normal(size=(400, 4)), columns=["amount", "hour", "age", "score"])
    labels = (frame["amount"] - frame["hour"] + rng.normal(scale=0.5, size=400) > 0).astype(int)
    return frame, labels.to_numpy()


def _columns(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    return {c: frame[c].to_numpy() for c in frame.columns}


def test_an_mlflow_3_skops_model_registers_without_a_sample_and_scores_identically(
    registry: Registry, tmp_path: Path, data: tuple[pd.DataFrame, np.ndarray]
) -> None:
    frame, labels = data
    model = LogisticRegression().fit(frame, labels)
    source = tmp_path / "bc"
    mlflow.sklearn.save_model(  # what MLflow 3 does by default: skops, signature, an example
        model,
        str(source),
        signature=infer_signature(frame, model.predict_proba(frame)),
        input_example=frame.head(3),
        pip_requirements=[],
    )
    assert (source / "model.skops").is_file()

    version = registry.register(str(source), name="bc")

    assert version.signature.names == list(frame.columns)
    assert version.task == "binary"
    assert version.data_fingerprint is None  # no training data was seen
    assert registry.read_artifact("bc", 1, "reference/sample.parquet") is None  # no reference
    bundle = registry.open("bc", 1)
    np.testing.assert_allclose(
        bundle.predictor.predict(_columns(frame)), model.predict_proba(frame), atol=1e-5
    )


def test_onnx_lightgbm_and_xgboost_models_register_without_a_sample(
    registry: Registry, data: tuple[pd.DataFrame, np.ndarray]
) -> None:
    frame, labels = data
    graph = to_onnx(
        LogisticRegression().fit(frame.to_numpy(np.float32), labels),
        frame.to_numpy(np.float32)[:1],
        options={"zipmap": False},
    )
    booster = lightgbm.LGBMClassifier(n_estimators=20, verbose=-1).fit(frame, labels)
    xgb = xgboost.XGBClassifier(n_estimators=20).fit(frame, labels)

    onnx_version = registry.register(graph, name="onnx-model")
    lgbm_version = registry.register(booster, name="lgbm-model")
    xgb_version = registry.register(xgb, name="xgb-model")

    assert onnx_version.signature.names == [f"X_{i}" for i in range(4)]
    assert lgbm_version.signature.names == list(frame.columns)
    assert xgb_version.signature.names == list(frame.columns)
    renamed = frame.set_axis([f"X_{i}" for i in range(4)], axis=1).astype(np.float32)
    for name, rows, expected in (
        ("onnx-model", renamed, None),
        ("lgbm-model", frame, booster.predict_proba(frame)),
        ("xgb-model", frame, xgb.predict_proba(frame)),
    ):
        scores = registry.open(name, 1).predictor.predict(_columns(rows))
        assert scores.shape == (len(frame), 2)
        if expected is not None:
            np.testing.assert_allclose(scores, expected, atol=1e-5)


def test_a_scikit_learn_model_still_needs_a_sample_and_the_message_says_why(
    registry: Registry, data: tuple[pd.DataFrame, np.ndarray]
) -> None:
    frame, labels = data
    with pytest.raises(e.InvalidInput, match="does not say which inputs it takes") as refused:
        registry.register(LogisticRegression().fit(frame, labels), name="bc")
    assert "MLflow models with a signature, ONNX graphs and LightGBM/XGBoost" in str(refused.value)
    assert registry.list_models() == []


class _Margin(mlflow.pyfunc.PythonModel):
    """Custom code: a hand-written score, served through its own predict."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> np.ndarray:
        return (2 * model_input["amount"] - model_input["hour"]).to_numpy()


def test_an_mlflow_pyfunc_model_with_custom_code_registers_and_serves_its_own_predict(
    registry: Registry, tmp_path: Path, data: tuple[pd.DataFrame, np.ndarray]
) -> None:
    frame, _ = data
    source = tmp_path / "margin"
    mlflow.pyfunc.save_model(
        str(source),
        python_model=_Margin(),
        signature=infer_signature(frame, np.zeros(len(frame))),
        input_example=frame.head(3),
        pip_requirements=[],
    )
    version = registry.register(str(source), name="margin")
    assert version.runtime == "mlflow"
    assert version.task == "regression"
    values = registry.open("margin", 1).predictor.predict(_columns(frame))
    np.testing.assert_allclose(values, 2 * frame["amount"] - frame["hour"], atol=1e-12)

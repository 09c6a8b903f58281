"""`load_model_file` reads a model from disk, by its format, as the object `package` takes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import lightgbm as lgb
import mlflow.sklearn
import numpy as np
import onnx
import pandas as pd
import pytest
import xgboost as xgb
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression

from shipyard.core.errors import UnsupportedModel
from shipyard.runtime import load_model_file

ONNX_ATOL = 1e-5
NATIVE_ATOL = 1e-9

Serve = Callable[[Any, pd.DataFrame], Any]


def test_joblib_file_is_read_as_the_estimator_it_holds(
    serve: Serve, tmp_path: Path, frame: pd.DataFrame, binary_labels: np.ndarray
) -> None:
    model = LogisticRegression().fit(frame, binary_labels)
    joblib.dump(model, tmp_path / "model.joblib")

    loaded = load_model_file(tmp_path / "model.joblib")

    assert isinstance(loaded, LogisticRegression)
    served = serve(loaded, frame)
    assert served.info.flavour == "sklearn"
    np.testing.assert_allclose(
        served.native.predict(served.columns), model.predict_proba(frame), atol=NATIVE_ATOL
    )


def test_onnx_file_is_read_as_an_onnx_model(
    serve: Serve,
    tmp_path: Path,
    features: np.ndarray,
    frame: pd.DataFrame,
    binary_labels: np.ndarray,
) -> None:
    X32 = features.astype(np.float32)
    model = LogisticRegression().fit(X32, binary_labels)
    onnx.save(to_onnx(model, X32[:1], options={"zipmap": False}), tmp_path / "model.onnx")

    loaded = load_model_file(tmp_path / "model.onnx")

    assert isinstance(loaded, onnx.ModelProto)
    served = serve(loaded, frame)
    assert served.info.flavour == "onnx"
    np.testing.assert_allclose(
        served.predictor.predict(served.columns), model.predict_proba(X32), atol=ONNX_ATOL
    )


def test_lightgbm_text_file_is_read_as_a_booster(
    serve: Serve, tmp_path: Path, frame: pd.DataFrame, binary_labels: np.ndarray
) -> None:
    model = lgb.LGBMClassifier(n_estimators=20, num_leaves=8, n_jobs=1, verbose=-1)
    model.fit(frame, binary_labels)
    model.booster_.save_model(tmp_path / "model.txt")

    loaded = load_model_file(tmp_path / "model.txt")

    assert isinstance(loaded, lgb.Booster)
    served = serve(loaded, frame)
    assert served.info.flavour == "lightgbm"
    assert served.info.task == "binary"
    np.testing.assert_allclose(
        served.native.predict(served.columns), model.predict_proba(frame), atol=NATIVE_ATOL
    )


def test_xgboost_json_file_is_read_as_a_booster(
    serve: Serve, tmp_path: Path, frame: pd.DataFrame, binary_labels: np.ndarray
) -> None:
    model = xgb.XGBClassifier(n_estimators=20, max_depth=3, n_jobs=1)
    model.fit(frame, binary_labels)
    model.get_booster().save_model(tmp_path / "model.json")

    loaded = load_model_file(tmp_path / "model.json")

    assert isinstance(loaded, xgb.Booster)
    served = serve(loaded, frame)
    assert served.info.flavour == "xgboost"
    assert served.info.task == "binary"
    np.testing.assert_allclose(
        served.native.predict(served.columns), model.predict_proba(frame), atol=NATIVE_ATOL
    )


def test_folder_with_an_mlmodel_file_is_read_as_an_mlflow_model(
    serve: Serve, tmp_path: Path, frame: pd.DataFrame, binary_labels: np.ndarray
) -> None:
    model = LogisticRegression().fit(frame, binary_labels)
    folder = tmp_path / "mlflow-model"
    mlflow.sklearn.save_model(
        model, str(folder), serialization_format="cloudpickle", pip_requirements=[]
    )

    loaded = load_model_file(folder)

    assert loaded == folder
    served = serve(loaded, frame)
    assert served.info.flavour == "mlflow"
    np.testing.assert_allclose(
        served.native.predict(served.columns), model.predict_proba(frame), atol=NATIVE_ATOL
    )


def test_unknown_suffix_is_refused_listing_the_formats_that_are_read(tmp_path: Path) -> None:
    path = tmp_path / "model.h5"
    path.write_bytes(b"\x89HDF")

    with pytest.raises(UnsupportedModel, match=r"cannot tell the format of model\.h5") as refused:
        load_model_file(path)
    for known in (".joblib", ".onnx", ".txt (LightGBM)", ".json", "MLflow model folder"):
        assert known in str(refused.value)


def test_missing_path_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "model.joblib"

    with pytest.raises(UnsupportedModel, match="does not exist") as refused:
        load_model_file(path)
    assert str(path) in str(refused.value)


def test_folder_without_an_mlmodel_file_is_refused_with_a_pointer_to_the_model_file(
    tmp_path: Path,
) -> None:
    (tmp_path / "model.joblib").write_bytes(b"")

    with pytest.raises(UnsupportedModel, match="without an MLmodel file"):
        load_model_file(tmp_path)

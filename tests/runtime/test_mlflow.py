"""MLflow model directories: the sklearn flavour loads natively (with the ONNX fast path), any
other flavour is served through `mlflow.pyfunc`.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import cloudpickle
import mlflow.pyfunc
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
import sklearn
import yaml
from mlflow.models import infer_signature
from sklearn.linear_model import LogisticRegression

from shipyard.core import ColumnSpec, Signature
from shipyard.core.errors import UnsupportedModel
from shipyard.runtime import detect_flavour, mlflow_signature

ONNX_ATOL = 1e-5
NATIVE_ATOL = 1e-9

Serve = Callable[[Any, pd.DataFrame], Any]


class FraudScore(mlflow.pyfunc.PythonModel):
    """A hand-written scorer: two columns of class probabilities from `amount` and `hour`."""

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        positive = 1 / (1 + np.exp(-(model_input["amount"] - 2 * model_input["hour"]).to_numpy()))
        return np.column_stack([1 - positive, positive])


class AmountForecast(mlflow.pyfunc.PythonModel):
    """A hand-written regressor: one value per row."""

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        return (3 * model_input["amount"] - model_input["velocity"]).to_numpy()


def _save_sklearn(model: Any, path: Path, **kwargs: Any) -> Path:
    # mlflow 3 defaults to skops, which is not installed; pip_requirements=[] skips the slow
    # inference of the environment, which these tests do not read
    mlflow.sklearn.save_model(
        model, str(path), serialization_format="cloudpickle", pip_requirements=[], **kwargs
    )
    return path


def _save_pyfunc(model: mlflow.pyfunc.PythonModel, path: Path) -> Path:
    mlflow.pyfunc.save_model(str(path), python_model=model, pip_requirements=[])
    return path


def test_mlflow_sklearn_model_directory_serves_the_same_probabilities_after_reload(
    serve: Serve, tmp_path: Path, frame: pd.DataFrame, binary_labels: np.ndarray
) -> None:
    model = LogisticRegression().fit(frame, binary_labels)
    source = _save_sklearn(model, tmp_path / "mlflow-model")

    served = serve(source, frame)

    expected = model.predict_proba(frame)
    assert served.info.flavour == "mlflow"
    assert served.info.extra["loader"] == "sklearn"
    assert served.info.task == "binary"
    assert served.packaged.runtime == "onnxruntime"
    np.testing.assert_allclose(served.predictor.predict(served.columns), expected, atol=ONNX_ATOL)
    assert served.native.runtime == "sklearn"
    np.testing.assert_allclose(served.native.predict(served.columns), expected, atol=NATIVE_ATOL)


def test_mlflow_sklearn_model_pins_scikit_learn_which_unpickling_it_needs(
    serve: Serve, tmp_path: Path, frame: pd.DataFrame, binary_labels: np.ndarray
) -> None:
    model = LogisticRegression().fit(frame, binary_labels)

    served = serve(_save_sklearn(model, tmp_path / "mlflow-model"), frame)

    assert f"scikit-learn=={sklearn.__version__}" in served.packaged.requirements


def test_mlflow_pyfunc_classifier_is_served_through_mlflow_with_its_probabilities(
    serve: Serve, tmp_path: Path, frame: pd.DataFrame
) -> None:
    source = _save_pyfunc(FraudScore(), tmp_path / "pyfunc-model")

    served = serve(str(source), frame)

    assert served.info.extra["loader"] == "pyfunc"
    # only the output on the sample tells a pyfunc classifier from a regressor
    assert served.info.task == "binary"
    assert served.info.classes == [0, 1]
    assert served.packaged.runtime == "mlflow"
    assert served.packaged.onnx_report["attempts"] == []
    expected = FraudScore().predict(None, frame)
    probabilities = served.predictor.predict(served.columns)
    assert probabilities.shape == (len(frame), 2)
    np.testing.assert_allclose(probabilities, expected, atol=NATIVE_ATOL)


def test_mlflow_pyfunc_regressor_is_served_through_mlflow_as_one_value_per_row(
    serve: Serve, tmp_path: Path, frame: pd.DataFrame
) -> None:
    source = _save_pyfunc(AmountForecast(), tmp_path / "pyfunc-model")

    served = serve(source, frame)

    assert served.info.task == "regression"
    assert served.info.classes is None
    values = served.predictor.predict(served.columns)
    assert values.shape == (len(frame),)
    np.testing.assert_allclose(values, AmountForecast().predict(None, frame), atol=NATIVE_ATOL)


def test_mlflow_pyfunc_model_pins_mlflow_and_cloudpickle_which_loading_it_needs(
    serve: Serve, tmp_path: Path, frame: pd.DataFrame
) -> None:
    served = serve(_save_pyfunc(FraudScore(), tmp_path / "pyfunc-model"), frame)

    requirements = served.packaged.requirements
    assert f"mlflow-skinny=={metadata.version('mlflow-skinny')}" in requirements
    assert f"cloudpickle=={cloudpickle.__version__}" in requirements


def test_mlflow_signature_reads_the_input_columns_the_model_directory_declares(
    tmp_path: Path, frame: pd.DataFrame, binary_labels: np.ndarray
) -> None:
    model = LogisticRegression().fit(frame, binary_labels)
    source = _save_sklearn(model, tmp_path / "mlflow-model", signature=infer_signature(frame))

    declared = mlflow_signature(source)

    assert declared == Signature(tuple(ColumnSpec(name, "float64") for name in frame.columns))


def test_mlflow_signature_is_none_when_the_directory_declares_none(
    tmp_path: Path, frame: pd.DataFrame, binary_labels: np.ndarray
) -> None:
    model = LogisticRegression().fit(frame, binary_labels)
    source = _save_sklearn(model, tmp_path / "mlflow-model", signature=False)

    assert mlflow_signature(source) is None


def _rewrite_mlmodel(folder: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    edit(mlmodel)
    (folder / "MLmodel").write_text(yaml.safe_dump(mlmodel))


def test_an_mlflow_3_model_saved_as_skops_is_loaded_and_scores_identically(
    serve: Serve, tmp_path: Path, frame: pd.DataFrame, binary_labels: np.ndarray
) -> None:
    model = LogisticRegression().fit(frame, binary_labels)
    source = tmp_path / "skops-model"
    mlflow.sklearn.save_model(model, str(source), serialization_format="skops", pip_requirements=[])
    assert (source / "model.skops").is_file()

    served = serve(source, frame)

    assert served.info.extra["serialization"] == "skops"
    assert served.native.runtime == "sklearn"
    expected = model.predict_proba(frame)
    np.testing.assert_allclose(served.native.predict(served.columns), expected, atol=NATIVE_ATOL)
    np.testing.assert_allclose(served.predictor.predict(served.columns), expected, atol=ONNX_ATOL)
    assert any(r.startswith("skops==") for r in served.packaged.requirements)


class _Untrusted(LogisticRegression):
    """A subclass scikit-learn does not know: skops must not load it unless told to trust it."""


def test_a_skops_file_holding_a_type_nobody_trusted_is_refused_naming_the_type(
    serve: Serve, tmp_path: Path, frame: pd.DataFrame, binary_labels: np.ndarray
) -> None:
    model = _Untrusted().fit(frame, binary_labels)
    untrusted = f"{type(model).__module__}._Untrusted"
    source = tmp_path / "skops-model"
    # MLflow itself insists the saver names such types; whoever wrote the directory did
    mlflow.sklearn.save_model(
        model,
        str(source),
        serialization_format="skops",
        skops_trusted_types=[untrusted],
        pip_requirements=[],
    )
    served = serve(source, frame)
    np.testing.assert_allclose(
        served.native.predict(served.columns), model.predict_proba(frame), atol=NATIVE_ATOL
    )

    # a directory whose MLmodel trusts nothing (edited, or written by another tool)
    def trust_nothing(mlmodel: dict[str, Any]) -> None:
        mlmodel["flavors"]["sklearn"]["skops_trusted_types"] = None

    _rewrite_mlmodel(source, trust_nothing)
    with pytest.raises(UnsupportedModel, match="does not trust") as refused:
        serve(source, frame)
    assert untrusted in str(refused.value)
    assert "skops_trusted_types=" in str(refused.value)


def test_mlflow_model_without_a_python_function_flavour_is_refused_naming_its_flavours(
    serve: Serve, tmp_path: Path, frame: pd.DataFrame, binary_labels: np.ndarray
) -> None:
    source = _save_sklearn(LogisticRegression().fit(frame, binary_labels), tmp_path / "model")

    def only_an_unknown_flavour(mlmodel: dict[str, Any]) -> None:
        mlmodel["flavors"] = {"keras": {"keras_version": "3.0"}}

    _rewrite_mlmodel(source, only_an_unknown_flavour)

    with pytest.raises(UnsupportedModel, match="keras") as refused:
        serve(source, frame)
    assert "python_function" in str(refused.value)


def test_a_folder_or_its_path_string_with_an_mlmodel_file_is_an_mlflow_model(
    tmp_path: Path, frame: pd.DataFrame, binary_labels: np.ndarray
) -> None:
    source = _save_sklearn(LogisticRegression().fit(frame, binary_labels), tmp_path / "model")

    assert detect_flavour(source).name == "mlflow"
    assert detect_flavour(str(source)).name == "mlflow"

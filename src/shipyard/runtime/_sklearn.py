"""scikit-learn estimators and pipelines, saved with joblib, converted with skl2onnx."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from shipyard.core import Columns, Signature
from shipyard.core.errors import UnsupportedModel
from shipyard.runtime._predictor import (
    Flavour,
    ModelInfo,
    Task,
    as_probabilities,
    columns_to_frame,
    columns_to_matrix,
)

__all__ = ["SklearnFlavour", "SklearnPredictor", "describe_estimator", "sklearn_onnx_candidates"]


def native(value: Any) -> Any:
    """A numpy scalar as the plain Python value JSON can carry."""
    return value.item() if hasattr(value, "item") else value


def describe_estimator(
    model: Any, signature: Signature
) -> tuple[Task, list[Any] | None, list[str], str]:
    """Task, classes, feature order and input kind (`frame` or `matrix`) of a fitted estimator."""
    from sklearn.base import is_classifier
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    try:
        check_is_fitted(model)
    except NotFittedError:
        raise UnsupportedModel(
            f"the {type(model).__name__} is not fitted; call fit() before registering it"
        ) from None
    except TypeError:
        pass  # not an estimator check_is_fitted understands; the sample run below decides
    if is_classifier(model) or hasattr(model, "classes_"):
        if not hasattr(model, "predict_proba"):
            raise UnsupportedModel(
                f"the classifier {type(model).__name__} has no predict_proba, so shipyard cannot "
                "score against a threshold; use one with probabilities (e.g. SVC(probability=True) "
                "or wrap it in CalibratedClassifierCV)"
            )
        classes = [native(c) for c in model.classes_]
        task: Task = "binary" if len(classes) == 2 else "multiclass"
    else:
        classes, task = None, "regression"
    names = getattr(model, "feature_names_in_", None)
    if names is not None:
        order = [str(n) for n in names]
        missing = [n for n in order if n not in signature.names]
        if missing:
            raise UnsupportedModel(
                f"the model was fitted on column(s) {', '.join(map(repr, missing))} that the sample "
                "lacks; pass a sample with the columns the model was trained on"
            )
        return task, classes, order, "frame"
    return task, classes, signature.names, "matrix"


class SklearnPredictor:
    runtime = "sklearn"

    def __init__(self, model: Any, info: ModelInfo) -> None:
        self._model = model
        self.native = model  # what an explainer takes apart
        self._info = info
        self._frame = info.extra.get("input") == "frame"
        self._numeric = info.extra.get("numeric", True)

    def predict(self, columns: Columns) -> np.ndarray:
        order = self._info.input_order
        if self._frame:
            X = columns_to_frame(columns, order)
        else:
            X = columns_to_matrix(columns, order, np.float64 if self._numeric else object)
        if self._info.task == "regression":
            return np.asarray(self._model.predict(X), dtype=np.float64).reshape(-1)
        return as_probabilities(self._model.predict_proba(X), len(self._info.classes or []))


class SklearnFlavour(Flavour):
    name = "sklearn"
    requirements = ("scikit-learn", "numpy", "joblib")

    def matches(self, model: Any) -> bool:
        try:
            from sklearn.base import BaseEstimator
        except ImportError:  # pragma: no cover - scikit-learn is a core dependency
            return False
        return isinstance(model, BaseEstimator) and type(model).__module__.split(".")[0] not in (
            "lightgbm",
            "xgboost",
        )

    def save(self, model: Any, folder: Path, signature: Signature) -> ModelInfo:
        import joblib

        task, classes, order, kind = describe_estimator(model, signature)
        folder.mkdir(parents=True, exist_ok=True)
        joblib.dump(model, folder / "model.joblib")
        numeric = all(
            s.is_numeric or s.type == "bool" for s in signature.columns if s.name in order
        )
        return ModelInfo(
            flavour=self.name,
            task=task,
            classes=classes,
            files=["model.joblib"],
            input_order=order,
            extra={"input": kind, "numeric": numeric, "estimator": type(model).__name__},
        )

    def load(self, folder: Path, info: ModelInfo) -> SklearnPredictor:
        import joblib

        return SklearnPredictor(joblib.load(folder / "model.joblib"), info)

    def onnx_candidates(
        self, model: Any, info: ModelInfo, signature: Signature
    ) -> list[tuple[str, Callable[[], bytes]]]:
        return sklearn_onnx_candidates(model, info, signature)


def _has_column_transformer(model: Any) -> bool:
    from sklearn.compose import ColumnTransformer

    if isinstance(model, ColumnTransformer):
        return True
    params = model.get_params(deep=True) if hasattr(model, "get_params") else {}
    return any(isinstance(v, ColumnTransformer) for v in params.values())


def _skl2onnx(model: Any, types: Any, options: Any) -> bytes:
    from skl2onnx import to_onnx

    graph = to_onnx(model, initial_types=types, options=options)
    return bytes(graph.SerializeToString())


def sklearn_onnx_candidates(
    model: Any, info: ModelInfo, signature: Signature
) -> list[tuple[str, Callable[[], bytes]]]:
    """skl2onnx conversions: float32 first (fastest), then float64 (exact for trees)."""
    from skl2onnx.common.data_types import (
        BooleanTensorType,
        DoubleTensorType,
        FloatTensorType,
        Int64TensorType,
        StringTensorType,
    )

    specs = {c.name: c for c in signature.columns}
    per_column = info.extra.get("input") == "frame" and (
        _has_column_transformer(model) or not info.extra.get("numeric", True)
    )
    options = {"zipmap": False} if info.task != "regression" else None
    candidates: list[tuple[str, Callable[[], bytes]]] = []
    for label, real in (("float32", FloatTensorType), ("float64", DoubleTensorType)):
        if per_column:
            kinds = {
                "string": StringTensorType,
                "bool": BooleanTensorType,
                "int64": Int64TensorType,
            }
            types = [(n, kinds.get(specs[n].type, real)([None, 1])) for n in info.input_order]
        else:
            types = [("X", real([None, len(info.input_order)]))]

        candidates.append(
            (f"skl2onnx {label}", functools.partial(_skl2onnx, model, types, options))
        )
    return candidates

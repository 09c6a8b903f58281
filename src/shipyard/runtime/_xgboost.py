"""XGBoost boosters and scikit-learn-API models, saved in XGBoost's JSON format."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from shipyard.core import Columns, ColumnSpec, Signature
from shipyard.core.errors import UnsupportedModel, missing_extra
from shipyard.runtime._lightgbm import feature_order
from shipyard.runtime._predictor import (
    Flavour,
    ModelInfo,
    Task,
    as_probabilities,
    columns_to_matrix,
)

__all__ = ["XGBoostFlavour"]


def _xgb() -> Any:
    try:
        import xgboost
    except ImportError:
        raise missing_extra("xgboost", "xgboost", "XGBoost models") from None
    return xgboost


class XGBoostPredictor:
    runtime = "xgboost"

    def __init__(self, booster: Any, info: ModelInfo) -> None:
        self._booster = booster
        self.native = booster  # what an explainer takes apart
        self._info = info

    def predict(self, columns: Columns) -> np.ndarray:
        X = columns_to_matrix(columns, self._info.input_order)
        raw = self._booster.inplace_predict(X, validate_features=False)
        if self._info.task == "regression":
            return np.asarray(raw, dtype=np.float64).reshape(-1)
        return as_probabilities(raw, len(self._info.classes or []))


class XGBoostFlavour(Flavour):
    name = "xgboost"
    requirements = ("xgboost", "numpy")

    def matches(self, model: Any) -> bool:
        return type(model).__module__.split(".")[0] == "xgboost"

    def save(self, model: Any, folder: Path, signature: Signature) -> ModelInfo:
        from sklearn.exceptions import NotFittedError

        xgb = _xgb()
        if not isinstance(model, xgb.Booster | xgb.XGBModel):
            raise UnsupportedModel(f"cannot package a {type(model).__name__} as an XGBoost model")
        try:
            booster = model.get_booster() if isinstance(model, xgb.XGBModel) else model
        except (xgb.core.XGBoostError, NotFittedError):  # which one depends on the version
            raise UnsupportedModel(
                f"the {type(model).__name__} is not fitted; call fit() first"
            ) from None
        task, classes = self._task(model, booster)
        order = feature_order(booster.feature_names, signature, "XGBoost")
        if any(not s.is_numeric and s.type != "bool" for s in signature.columns if s.name in order):
            raise UnsupportedModel(
                "XGBoost models are served from numeric features; encode string columns first"
            )
        folder.mkdir(parents=True, exist_ok=True)
        booster.save_model(str(folder / "model.json"))
        return ModelInfo(
            self.name, task, classes, ["model.json"], order, {"model_class": type(model).__name__}
        )

    def _task(self, model: Any, booster: Any) -> tuple[Task, list[Any] | None]:
        config = json.loads(booster.save_config())["learner"]
        objective = config["objective"]["name"]
        if objective in ("multi:softmax", "binary:logitraw", "binary:hinge"):
            raise UnsupportedModel(
                f"XGBoost objective {objective!r} gives no probabilities; train with "
                "'binary:logistic' or 'multi:softprob' to serve scores against a threshold"
            )
        if hasattr(model, "classes_"):
            classes = [c.item() if hasattr(c, "item") else c for c in model.classes_]
            return ("binary" if len(classes) == 2 else "multiclass"), classes
        if objective == "binary:logistic":
            return "binary", [0, 1]
        if objective == "multi:softprob":
            n = int(config["learner_model_param"]["num_class"])
            return "multiclass", list(range(n))
        return "regression", None

    def described_inputs(self, model: Any) -> tuple[Signature, Any] | None:
        """An XGBoost model knows how many features it takes, often their names and types;
        categorical ones need a sample (their categories are not in the model's schema)."""
        try:
            booster = model.get_booster() if hasattr(model, "get_booster") else model
            count = int(booster.num_features())
        except Exception:  # not fitted: packaging says so
            return None
        names = booster.feature_names or [f"f{i}" for i in range(count)]
        types = booster.feature_types or ["float"] * len(names)
        if any(t == "c" for t in types):
            return None
        columns = tuple(
            ColumnSpec(str(n), "int64" if t in ("int", "i") else "float64", t not in ("int", "i"))
            for n, t in zip(names, types, strict=False)
        )
        return Signature(columns), None

    def load(self, folder: Path, info: ModelInfo) -> XGBoostPredictor:
        xgb = _xgb()
        booster = xgb.Booster()
        booster.load_model(str(folder / "model.json"))
        booster.set_param({"nthread": 1})
        return XGBoostPredictor(booster, info)

    def onnx_candidates(
        self, model: Any, info: ModelInfo, signature: Signature
    ) -> list[tuple[str, Callable[[], bytes]]]:
        def convert() -> bytes:
            import onnxmltools
            from onnxmltools.convert.common.data_types import FloatTensorType

            # the converter only understands positional feature names (f0, f1, ...)
            clone = copy.deepcopy(model)
            booster = clone.get_booster() if hasattr(clone, "get_booster") else clone
            booster.feature_names = None
            types = [("X", FloatTensorType([None, len(info.input_order)]))]
            graph = onnxmltools.convert_xgboost(clone, initial_types=types)
            return bytes(graph.SerializeToString())

        return [("onnxmltools float32", convert)]

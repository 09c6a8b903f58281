"""LightGBM boosters and scikit-learn-API models, saved in LightGBM's own text format."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from shipyard.core import Columns, ColumnSpec, Signature
from shipyard.core.errors import UnsupportedModel, missing_extra
from shipyard.runtime._predictor import (
    Flavour,
    ModelInfo,
    Task,
    as_probabilities,
    columns_to_matrix,
)

__all__ = ["LightGBMFlavour", "feature_order"]


def _lgb() -> Any:
    try:
        import lightgbm
    except ImportError:
        raise missing_extra("lightgbm", "lightgbm", "LightGBM models") from None
    return lightgbm


def feature_order(model_names: list[str] | None, signature: Signature, library: str) -> list[str]:
    """Map a tree model's feature names onto the signature's columns.

    Names the model knows win; generic names (`Column_0`, `f0`, none) map by position.
    """
    names = signature.names
    if model_names and all(n in names for n in model_names):
        return list(model_names)
    if model_names is None or len(model_names) == len(names):
        return names
    raise UnsupportedModel(
        f"the {library} model takes {len(model_names)} features but the sample has {len(names)} "
        "columns; pass a sample with exactly the model's features"
    )


class LightGBMPredictor:
    runtime = "lightgbm"

    def __init__(self, booster: Any, info: ModelInfo) -> None:
        self._booster = booster
        self.native = booster  # what an explainer takes apart
        self._info = info

    def predict(self, columns: Columns) -> np.ndarray:
        X = columns_to_matrix(columns, self._info.input_order)
        raw = self._booster.predict(X, num_threads=1)
        if self._info.task == "regression":
            return np.asarray(raw, dtype=np.float64).reshape(-1)
        return as_probabilities(raw, len(self._info.classes or []))


class LightGBMFlavour(Flavour):
    name = "lightgbm"
    requirements = ("lightgbm", "numpy")

    def matches(self, model: Any) -> bool:
        return type(model).__module__.split(".")[0] == "lightgbm"

    def _booster(self, model: Any) -> Any:
        return model.booster_ if hasattr(model, "booster_") else model

    def save(self, model: Any, folder: Path, signature: Signature) -> ModelInfo:
        lgb = _lgb()
        if not isinstance(model, lgb.Booster | lgb.LGBMModel):
            raise UnsupportedModel(f"cannot package a {type(model).__name__} as a LightGBM model")
        if isinstance(model, lgb.LGBMModel) and not getattr(model, "fitted_", False):
            raise UnsupportedModel(f"the {type(model).__name__} is not fitted; call fit() first")
        booster = self._booster(model)
        task, classes = self._task(model, booster)
        order = feature_order(booster.feature_name(), signature, "LightGBM")
        if any(not s.is_numeric and s.type != "bool" for s in signature.columns if s.name in order):
            raise UnsupportedModel(
                "LightGBM models are served from numeric features; encode string columns first "
                "(e.g. wrap the model in a scikit-learn Pipeline with an encoder)"
            )
        folder.mkdir(parents=True, exist_ok=True)
        booster.save_model(str(folder / "model.txt"))
        return ModelInfo(
            self.name, task, classes, ["model.txt"], order, {"model_class": type(model).__name__}
        )

    def _task(self, model: Any, booster: Any) -> tuple[Task, list[Any] | None]:
        if hasattr(model, "classes_"):
            classes = [c.item() if hasattr(c, "item") else c for c in model.classes_]
            return ("binary" if len(classes) == 2 else "multiclass"), classes
        objective = str(booster.dump_model(num_iteration=1).get("objective", "regression"))
        if objective.startswith(("binary", "cross_entropy")):
            return "binary", [0, 1]
        if objective.startswith(("multiclass", "softmax", "multiclassova")):
            return "multiclass", list(range(int(booster.dump_model(num_iteration=1)["num_class"])))
        return "regression", None

    def described_inputs(self, model: Any) -> tuple[Signature, Any] | None:
        """A LightGBM model names its features; it takes them as numbers (missing allowed)."""
        names = self._booster(model).feature_name()
        if not names:
            return None
        return Signature(tuple(ColumnSpec(str(n), "float64", True) for n in names)), None

    def load(self, folder: Path, info: ModelInfo) -> LightGBMPredictor:
        lgb = _lgb()
        return LightGBMPredictor(lgb.Booster(model_file=str(folder / "model.txt")), info)

    def onnx_candidates(
        self, model: Any, info: ModelInfo, signature: Signature
    ) -> list[tuple[str, Callable[[], bytes]]]:
        def convert() -> bytes:
            import onnxmltools
            from onnxmltools.convert.common.data_types import FloatTensorType

            types = [("X", FloatTensorType([None, len(info.input_order)]))]
            graph = onnxmltools.convert_lightgbm(model, initial_types=types, zipmap=False)
            return bytes(graph.SerializeToString())

        return [("onnxmltools float32", convert)]

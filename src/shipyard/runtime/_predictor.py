"""The one interface every model flavour serves through."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from shipyard.core import Columns, Signature

__all__ = ["Flavour", "ModelInfo", "Predictor", "Task", "columns_to_frame", "columns_to_matrix"]

Task = Literal["binary", "multiclass", "regression"]


class Predictor(Protocol):
    """A loaded model.

    `predict` takes validated columns and returns, for a classifier, an `(n, k)` matrix of
    class probabilities in the order of `ModelInfo.classes`; for a regressor, an `(n,)` vector.
    """

    runtime: str

    def predict(self, columns: Columns) -> np.ndarray: ...


@dataclass
class ModelInfo:
    """What packaging learned about a model; stored in `metadata.json` under `model`."""

    flavour: str
    task: Task
    classes: list[Any] | None
    files: list[str]
    input_order: list[str]
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelInfo:
        return cls(**data)


class Flavour(ABC):
    """Knows one model format: how to recognise, save, load and convert it to ONNX."""

    name: str
    requirements: tuple[str, ...]

    @abstractmethod
    def matches(self, model: Any) -> bool:
        """Whether `model` (an in-memory object) is of this flavour."""

    @abstractmethod
    def save(self, model: Any, folder: Path, signature: Signature) -> ModelInfo:
        """Write the model's native files into `folder`."""

    @abstractmethod
    def load(self, folder: Path, info: ModelInfo) -> Predictor:
        """Load what `save` wrote."""

    def described_inputs(self, model: Any) -> tuple[Signature, Any] | None:
        """What the artifact itself says it takes, when it says: its signature, and rows of an
        example (a DataFrame) when it carries one. None: only a sample can tell."""
        return None

    def requirements_for(self, info: ModelInfo) -> tuple[str, ...]:
        """The distributions serving the saved model needs (only installed ones get pinned)."""
        return self.requirements

    def refine(self, info: ModelInfo, output: np.ndarray) -> ModelInfo:
        """Correct `info` from the model's output on the sample (for opaque formats)."""
        return info

    def onnx_candidates(
        self, model: Any, info: ModelInfo, signature: Signature
    ) -> list[tuple[str, Callable[[], bytes]]]:
        """Ways to convert the model to ONNX, best first, each a label and a thunk.

        Packaging runs each thunk and keeps the first graph that agrees with the native model
        on the sample; a thunk that raises is recorded as the reason it was not used.
        """
        return []


def columns_to_matrix(columns: Columns, order: list[str], dtype: Any = np.float64) -> np.ndarray:
    """Stack columns into an `(n, k)` matrix in the model's feature order."""
    if not order:
        return np.empty((0, 0), dtype=dtype)
    return np.column_stack([np.asarray(columns[name], dtype=dtype) for name in order])


def columns_to_frame(columns: Columns, order: list[str]) -> Any:
    import pandas as pd

    return pd.DataFrame({name: columns[name] for name in order}, copy=False)


def as_probabilities(raw: np.ndarray, n_classes: int) -> np.ndarray:
    """Turn a model's probability output into an `(n, k)` matrix (binary 1-D -> two columns)."""
    out = np.asarray(raw, dtype=np.float64)
    if out.ndim == 1 or (out.ndim == 2 and out.shape[1] == 1 and n_classes == 2):
        positive = out.reshape(-1)
        return np.column_stack([1.0 - positive, positive])
    return out

"""Model flavours behind one `Predictor` protocol: scikit-learn, LightGBM, XGBoost, PyTorch, ONNX,
MLflow."""

from __future__ import annotations

from shipyard.runtime._mlflow import is_mlflow_dir, mlflow_signature
from shipyard.runtime._onnx import OnnxGraph, onnx_feeds
from shipyard.runtime._package import (
    FLAVOURS,
    Packaged,
    described_inputs,
    detect_flavour,
    load_model_file,
    load_native,
    load_predictor,
    package,
)
from shipyard.runtime._predictor import (
    Flavour,
    ModelInfo,
    Predictor,
    Task,
    columns_to_frame,
    columns_to_matrix,
)
from shipyard.runtime._torch import TorchModel

__all__ = [
    "FLAVOURS",
    "Flavour",
    "ModelInfo",
    "OnnxGraph",
    "Packaged",
    "Predictor",
    "Task",
    "TorchModel",
    "columns_to_frame",
    "columns_to_matrix",
    "described_inputs",
    "detect_flavour",
    "is_mlflow_dir",
    "load_model_file",
    "load_native",
    "load_predictor",
    "mlflow_signature",
    "onnx_feeds",
    "package",
]

"""Real-time scoring: the prediction service, its routing and its HTTP routers; predictions
devices made offline, uploaded and logged (`EdgeUploads`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shipyard.registry import PredictionResult, ServedModel
from shipyard.serving._routing import choose, key_point
from shipyard.serving._service import PredictionService, Readiness
from shipyard.serving._uploads import (
    EdgeUploads,
    PredictionUpload,
    UploadedPrediction,
    UploadResult,
)

if TYPE_CHECKING:
    from shipyard.serving._grpc import GrpcServer

__all__ = [
    "EdgeUploads",
    "GrpcServer",
    "PredictionResult",
    "PredictionService",
    "PredictionUpload",
    "Readiness",
    "ServedModel",
    "UploadResult",
    "UploadedPrediction",
    "choose",
    "key_point",
]


def __getattr__(name: str) -> Any:
    if name == "GrpcServer":  # loads grpc only when asked for
        from shipyard.serving._grpc import GrpcServer

        return GrpcServer
    raise AttributeError(f"module 'shipyard.serving' has no attribute {name!r}")

"""Real-time scoring: the prediction service, its routing and its HTTP routers."""

from __future__ import annotations

from shipyard.serving._result import PredictionResult, ServedModel
from shipyard.serving._routing import choose, key_point
from shipyard.serving._service import PredictionService, Readiness

__all__ = [
    "PredictionResult",
    "PredictionService",
    "Readiness",
    "ServedModel",
    "choose",
    "key_point",
]

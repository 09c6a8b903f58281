"""Real-time scoring: the prediction service, its routing and its HTTP routers."""

from __future__ import annotations

from shipyard.serving._routing import choose, key_point
from shipyard.serving._service import PredictionResult, PredictionService, ServedModel

__all__ = ["PredictionResult", "PredictionService", "ServedModel", "choose", "key_point"]

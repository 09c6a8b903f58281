"""Real-time scoring: the prediction service and its HTTP routers."""

from __future__ import annotations

from shipyard.serving._service import PredictionResult, PredictionService, ServedModel

__all__ = ["PredictionResult", "PredictionService", "ServedModel"]

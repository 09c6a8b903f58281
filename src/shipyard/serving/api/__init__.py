"""HTTP faces of scoring: shipyard's `/v1` and the Open Inference Protocol (`/v2`).

_io.py   the scoring request both share (guard, body, route, score, log, metrics)
_v1.py   /v1/models/{name}/predict, /v1/feedback, /v1/serving
_v2.py   /v2 health, metadata, readiness and inference
"""

from __future__ import annotations

from fastapi import APIRouter

from shipyard.access.api import Guard
from shipyard.serving._service import PredictionService
from shipyard.serving.api import _v1, _v2
from shipyard.serving.api._v1 import FeedbackAnswer, PredictRequest, PredictResponse
from shipyard.serving.api._v2 import InferRequest, InferResponse

__all__ = [
    "FeedbackAnswer",
    "InferRequest",
    "InferResponse",
    "PredictRequest",
    "PredictResponse",
    "routers",
]


def routers(service: PredictionService, guard: Guard) -> list[APIRouter]:
    """Every scoring router over `service`, behind `guard`."""
    return [*_v1.routers(service, guard), *_v2.routers(service, guard)]

"""HTTP faces of scoring: shipyard's `/v1` and the Open Inference Protocol (`/v2`).

_io.py       the scoring request both share (guard, body, route, score, log, metrics)
_v1.py       /v1/models/{name}/predict, /v1/feedback, /v1/serving
_uploads.py  /v1/logs/upload (predictions devices made offline)
_v2.py       /v2 health, metadata, readiness and inference
"""

from __future__ import annotations

from fastapi import APIRouter

from shipyard.access.api import Guard
from shipyard.serving._service import PredictionService
from shipyard.serving._uploads import EdgeUploads
from shipyard.serving.api import _uploads, _v1, _v2
from shipyard.serving.api._uploads import UploadAnswer
from shipyard.serving.api._v1 import FeedbackAnswer, PredictRequest, PredictResponse
from shipyard.serving.api._v2 import InferRequest, InferResponse

__all__ = [
    "FeedbackAnswer",
    "InferRequest",
    "InferResponse",
    "PredictRequest",
    "PredictResponse",
    "UploadAnswer",
    "routers",
]


def routers(service: PredictionService, guard: Guard, uploads: EdgeUploads) -> list[APIRouter]:
    """Every scoring router over `service` (and devices' `uploads`), behind `guard`."""
    return [
        *_v1.routers(service, guard, uploads),
        _uploads.router(uploads, guard, service.settings.max_body_bytes),
        *_v2.routers(service, guard),
    ]

"""`POST /v1/logs/upload`: predictions devices made offline, logged like the server's own."""

# no `from __future__ import annotations`: FastAPI reads the annotations of routes defined
# inside the router factory, which name its local dependencies

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from shipyard.access.api import Caller, Guard
from shipyard.core.api import GUARDED, JSONRoute, error_responses
from shipyard.serving._uploads import EdgeUploads, PredictionUpload

__all__ = ["UploadAnswer", "router"]


class UploadAnswer(BaseModel):
    accepted: int = Field(description="predictions logged now")
    duplicates: int = Field(description="predictions this device uploaded before (a retry)")
    conflicts: list[str] = Field(
        description="ids another device uploaded first, not logged (ids are unique per model)"
    )
    model: str
    version: int


def router(uploads: EdgeUploads, guard: Guard, body_limit: int) -> APIRouter:
    """`/v1/logs/upload`, its body read within `body_limit` bytes."""
    route = type("UploadRoute", (JSONRoute,), {"body_limit": body_limit})
    api = APIRouter(prefix="/v1/logs", tags=["predict"], route_class=route)

    def uploaded(body: PredictionUpload) -> PredictionUpload:
        return body

    async def model_of(batch: Annotated[PredictionUpload, Depends(uploaded)]) -> list[str]:
        return [batch.model]

    @api.post(
        "/upload",
        response_model=UploadAnswer,
        responses=error_responses(*GUARDED, 404, 413, 415, 422),
        summary="Predictions devices made offline, uploaded later",
        description="Logged like the server's predictions (`source` edge, the device as "
        "`job_id`, each at its own time), so monitoring and labels (`/v1/feedback`, with the "
        "device's ids) cover them. Each prediction is checked against the version as "
        "`/predict` checks records (a 422 names every one that does not fit, and nothing is "
        "logged). Sending an upload again is safe: predictions uploaded before are counted as "
        "`duplicates` and not logged twice. A 503 logged nothing: send the upload again.",
    )
    def upload(
        caller: Annotated[Caller, guard.require("predict", touches=model_of)],
        batch: Annotated[PredictionUpload, Depends(uploaded)],
    ) -> dict[str, Any]:
        """A key bound to a model uploads only that model's predictions."""
        return uploads.upload(batch, key_id=caller.key.id).to_dict()

    return api

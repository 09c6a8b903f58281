"""The Open Inference Protocol (KServe V2) under `/v2`: health, metadata and inference, so
clients written for Triton, KServe and MLServer work unchanged. Errors take the protocol's
shape, `{"error": "..."}`."""

# no `from __future__ import annotations`: FastAPI reads the annotations of routes defined
# inside the router factory, which name its local dependencies

from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from shipyard.access.api import Caller, Guard
from shipyard.core import parse_version, validate_model_name
from shipyard.core.api import (
    GUARDED,
    DirectRoute,
    JSONBytes,
    JSONRoute,
    ModelName,
    VersionPath,
    error_responses,
)
from shipyard.core.errors import NotFound, ShipyardError
from shipyard.core.version import __version__
from shipyard.registry import PredictionResult, ServedModel
from shipyard.serving._binary import binary_response
from shipyard.serving._oip import (
    binary_outputs,
    encode_outputs,
    explanation_parameters,
    metadata_tensors,
    requested_outputs,
    v2_decoder,
    wants_explanation,
)
from shipyard.serving._scoring import PREDICT_OR_READ
from shipyard.serving._service import PredictionService
from shipyard.serving.api._io import HttpScoring, inline_schema

__all__ = ["EXTENSIONS", "InferRequest", "InferResponse", "routers"]

EXTENSIONS = ["binary_tensor_data"]

Datatype = Literal[
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BYTES",
]  # fmt: skip


class InferInput(BaseModel):
    name: str
    shape: list[Annotated[int, Field(ge=0)]]
    datatype: Datatype
    data: list[Any] = Field(description="row-major values (flat or nested)")
    parameters: dict[str, Any] | None = None


class RequestedOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    """One tensor per signature column (`[rows]` or `[rows, 1]`), or one `[rows, columns]`
    tensor whose columns are the signature's, in order."""

    id: str | None = Field(default=None, max_length=256)
    parameters: dict[str, Any] | None = None
    inputs: list[InferInput] = Field(min_length=1)
    outputs: list[RequestedOutput] | None = None


class OutputTensor(BaseModel):
    name: str
    shape: list[int]
    datatype: Datatype
    data: list[Any]


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[OutputTensor]


class TensorMetadata(BaseModel):
    name: str
    datatype: Datatype
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    """Only the verdict: anyone may ask, so why is told to keys (`GET /v1/serving`)."""

    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


def _render(result: PredictionResult, served: ServedModel, body: Any) -> dict[str, Any] | Response:
    response: dict[str, Any] = {
        "model_name": served.name,
        "model_version": str(served.version),
        "outputs": encode_outputs(served.task, result, requested_outputs(body)),
    }
    if "id" in body:  # echoed as given; the prediction ids are the prediction_id output
        response["id"] = body["id"]
    parameters = explanation_parameters(result)
    if result.threshold is not None:
        parameters["threshold"] = result.threshold
    if parameters:
        response["parameters"] = parameters
    binary = binary_outputs(body, [t["name"] for t in response["outputs"]])
    if not binary:
        return response
    content, header = binary_response(response, binary)
    return Response(
        content,
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(header)},
    )


_INFER_DOCS = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": inline_schema(InferRequest)}},
    },
    "x-scopes": ["predict"],
}


def routers(service: PredictionService, guard: Guard) -> list[APIRouter]:
    """`/v2` inference (direct routes) and the rest of the protocol."""
    scoring = HttpScoring(service, guard)
    direct = APIRouter(tags=["open inference protocol"], route_class=DirectRoute)
    infer_errors = error_responses(*GUARDED, 404, 413, 415, 422, 504, v2=True)

    @direct.post(
        "/v2/models/{name}/infer",
        openapi_extra=_INFER_DOCS,
        response_model=InferResponse,
        responses=infer_errors,
        summary="Inference (serving deployment)",
    )
    async def infer(request: Request, name: ModelName) -> Response:
        validate_model_name(name)
        return await scoring.serve(
            request, name, None, v2_decoder, _render, binary=True, explain=wants_explanation
        )

    @direct.post(
        "/v2/models/{name}/versions/{version}/infer",
        openapi_extra=_INFER_DOCS,
        response_model=InferResponse,
        responses=infer_errors,
        summary="Inference (pinned version)",
    )
    async def infer_version(request: Request, name: ModelName, version: VersionPath) -> Response:
        validate_model_name(name)
        pinned = parse_version(str(version))
        return await scoring.serve(
            request, name, pinned, v2_decoder, _render, binary=True, explain=wants_explanation
        )

    v2 = APIRouter(prefix="/v2", tags=["open inference protocol"], route_class=JSONRoute)
    predict_or_read = guard.require(*PREDICT_OR_READ)
    model_errors = error_responses(*GUARDED, 404, v2=True)

    @v2.get("", response_model=ServerMetadata, summary="Server metadata")
    @v2.get("/", response_model=ServerMetadata, include_in_schema=False)
    async def server_metadata() -> dict[str, Any]:
        return {"name": "shipyard", "version": __version__, "extensions": EXTENSIONS}

    @v2.get("/health/live", response_model=Live, summary="Liveness")
    async def live() -> dict[str, Any]:
        return {"live": True}

    @v2.get(
        "/health/ready",
        response_model=Ready,
        responses={503: {"model": Ready, "description": "not ready (`GET /v1/serving` says why)"}},
        summary="Readiness: every deployed version loaded, state fresh, the log writable",
    )
    async def ready() -> Response:
        """Why the server is not ready, or serves from old state: `GET /v1/serving`."""
        readiness = service.readiness()
        return JSONBytes({"ready": readiness.ready}, status_code=200 if readiness.ready else 503)

    async def metadata(name: str, version: int | None) -> dict[str, Any]:
        resolved = await anyio.to_thread.run_sync(service.resolve_version, name, version)
        served = await service.pinned(name, resolved)
        versions = await anyio.to_thread.run_sync(service.registry.list_versions, name)
        inputs, outputs = metadata_tensors(served.signature, served.task, served.classes)
        return {
            "name": served.name,
            "versions": [str(v.version) for v in versions if v.status == "ready"],
            "platform": f"shipyard_{served.predictor.runtime}",
            "inputs": inputs,
            "outputs": outputs,
        }

    @v2.get(
        "/models/{name}",
        response_model=ModelMetadata,
        responses=model_errors,
        summary="Model metadata (serving version)",
    )
    async def model_metadata(
        name: ModelName, caller: Annotated[Caller, predict_or_read]
    ) -> dict[str, Any]:
        return await metadata(name, None)

    @v2.get(
        "/models/{name}/versions/{version}",
        response_model=ModelMetadata,
        responses=model_errors,
        summary="Model metadata (pinned version)",
    )
    async def model_version_metadata(
        name: ModelName, version: VersionPath, caller: Annotated[Caller, predict_or_read]
    ) -> dict[str, Any]:
        return await metadata(name, version)

    async def model_ready(name: str, version: int | None) -> dict[str, Any]:
        """Ready when the version loads (an unknown model or version: 404)."""
        resolved = await anyio.to_thread.run_sync(service.resolve_version, name, version)
        if service.cached(name, resolved) is None:
            await anyio.to_thread.run_sync(service.registry.get_version, name, resolved)
            try:
                await service.pinned(name, resolved)
            except NotFound:
                raise
            except ShipyardError:
                return {"name": name, "ready": False}
        return {"name": name, "ready": True}

    @v2.get(
        "/models/{name}/ready",
        response_model=ModelReady,
        responses=model_errors,
        summary="Model readiness (serving version)",
    )
    async def model_is_ready(
        name: ModelName, caller: Annotated[Caller, predict_or_read]
    ) -> dict[str, Any]:
        return await model_ready(name, None)

    @v2.get(
        "/models/{name}/versions/{version}/ready",
        response_model=ModelReady,
        responses=model_errors,
        summary="Model readiness (pinned version)",
    )
    async def model_version_is_ready(
        name: ModelName, version: VersionPath, caller: Annotated[Caller, predict_or_read]
    ) -> dict[str, Any]:
        return await model_ready(name, version)

    return [direct, v2]

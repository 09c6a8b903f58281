"""HTTP faces of scoring: shipyard's `/v1/.../predict` and the Open Inference Protocol (`/v2`)."""

from __future__ import annotations

from typing import Any

import anyio
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

import shipyard
from shipyard.core.errors import (
    MalformedRequest,
    ModelNotFound,
    NotFound,
    PayloadTooLarge,
    ShipyardError,
)
from shipyard.serving._oip import decode_inputs, encode_outputs, metadata_tensors, requested_outputs
from shipyard.serving._service import PredictionService, ServedModel

__all__ = ["JSONBytes", "read_json", "v1_router", "v2_router"]


class JSONBytes(Response):
    """A JSON response serialised by orjson (numpy-aware, several times faster than json)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


_PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["instances"],
                    "properties": {
                        "instances": {
                            "type": "array",
                            "items": {"type": "object", "additionalProperties": True},
                            "description": "records: one object of feature values per row",
                        }
                    },
                },
                "example": {
                    "instances": [{"transaction_amount": 42.5, "merchant_category": "grocery"}]
                },
            }
        },
    }
}
_INFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "inputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name", "shape", "datatype", "data"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "shape": {"type": "array", "items": {"type": "integer"}},
                                    "datatype": {"type": "string"},
                                    "data": {"type": "array", "items": {}},
                                },
                            },
                        },
                        "outputs": {"type": "array", "items": {"type": "object"}},
                    },
                }
            }
        },
    }
}


async def read_json(request: Request, limit: int) -> Any:
    """The request body parsed as JSON, refusing bodies over `limit` bytes before reading them."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(
            f"request body of {int(declared)} bytes is over the limit of {limit} bytes; send fewer "
            "records per request or raise SHIPYARD_MAX_BODY_BYTES"
        )
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(
                f"request body is over the limit of {limit} bytes; send fewer records per request "
                "or raise SHIPYARD_MAX_BODY_BYTES"
            )
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw:
        raise MalformedRequest("the request body is empty; send a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise MalformedRequest(f"the request body is not valid JSON: {error}") from None


def _service(request: Request) -> PredictionService:
    service: PredictionService = request.app.state.predictions
    return service


async def _served(service: PredictionService, name: str, version: int | None) -> ServedModel:
    """The loaded model; registry look-ups and first loads run off the event loop."""
    if version is not None:
        cached = service.cached(name, version)
        if cached is not None:
            return cached
    resolved = await anyio.to_thread.run_sync(service.resolve_version, name, version)
    cached = service.cached(name, resolved)
    if cached is not None:
        return cached
    return await anyio.to_thread.run_sync(service.load, name, resolved)


def _parse_version(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise MalformedRequest(f"version {text!r} must be a positive integer, e.g. /versions/3")
    return int(text)


# -- /v1 ----------------------------------------------------------------------------------

v1_router = APIRouter(prefix="/v1", tags=["predict"])


async def _predict(request: Request, name: str, version: int | None) -> JSONBytes:
    service = _service(request)
    body = await read_json(request, service.settings.max_body_bytes)
    if not isinstance(body, dict) or "instances" not in body:
        raise MalformedRequest(
            'send {"instances": [{...}, ...]}: a list of records, one object of feature values each'
        )
    records = body["instances"]
    if isinstance(records, list):
        service.check_batch(len(records))
    served = await _served(service, name, version)
    result = service.predict_records(served, records)
    return JSONBytes(
        {
            "model": served.name,
            "version": served.version,
            "predictions": result.records(),
            "prediction_ids": result.ids,
        }
    )


@v1_router.post(
    "/models/{name}/predict",
    openapi_extra=_PREDICT_BODY,
    summary="Score records on the serving version",
)
async def predict(request: Request, name: str) -> JSONBytes:
    """Score one or many records with the version the `production` alias points at."""
    return await _predict(request, name, None)


@v1_router.post(
    "/models/{name}/versions/{version}/predict",
    openapi_extra=_PREDICT_BODY,
    summary="Score records on a pinned version",
)
async def predict_version(request: Request, name: str, version: str) -> JSONBytes:
    """Score one or many records with a specific version."""
    return await _predict(request, name, _parse_version(version))


# -- /v2 (Open Inference Protocol) --------------------------------------------------------

v2_router = APIRouter(prefix="/v2", tags=["open inference protocol"])


@v2_router.get("", summary="Server metadata")
async def server_metadata() -> JSONBytes:
    return JSONBytes({"name": "shipyard", "version": shipyard.__version__, "extensions": []})


@v2_router.get("/health/live", summary="Liveness")
async def live() -> JSONBytes:
    return JSONBytes({"live": True})


@v2_router.get("/health/ready", summary="Readiness: every served version is loaded")
async def ready(request: Request) -> JSONBytes:
    is_ready = bool(getattr(request.app.state, "ready", False))
    return JSONBytes({"ready": is_ready}, status_code=200 if is_ready else 503)


async def _metadata(request: Request, name: str, version: int | None) -> JSONBytes:
    service = _service(request)
    served = await _served(service, name, version)
    versions = await anyio.to_thread.run_sync(service.registry.list_versions, name)
    inputs, outputs = metadata_tensors(served.signature, served.task, served.classes)
    return JSONBytes(
        {
            "name": served.name,
            "versions": [str(v.version) for v in versions if v.status == "ready"],
            "platform": f"shipyard_{served.predictor.runtime}",
            "inputs": inputs,
            "outputs": outputs,
        }
    )


@v2_router.get("/models/{name}", summary="Model metadata (serving version)")
async def model_metadata(request: Request, name: str) -> JSONBytes:
    return await _metadata(request, name, None)


@v2_router.get("/models/{name}/versions/{version}", summary="Model metadata (pinned version)")
async def model_version_metadata(request: Request, name: str, version: str) -> JSONBytes:
    return await _metadata(request, name, _parse_version(version))


async def _model_ready(request: Request, name: str, version: int | None) -> Response:
    service = _service(request)
    try:
        resolved = await anyio.to_thread.run_sync(service.resolve_version, name, version)
    except ModelNotFound:
        raise
    except NotFound:
        return JSONBytes({"name": name, "ready": False}, status_code=400)
    if service.cached(name, resolved) is None:
        try:
            await anyio.to_thread.run_sync(service.load, name, resolved)
        except ShipyardError:
            return JSONBytes({"name": name, "ready": False}, status_code=400)
    return JSONBytes({"name": name, "ready": True})


@v2_router.get("/models/{name}/ready", summary="Model readiness (serving version)")
async def model_ready(request: Request, name: str) -> Response:
    return await _model_ready(request, name, None)


@v2_router.get(
    "/models/{name}/versions/{version}/ready", summary="Model readiness (pinned version)"
)
async def model_version_ready(request: Request, name: str, version: str) -> Response:
    return await _model_ready(request, name, _parse_version(version))


async def _infer(request: Request, name: str, version: int | None) -> JSONBytes:
    service = _service(request)
    body = await read_json(request, service.settings.max_body_bytes)
    served = await _served(service, name, version)
    columns, rows = decode_inputs(body, served.signature)
    service.check_batch(rows)
    result = service.predict_columns(served, columns, rows)
    response: dict[str, Any] = {
        "model_name": served.name,
        "model_version": str(served.version),
        "id": str(body.get("id") or result.ids[0]),
        "outputs": encode_outputs(served.task, result, requested_outputs(body)),
    }
    if result.threshold is not None:
        response["parameters"] = {"threshold": result.threshold}
    return JSONBytes(response)


@v2_router.post(
    "/models/{name}/infer", openapi_extra=_INFER_BODY, summary="Inference (serving version)"
)
async def infer(request: Request, name: str) -> JSONBytes:
    return await _infer(request, name, None)


@v2_router.post(
    "/models/{name}/versions/{version}/infer",
    openapi_extra=_INFER_BODY,
    summary="Inference (pinned version)",
)
async def infer_version(request: Request, name: str, version: str) -> JSONBytes:
    return await _infer(request, name, _parse_version(version))

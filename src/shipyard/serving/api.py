"""HTTP faces of scoring: shipyard's `/v1/.../predict` and the Open Inference Protocol (`/v2`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from starlette.background import BackgroundTask

from shipyard.access.api import authorize
from shipyard.core.errors import (
    MalformedRequest,
    ModelNotFound,
    ModelUnavailable,
    NotFound,
    PayloadTooLarge,
    ShipyardError,
)
from shipyard.core.status import status_of
from shipyard.core.version import __version__
from shipyard.logstore import LogReader, parse_feedback, record_feedback
from shipyard.registry import Deployment
from shipyard.serving._oip import decode_inputs, encode_outputs, metadata_tensors, requested_outputs
from shipyard.serving._service import PredictionResult, PredictionService, ServedModel
from shipyard.serving.metrics import PREDICTION_LATENCY, PREDICTION_ROWS, PREDICTIONS

__all__ = ["DirectRoute", "JSONBytes", "read_json", "scoring_router", "v1_router", "v2_router"]


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
_FEEDBACK_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"type": "object", "required": ["prediction_id", "label"]},
                        {
                            "type": "array",
                            "items": {"type": "object", "required": ["prediction_id", "label"]},
                        },
                    ]
                },
                "example": {"prediction_id": "01a2178d4da30daf82f9ddcdaf1704cb", "label": 1},
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


PREDICT = frozenset({"predict"})
PREDICT_OR_READ = frozenset({"predict", "read"})
MAX_DEADLINE_MS = 60_000.0


def _service(request: Request) -> PredictionService:
    service: PredictionService = request.app.state.predictions
    return service


def _parse_version(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise MalformedRequest(f"version {text!r} must be a positive integer, e.g. /versions/3")
    return int(text)


def _deadline(request: Request, service: PredictionService) -> float:
    """When the answer must be ready: `X-Deadline-Ms` (up to 60 s) or the server's default."""
    header = request.headers.get("x-deadline-ms")
    budget = service.settings.deadline_ms
    if header is not None:
        try:
            budget = float(header)
        except ValueError:
            raise MalformedRequest(
                f"X-Deadline-Ms must be a number of milliseconds, got {header!r}"
            ) from None
        if not 0 < budget <= MAX_DEADLINE_MS:
            raise MalformedRequest(
                f"X-Deadline-Ms must be between 0 and {MAX_DEADLINE_MS:.0f}, got {header}"
            )
    return time.monotonic() + budget / 1e3


def _request_id(request: Request) -> str | None:
    rid: str | None = request.scope.get("state", {}).get("request_id")
    return rid


def _routing_key(request: Request, body: dict[str, Any], plan: Deployment) -> str | None:
    """The sticky-routing key: `X-Routing-Key`, a `routing_key` field, or the deployment's field."""
    header = request.headers.get("x-routing-key")
    if header:
        return header
    value = body.get("routing_key")
    if value is None and plan.routing_field:
        instances = body.get("instances")
        first = instances[0] if isinstance(instances, list) and instances else None
        value = first.get(plan.routing_field) if isinstance(first, dict) else None
    return None if value is None else str(value)


# refusals worth a model's monitoring (bad input, overload, failures); not auth or unknown models
_LOGGED_ERRORS = frozenset({400, 413, 422, 429, 503, 504})


class _Outcome:
    """Labels for the prediction metrics, filled in as the request goes."""

    __slots__ = ("model", "variant", "version")

    def __init__(self, model: str) -> None:
        self.model = model
        self.version = ""
        self.variant = ""

    def count(self, status: int, seconds: float | None = None, rows: int = 0) -> None:
        PREDICTIONS.labels(self.model, self.version, self.variant, str(status)).inc()
        if seconds is not None:
            PREDICTION_LATENCY.labels(self.model, self.version, self.variant).observe(seconds)
            PREDICTION_ROWS.labels(self.model, self.version, self.variant).inc(rows)


async def _scored(
    request: Request,
    name: str,
    version: int | None,
    body: dict[str, Any],
    decode: Any,
    outcome: _Outcome,
) -> tuple[PredictionResult, ServedModel, Deployment | None, Any, int]:
    """Authorise, route, validate and score; the part /v1 and /v2 share."""
    service = _service(request)
    deadline = _deadline(request, service)
    plan: Deployment | None = None
    if version is None:
        plan = await service.plan_for(name)
        variant, served = await service.variant(plan, _routing_key(request, body, plan))
        role: str = variant.role
    else:
        served, role = await service.pinned(name, version), "pinned"
    outcome.version, outcome.variant = str(served.version), role
    columns, rows = decode(served)
    service.check_batch(rows)
    result = await service.score(served, columns, rows, deadline, role)
    return result, served, plan, columns, rows


async def _serve(
    request: Request, name: str, version: int | None, decode_body: Any, render: Any
) -> Response:
    started = time.perf_counter()
    outcome = _Outcome(name)
    try:
        key = await authorize(request, PREDICT, name)
        service = _service(request)
        body = await read_json(request, service.settings.max_body_bytes)
        decode = decode_body(body, service)
        result, served, plan, columns, rows = await _scored(
            request, name, version, body, decode, outcome
        )
        seconds = time.perf_counter() - started
        request_id = _request_id(request)
        service.log(result, columns, latency_ms=seconds * 1e3, key_id=key.id, request_id=request_id)
    except ShipyardError as error:
        status = status_of(error)
        outcome.count(status)
        if status in _LOGGED_ERRORS:
            _service(request).log_error(
                name,
                outcome,
                status,
                error,
                getattr(request.state, "key", None),
                _request_id(request),
            )
        raise
    outcome.count(200, seconds, rows)
    response = JSONBytes(render(result, served, body))
    if plan is not None and plan.shadows:
        response.background = BackgroundTask(
            service.shadow, plan, columns, rows, key.id, request_id
        )
    return response


# -- /v1 ----------------------------------------------------------------------------------


class DirectRoute(APIRoute):
    """A route whose endpoint takes the request and its path parameters as they are.

    The scoring endpoints parse and validate their bodies themselves (against the model's
    signature), so FastAPI's per-request dependency solving is work for nothing on the hottest
    path. The route is still an `APIRoute`, so it stays in the OpenAPI document.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = self.endpoint

        async def handler(request: Request) -> Response:
            response: Response = await endpoint(request, **request.path_params)
            return response

        return handler


v1_router = APIRouter(prefix="/v1", tags=["predict"])
scoring_router = APIRouter(tags=["predict"], route_class=DirectRoute)


def _v1_decode(body: Any, service: PredictionService) -> Any:
    if not isinstance(body, dict) or "instances" not in body:
        raise MalformedRequest(
            'send {"instances": [{...}, ...]}: a list of records, one object of feature values each'
        )
    records = body["instances"]
    if isinstance(records, list):
        service.check_batch(len(records))

    def decode(served: ServedModel) -> tuple[Any, int]:
        return served.signature.validate_records(records), len(records)

    return decode


def _v1_render(result: PredictionResult, served: ServedModel, body: Any) -> dict[str, Any]:
    return {
        "model": served.name,
        "version": served.version,
        "variant": result.variant,
        "predictions": result.records(),
        "prediction_ids": result.ids,
    }


@scoring_router.post(
    "/v1/models/{name}/predict",
    openapi_extra=_PREDICT_BODY,
    summary="Score records on the serving deployment",
)
async def predict(request: Request, name: str) -> Response:
    """Score one or many records; the deployment decides which version answers."""
    return await _serve(request, name, None, _v1_decode, _v1_render)


@scoring_router.post(
    "/v1/models/{name}/versions/{version}/predict",
    openapi_extra=_PREDICT_BODY,
    summary="Score records on a pinned version",
)
async def predict_version(request: Request, name: str, version: str) -> Response:
    """Score one or many records with a specific version."""
    return await _serve(request, name, _parse_version(version), _v1_decode, _v1_render)


@v1_router.post(
    "/feedback", openapi_extra=_FEEDBACK_BODY, summary="Ground truth for earlier predictions"
)
async def feedback(request: Request) -> Response:
    """Record labels; ids that are not logged predictions are reported back, not dropped silently."""
    key = await authorize(request, PREDICT_OR_WRITE)
    service = _service(request)
    pairs = parse_feedback(await read_json(request, service.settings.max_body_bytes))
    if service.writer is None:
        raise ModelUnavailable(
            "this server does not keep prediction logs, so it cannot take labels"
        )
    writer = service.writer
    result = await anyio.to_thread.run_sync(
        lambda: record_feedback(
            pairs, writer, LogReader(writer.store), key_id=key.id,
            horizon_seconds=max(30.0, 3 * service.settings.log_flush_seconds),
        )
    )  # fmt: skip
    return JSONBytes(result.to_dict())


PREDICT_OR_WRITE = frozenset({"predict", "write"})


@v1_router.get("/serving", summary="What this server process serves now (plan, loaded versions)")
async def serving(request: Request) -> Response:
    """The deployment revision each model serves in this process, and whether it is all loaded."""
    await authorize(request, frozenset({"read"}))
    service = _service(request)
    loaded = {(s.name, s.version): s.predictor.runtime for s in service.loaded()}
    models = {
        name: {
            **plan.to_dict(),
            "loaded": {str(v.version): loaded.get((name, v.version)) for v in plan.variants},
        }
        for name, plan in sorted(service.plans.items())
    }
    return JSONBytes({"ready": service.ready, "problems": service.problems, "models": models})


# -- /v2 (Open Inference Protocol) --------------------------------------------------------

v2_router = APIRouter(prefix="/v2", tags=["open inference protocol"])


@v2_router.get("", summary="Server metadata")
async def server_metadata() -> Response:
    return JSONBytes({"name": "shipyard", "version": __version__, "extensions": []})


@v2_router.get("/health/live", summary="Liveness")
async def live() -> Response:
    return JSONBytes({"live": True})


@v2_router.get("/health/ready", summary="Readiness: every deployed version is loaded")
async def ready(request: Request) -> Response:
    is_ready = bool(getattr(request.app.state, "ready", False)) and _service(request).ready
    return JSONBytes({"ready": is_ready}, status_code=200 if is_ready else 503)


async def _metadata(request: Request, name: str, version: int | None) -> Response:
    await authorize(request, PREDICT_OR_READ, name)
    service = _service(request)
    resolved = await anyio.to_thread.run_sync(service.resolve_version, name, version)
    served = await service.pinned(name, resolved)
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
async def model_metadata(request: Request, name: str) -> Response:
    return await _metadata(request, name, None)


@v2_router.get("/models/{name}/versions/{version}", summary="Model metadata (pinned version)")
async def model_version_metadata(request: Request, name: str, version: str) -> Response:
    return await _metadata(request, name, _parse_version(version))


async def _model_ready(request: Request, name: str, version: int | None) -> Response:
    await authorize(request, PREDICT_OR_READ, name)
    service = _service(request)
    try:
        resolved = await anyio.to_thread.run_sync(service.resolve_version, name, version)
    except ModelNotFound:
        raise
    except NotFound:
        return JSONBytes({"name": name, "ready": False}, status_code=400)
    if service.cached(name, resolved) is None:
        try:
            await service.pinned(name, resolved)
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


def _v2_decode(body: Any, service: PredictionService) -> Any:
    if not isinstance(body, dict):
        raise MalformedRequest(
            "a V2 inference request is an object with a non-empty 'inputs' list of "
            "{name, shape, datatype, data} tensors"
        )

    def decode(served: ServedModel) -> tuple[Any, int]:
        return decode_inputs(body, served.signature)

    return decode


def _v2_render(result: PredictionResult, served: ServedModel, body: Any) -> dict[str, Any]:
    response: dict[str, Any] = {
        "model_name": served.name,
        "model_version": str(served.version),
        "id": str(body.get("id") or result.ids[0]),
        "outputs": encode_outputs(served.task, result, requested_outputs(body)),
    }
    if result.threshold is not None:
        response["parameters"] = {"threshold": result.threshold}
    return response


@scoring_router.post(
    "/v2/models/{name}/infer",
    tags=["open inference protocol"],
    openapi_extra=_INFER_BODY,
    summary="Inference (serving deployment)",
)
async def infer(request: Request, name: str) -> Response:
    return await _serve(request, name, None, _v2_decode, _v2_render)


@scoring_router.post(
    "/v2/models/{name}/versions/{version}/infer",
    tags=["open inference protocol"],
    openapi_extra=_INFER_BODY,
    summary="Inference (pinned version)",
)
async def infer_version(request: Request, name: str, version: str) -> Response:
    return await _serve(request, name, _parse_version(version), _v2_decode, _v2_render)

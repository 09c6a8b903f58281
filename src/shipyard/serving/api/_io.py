"""The scoring request, the part `/v1` and `/v2` share: authorise, read, route, validate,
score, log, count, answer.

    guard.check (key, scope, model binding, rate limit)
      -> body (size limit, JSON Content-Type, orjson)
      -> the version that answers (the deployment's variant for the routing key, or pinned)
      -> validate against the signature -> score through the micro-batcher
      -> log (a prediction that cannot be logged is not answered: 503)
      -> answer; shadows get a copy afterwards
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response
from starlette.background import BackgroundTask

from shipyard.access.api import Guard
from shipyard.core.api import JSONBytes, check_json_content_type, read_body
from shipyard.core.errors import MalformedRequest, ShipyardError, UnsupportedMediaType
from shipyard.core.status import status_of
from shipyard.registry import Deployment
from shipyard.serving._binary import split_request
from shipyard.serving._result import PredictionResult, ServedModel
from shipyard.serving._service import PredictionService
from shipyard.serving.metrics import PREDICTION_LATENCY, PREDICTION_ROWS, PREDICTIONS

__all__ = ["PREDICT", "PREDICT_OR_READ", "Decode", "Render", "Scoring", "inline_schema"]

PREDICT = frozenset({"predict"})
PREDICT_OR_READ = frozenset({"predict", "read"})

Decode = Callable[[Any, PredictionService], Callable[[ServedModel], tuple[Any, int]]]
Render = Callable[[PredictionResult, ServedModel, Any], dict[str, Any] | Response]


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


def _request_id(request: Request) -> str | None:
    rid: str | None = request.scope.get("state", {}).get("request_id")
    return rid


class Scoring:
    """The scoring request over a service, behind a guard."""

    def __init__(self, service: PredictionService, guard: Guard) -> None:
        self.service = service
        self.guard = guard

    async def body(self, request: Request, *, binary: bool = False) -> Any:
        """The request body, within the scoring body limit: JSON, or (with `binary`, where the
        Open Inference Protocol's binary extension applies) a JSON header with binary tensors."""
        encoding = request.headers.get("content-encoding", "identity").lower()
        if encoding != "identity":
            raise UnsupportedMediaType(
                f"bodies sent with Content-Encoding {encoding[:20]!r} are not taken; send them "
                "uncompressed"
            )
        raw = await read_body(
            request,
            self.service.settings.max_body_bytes,
            "send fewer records per request or raise SHIPYARD_MAX_BODY_BYTES",
        )
        if not raw:
            raise MalformedRequest("the request body is empty; send a JSON object")
        header = request.headers.get("inference-header-content-length") if binary else None
        if header is not None:
            return split_request(raw, header)
        check_json_content_type(request)
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as error:
            raise MalformedRequest(f"the request body is not valid JSON: {error}") from None

    async def _scored(
        self,
        request: Request,
        name: str,
        version: int | None,
        body: dict[str, Any],
        decode: Callable[[ServedModel], tuple[Any, int]],
        outcome: _Outcome,
    ) -> tuple[PredictionResult, ServedModel, Deployment | None, Any, int]:
        service = self.service
        deadline = service.deadline(request.headers.get("x-deadline-ms"))
        plan: Deployment | None = None
        if version is None:
            plan = await service.plan_for(name)
            key = service.routing_key(request.headers.get("x-routing-key"), body, plan)
            variant, served = await service.variant(plan, key)
            role: str = variant.role
        else:
            served, role = await service.pinned(name, version), "pinned"
        outcome.version, outcome.variant = str(served.version), role
        columns, rows = decode(served)
        service.check_batch(rows)
        result = await service.score(served, columns, rows, deadline, role)
        return result, served, plan, columns, rows

    async def serve(
        self,
        request: Request,
        name: str,
        version: int | None,
        decode_body: Decode,
        render: Render,
        *,
        binary: bool = False,
    ) -> Response:
        started = time.perf_counter()
        service = self.service
        outcome = _Outcome(service.metric_model(name))
        key = None
        try:
            caller = await self.guard.check(request, PREDICT, [name])
            key = caller.key
            body = await self.body(request, binary=binary)
            decode = decode_body(body, service)
            result, served, plan, columns, rows = await self._scored(
                request, name, version, body, decode, outcome
            )
            seconds = time.perf_counter() - started
            request_id = _request_id(request)
            service.log(
                result, columns, latency_ms=seconds * 1e3, key_id=key.id, request_id=request_id
            )
        except ShipyardError as error:
            outcome.count(status_of(error))
            service.log_refusal(
                name,
                int(outcome.version) if outcome.version else None,
                outcome.variant or None,
                error,
                key.id if key is not None else None,
                _request_id(request),
            )
            raise
        outcome.count(200, seconds, rows)
        answer = render(result, served, body)
        response = answer if isinstance(answer, Response) else JSONBytes(answer)
        if plan is not None and plan.shadows:
            response.background = BackgroundTask(
                service.shadow, plan, columns, rows, key.id, request_id
            )
        return response


def inline_schema(model: Any) -> dict[str, Any]:
    """A pydantic model's (or type adapter's) JSON schema with its `$defs` written in place (for `openapi_extra`,
    which cannot point into the document's components)."""
    schema: dict[str, Any] = (
        model.json_schema() if hasattr(model, "json_schema") else model.model_json_schema()
    )
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved

"""The scoring request over HTTP, the part `/v1` and `/v2` share: the key from the headers,
the body within its limit (JSON, or the V2 binary extension), the deadline and routing key
from headers; `serving._scoring.Scoring` does the rest; the answer is rendered here and
shadows get a copy after it is sent."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response
from starlette.background import BackgroundTask

from shipyard.access import ApiKey
from shipyard.access.api import Guard
from shipyard.core.api import JSONBytes, check_json_content_type, read_body
from shipyard.core.errors import MalformedRequest, UnsupportedMediaType
from shipyard.registry import PredictionResult, ServedModel
from shipyard.serving._binary import split_request
from shipyard.serving._scoring import PREDICT, Decode, Scoring
from shipyard.serving._service import PredictionService

__all__ = ["HttpScoring", "Render", "inline_schema"]

Render = Callable[[PredictionResult, ServedModel, Any], dict[str, Any] | Response]


def _request_id(request: Request) -> str | None:
    rid: str | None = request.scope.get("state", {}).get("request_id")
    return rid


class HttpScoring:
    """The scoring request over HTTP: a request in, a response out."""

    def __init__(self, service: PredictionService, guard: Guard) -> None:
        self.service = service
        self.guard = guard
        self.core = Scoring(service)

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

    async def serve(
        self,
        request: Request,
        name: str,
        version: int | None,
        decode_body: Decode,
        render: Render,
        *,
        binary: bool = False,
        records: bool = False,
        explain: Callable[[Any], bool] | None = None,
    ) -> Response:
        async def authorize() -> ApiKey:
            return (await self.guard.check(request, PREDICT, [name])).key

        async def read() -> Any:
            return await self.body(request, binary=binary)

        headers = request.headers
        scored = await self.core.predict(
            name,
            version,
            authorize,
            read,
            decode_body,
            deadline=headers.get("x-deadline-ms"),
            routing=headers.get("x-routing-key"),
            request_id=_request_id(request),
            records=records,
            explain=explain,
        )
        answer = render(scored.result, scored.served, scored.body)
        response = answer if isinstance(answer, Response) else JSONBytes(answer)
        plan = scored.plan
        if plan is not None and plan.shadows:
            response.background = BackgroundTask(
                self.service.shadow,
                plan,
                scored.columns,
                scored.rows,
                scored.key.id,
                scored.request_id,
                routing_key=scored.routing_key,
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

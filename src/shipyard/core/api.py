"""The HTTP vocabulary every `*/api.py` shares: how bodies are read and parsed, the one error
shape, typed path and query parameters, and the JSON response class.

Anything from outside is hostile until typed and bounded. Every route's body is read through
`read_body` (a size limit enforced while reading, before parsing), checked to be JSON by its
Content-Type, and parsed by `loads_strict` (valid UTF-8, no NaN or Infinity, no duplicate keys,
bounded nesting, no NUL characters) before FastAPI validates it against the route's model.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import orjson
from fastapi import Path, Query, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field

from shipyard.core.errors import MalformedRequest, PayloadTooLarge, UnsupportedMediaType
from shipyard.core.ids import MAX_VERSION
from shipyard.core.redaction import hide_paths

__all__ = [
    "ADMIN_BODY_BYTES",
    "MAX_DEPTH",
    "DirectRoute",
    "ErrorInfo",
    "ErrorResponse",
    "JSONBytes",
    "JSONRoute",
    "Limit",
    "ModelName",
    "V2ErrorResponse",
    "VersionPath",
    "check_json_content_type",
    "error_responses",
    "hide_paths",
    "loads_strict",
    "read_body",
]

ADMIN_BODY_BYTES = 64 * 1024  # keys, deployments, aliases, rules: small documents
MAX_DEPTH = 32  # nesting of non-scoring bodies; none of them needs more than 4
_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})

ModelName = Annotated[
    str,
    Path(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
        description="a registered model's name, e.g. fraud-detector",
    ),
]
VersionPath = Annotated[
    int, Path(ge=1, le=MAX_VERSION, description="a version number of the model, 1 or more")
]


def Limit(default: int, most: int) -> Any:
    """A `limit` query parameter from 1 to `most`."""
    return Query(default, ge=1, le=most, description=f"at most this many (1-{most})")


class JSONBytes(Response):
    """A JSON response serialised by orjson (numpy-aware, several times faster than json)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


# -- the one error shape ----------------------------------------------------------------------


class ErrorInfo(BaseModel):
    """What went wrong: the error class, a message saying what to do, and details if any."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(description="the class in shipyard's error tree, e.g. ModelNotFound")
    message: str = Field(description="what was wrong and what to do next")
    details: list[dict[str, Any]] | None = Field(
        default=None, description="per-field problems: `loc` (where) and `msg` (what)"
    )


class ErrorResponse(BaseModel):
    """Every error of `/v1` and the server's own routes."""

    error: ErrorInfo


class V2ErrorResponse(BaseModel):
    """Errors under `/v2`, in the Open Inference Protocol's shape."""

    error: str


_DESCRIPTIONS = {
    400: "The request is malformed: invalid JSON, or a body or parameter of the wrong shape.",
    401: "No API key, or one that is unknown or revoked.",
    403: "The key lacks the scope this call needs, or is bound to another model.",
    404: "The model, version, alias or record does not exist.",
    405: "The route does not take this method (`Allow` lists those it takes).",
    409: "The request clashes with the stored state.",
    413: "The body (or the batch in it) is over the server's limit.",
    415: "The body is not sent as `application/json`.",
    422: "Well-formed, but the values cannot be used (e.g. records that do not match the model).",
    429: "Over the key's rate limit, or too many failed authentications (see `Retry-After`).",
    503: "A part the server needs is down or busy; retry after `Retry-After` seconds.",
    504: "The answer could not be ready within the request's deadline.",
}
GUARDED = (400, 401, 403, 429, 503)


def error_responses(*statuses: int, v2: bool = False) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route: each status with the error shape it answers."""
    model = V2ErrorResponse if v2 else ErrorResponse
    return {s: {"model": model, "description": _DESCRIPTIONS[s]} for s in sorted(set(statuses))}


# -- reading bodies -----------------------------------------------------------------------------


async def read_body(request: Request, limit: int, hint: str = "send less per request") -> bytes:
    """The request body, refusing one over `limit` bytes before reading (or as soon as) it is."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and len(declared) < 20 and int(declared) > limit:
        raise PayloadTooLarge(
            f"request body of {int(declared)} bytes is over the limit of {limit} bytes; {hint}"
        )
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is over the limit of {limit} bytes; {hint}")
        chunks.append(chunk)
    return b"".join(chunks)


def check_json_content_type(request: Request) -> None:
    """Refuse a body declared as anything but JSON (a missing Content-Type is taken as JSON)."""
    declared = request.headers.get("content-type")
    if declared is None:
        return
    media = declared.split(";", 1)[0].strip().lower()
    if media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    ):
        return
    raise UnsupportedMediaType(
        f"the body is sent as {media or 'an empty Content-Type'!r}; send JSON with "
        "'Content-Type: application/json' (curl: --json '{...}')"
    )


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise MalformedRequest(
                f"the key {key!r} appears twice in one object; send each key once"
            )
        out[key] = value
    return out


def _check_values(value: Any, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise MalformedRequest(f"the body is nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, str):
        if "\x00" in value:
            raise MalformedRequest("the body contains a NUL character (\\u0000) in a string")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_values(key, depth + 1)
            _check_values(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_values(item, depth + 1)


def loads_strict(raw: bytes) -> Any:
    """Parse a (small, non-scoring) JSON body, refusing what lenient parsers let through.

    orjson refuses invalid UTF-8, lone surrogates, NaN and Infinity and nesting past 1,024
    levels; a second pass refuses duplicate keys (`{"scope": "read", "scope": "admin"}` must not
    silently become an admin key), NUL characters and nesting past `MAX_DEPTH`.
    """
    if not raw:
        raise MalformedRequest("the request body is empty; send a JSON object")
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise MalformedRequest(f"the request body is not valid JSON: {error}") from None
    try:
        value = json.loads(raw, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise MalformedRequest(f"the body is nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as error:  # e.g. an integer of thousands of digits
        raise MalformedRequest(f"the request body cannot be read: {error}") from None
    _check_values(value)
    return value


class _ParsedRequest(Request):
    """A request whose body was already read and parsed (FastAPI then validates the value)."""

    def __init__(self, request: Request, raw: bytes, value: Any) -> None:
        scope = request.scope
        if not any(name == b"content-type" for name, _ in scope["headers"]):
            # a body without Content-Type was taken as JSON: say so to FastAPI's parser
            scope = {
                **scope,
                "headers": [*scope["headers"], (b"content-type", b"application/json")],
            }
        super().__init__(scope, request.receive)
        self._body = raw
        self._parsed = value

    async def body(self) -> bytes:
        return self._body

    async def json(self) -> Any:
        return self._parsed


class JSONRoute(APIRoute):
    """A route whose body is read within a limit, checked to be JSON and parsed strictly
    before FastAPI validates it against the route's model (`body_limit` bytes, 64 KB unless a
    router sets more)."""

    body_limit = ADMIN_BODY_BYTES

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        limit = self.body_limit

        async def checked(request: Request) -> Response:
            if request.method in _WITH_BODY:
                raw = await read_body(request, limit)
                if raw:
                    check_json_content_type(request)
                request = _ParsedRequest(request, raw, loads_strict(raw) if raw else None)
            return await handler(request)

        return checked


class DirectRoute(APIRoute):
    """A route whose endpoint takes the request and its path parameters as they are.

    The scoring endpoints read, parse and validate their bodies themselves (orjson, then the
    model's signature), so FastAPI's per-request dependency solving is work for nothing on the
    hottest path. The route stays an `APIRoute`, so it is in the OpenAPI document, which its
    `openapi_extra` describes.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = self.endpoint

        async def handler(request: Request) -> Response:
            response: Response = await endpoint(request, **request.path_params)
            return response

        return handler

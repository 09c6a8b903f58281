"""HTTP face of access control: the guard every route uses, and `/v1/keys` for admins."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from fastapi import APIRouter, Request

from shipyard.access._auth import ANONYMOUS, Authenticator, token_from_headers
from shipyard.access._keys import ApiKey, parse_rate
from shipyard.access._keystore import KeyStore
from shipyard.access._limits import RateLimiter
from shipyard.core.errors import MalformedRequest

__all__ = ["authorize", "require", "router"]


async def authenticate(request: Request) -> ApiKey:
    """The key the request presents (the anonymous admin when auth is off)."""
    auth: Authenticator = request.app.state.auth
    if not auth.enabled:
        return ANONYMOUS
    headers = request.headers
    token = token_from_headers(headers.get("authorization"), headers.get("x-api-key"))
    key = auth.cached(token)
    if key is None:
        key = await anyio.to_thread.run_sync(auth.verify, token)
    return key


async def authorize(request: Request, needed: frozenset[str], model: str | None = None) -> ApiKey:
    """Authenticate, check scope and model binding, then take a rate-limit token."""
    key = await authenticate(request)
    key.check(needed, model)
    limiter: RateLimiter = request.app.state.limiter
    await limiter.check(key)
    request.state.key = key
    return key


def require(*scopes: str) -> Callable[[Request], Awaitable[ApiKey]]:
    """A route dependency: the caller needs one of `scopes` (and the model in the path, if any)."""
    needed = frozenset(scopes)

    async def guard(request: Request) -> ApiKey:
        return await authorize(request, needed, request.path_params.get("name"))

    return guard


router = APIRouter(prefix="/v1/keys", tags=["keys"])


def _keys(request: Request) -> KeyStore:
    keys: KeyStore = request.app.state.keys
    return keys


@router.get("", summary="List API keys (admin)")
async def list_keys(request: Request, include_revoked: bool = False) -> dict[str, Any]:
    await authorize(request, frozenset({"admin"}))
    keys = await anyio.to_thread.run_sync(
        lambda: _keys(request).list_keys(include_revoked=include_revoked)
    )
    return {"keys": [k.to_dict() for k in keys]}


@router.post("", status_code=201, summary="Create an API key (admin); the key is shown once")
async def create_key(request: Request) -> dict[str, Any]:
    await authorize(request, frozenset({"admin"}))
    body = await request.json() if await request.body() else {}
    if not isinstance(body, dict) or "scope" not in body:
        raise MalformedRequest(
            'send {"scope": "predict|read|write|admin", "model": null, "rate": "100/s", "burst": null, "name": ""}'
        )
    rate = body.get("rate")
    if rate is not None and not isinstance(rate, str | int | float):
        raise MalformedRequest(
            "'rate' must be a string like '100/s' or a number of requests per second"
        )
    per_second = (
        parse_rate(rate) if isinstance(rate, str) else (float(rate) if rate is not None else None)
    )
    key, token = await anyio.to_thread.run_sync(
        lambda: _keys(request).create(
            str(body["scope"]),
            model=body.get("model"),
            rate_per_second=per_second,
            burst=body.get("burst"),
            name=str(body.get("name") or ""),
        )
    )
    return {"key": key.to_dict(), "token": token}


@router.delete("/{key_id}", summary="Revoke an API key (admin)")
async def revoke_key(request: Request, key_id: str) -> dict[str, Any]:
    await authorize(request, frozenset({"admin"}))
    key = await anyio.to_thread.run_sync(_keys(request).revoke, key_id)
    return {"key": key.to_dict()}

"""HTTP face of the registry: models, versions, aliases, deployments and the audit trail.

Reads need the `read` scope, changes `write`.
"""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, Depends, Request

from shipyard.access.api import require
from shipyard.core.errors import MalformedRequest
from shipyard.registry._registry import Registry

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["registry"])
READ = [Depends(require("read"))]
WRITE = [Depends(require("write"))]


def _registry(request: Request) -> Registry:
    registry: Registry = request.app.state.registry
    return registry


def _version(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise MalformedRequest(f"version {text!r} must be a positive integer")
    return int(text)


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        body = await request.json()
    except ValueError as error:
        raise MalformedRequest(f"the request body is not valid JSON: {error}") from None
    if not isinstance(body, dict):
        raise MalformedRequest("the request body must be a JSON object")
    return body


@router.get("/models", summary="List registered models", dependencies=READ)
async def list_models(request: Request) -> dict[str, Any]:
    models = await anyio.to_thread.run_sync(_registry(request).list_models)
    return {"models": [m.to_dict() for m in models]}


@router.get("/models/{name}", summary="A model and its versions", dependencies=READ)
async def show_model(request: Request, name: str) -> dict[str, Any]:
    registry = _registry(request)
    model = await anyio.to_thread.run_sync(registry.get_model, name)
    versions = await anyio.to_thread.run_sync(registry.list_versions, name)
    return {**model.to_dict(), "versions": [v.to_dict() for v in versions]}


@router.get("/models/{name}/versions/{version}", summary="One version", dependencies=READ)
async def show_version(request: Request, name: str, version: str) -> dict[str, Any]:
    record = await anyio.to_thread.run_sync(_registry(request).get_version, name, _version(version))
    return record.to_dict()


@router.get(
    "/models/{name}/history", summary="Audit trail of a model, newest first", dependencies=READ
)
async def history(request: Request, name: str, limit: int = 100) -> dict[str, Any]:
    events = await anyio.to_thread.run_sync(
        lambda: _registry(request).history(name, limit=min(max(limit, 1), 1000))
    )
    return {"events": [e.to_dict() for e in events]}


@router.put(
    "/models/{name}/aliases/{alias}", summary="Point an alias at a version", dependencies=WRITE
)
async def set_alias(request: Request, name: str, alias: str) -> dict[str, Any]:
    body = await _body(request)
    version = body.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise MalformedRequest('send {"version": N} with the version the alias should point at')
    move = await anyio.to_thread.run_sync(_registry(request).set_alias, name, version, alias)
    return move.to_dict()


@router.get(
    "/models/{name}/deployment", summary="The live deployment and its history", dependencies=READ
)
async def deployment(request: Request, name: str, limit: int = 20) -> dict[str, Any]:
    registry = _registry(request)
    revisions = await anyio.to_thread.run_sync(
        lambda: registry.deployment_history(name, limit=min(max(limit, 1), 500))
    )
    return {
        "current": revisions[0].to_dict() if revisions else None,
        "history": [d.to_dict() for d in revisions],
    }


@router.post(
    "/models/{name}/deployment",
    summary="Deploy a version (all traffic, canary, A/B or shadow)",
    dependencies=WRITE,
)
async def deploy(request: Request, name: str) -> dict[str, Any]:
    body = await _body(request)
    version = body.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise MalformedRequest(
            'send {"version": N} and optionally "canary": percent, "ab": percent, "shadow": true, '
            '"routing_field": "customer_id", "reason": "..."'
        )
    for field in ("canary", "ab"):
        if body.get(field) is not None and not isinstance(body[field], int | float):
            raise MalformedRequest(f"'{field}' must be a percentage")
    result = await anyio.to_thread.run_sync(
        lambda: _registry(request).deploy(
            name,
            version,
            canary=body.get("canary"),
            ab=body.get("ab"),
            shadow=bool(body.get("shadow", False)),
            routing_field=body.get("routing_field"),
            reason=str(body.get("reason") or ""),
        )
    )
    return result.to_dict()


@router.post(
    "/models/{name}/rollback", summary="Return to the previous deployment", dependencies=WRITE
)
async def rollback(request: Request, name: str) -> dict[str, Any]:
    body = await _body(request)
    result = await anyio.to_thread.run_sync(
        lambda: _registry(request).rollback(name, reason=str(body.get("reason") or ""))
    )
    return result.to_dict()

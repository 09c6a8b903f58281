"""Read-only HTTP face of the registry: models, versions and their audit trail."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from shipyard.core.errors import MalformedRequest
from shipyard.registry._registry import Registry

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["registry"])


def _registry(request: Request) -> Registry:
    registry: Registry = request.app.state.registry
    return registry


@router.get("/models", summary="List registered models")
def list_models(request: Request) -> dict[str, Any]:
    return {"models": [m.to_dict() for m in _registry(request).list_models()]}


@router.get("/models/{name}", summary="A model and its versions")
def show_model(request: Request, name: str) -> dict[str, Any]:
    registry = _registry(request)
    model = registry.get_model(name)
    return {**model.to_dict(), "versions": [v.to_dict() for v in registry.list_versions(name)]}


@router.get("/models/{name}/versions/{version}", summary="One version")
def show_version(request: Request, name: str, version: str) -> dict[str, Any]:
    if not version.isdigit() or int(version) < 1:
        raise MalformedRequest(f"version {version!r} must be a positive integer")
    return _registry(request).get_version(name, int(version)).to_dict()


@router.get("/models/{name}/history", summary="Audit trail of a model, newest first")
def history(request: Request, name: str, limit: int = 100) -> dict[str, Any]:
    return {
        "events": [
            e.to_dict() for e in _registry(request).history(name, limit=min(max(limit, 1), 1000))
        ]
    }

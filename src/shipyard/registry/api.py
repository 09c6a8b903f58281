"""HTTP face of the registry: models, versions, aliases, deployments and the audit trail.

Reads need the `read` scope, changes `write`, deleting a model or version `admin`. A key bound
to a model sees and changes only that model; keys other than admin keys never see local paths.
"""

# no `from __future__ import annotations`: FastAPI reads the annotations of routes defined
# inside the router factory, which name its local dependencies

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt

from shipyard.access.api import Caller, Guard
from shipyard.core import MAX_VERSION
from shipyard.core.api import GUARDED, JSONRoute, Limit, ModelName, VersionPath, error_responses
from shipyard.registry._registry import Registry

__all__ = ["DeployRequest", "ModelOut", "VersionOut", "router"]

AliasPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,63}$",
        description="an alias, e.g. production or champion",
    ),
]
_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
VersionNumber = Annotated[StrictInt, Field(ge=1, le=MAX_VERSION)]
Percent = Annotated[StrictFloat | StrictInt, Field(gt=0, lt=100)]
Reason = Annotated[str, Field(max_length=1000, pattern=_PRINTABLE)]


class ModelOut(BaseModel):
    name: str
    description: str
    created_at: datetime
    created_by: str
    latest_version: int | None
    version_count: int
    aliases: dict[str, int]


class ModelList(BaseModel):
    models: list[ModelOut]


class VersionOut(BaseModel):
    name: str
    version: int
    status: Literal["ready", "archived"]
    aliases: list[str]
    created_at: datetime
    created_by: str
    description: str
    purpose: str
    flavour: str
    runtime: str
    task: str
    threshold: float | None
    signature: dict[str, Any]
    metrics: dict[str, Any]
    params: dict[str, Any]
    tags: dict[str, Any]
    features: list[str]
    data_fingerprint: dict[str, Any] | None
    bundle_path: str
    size_bytes: int
    run_id: str | None
    lineage: dict[str, Any] | None


class ModelDetail(ModelOut):
    versions: list[VersionOut]


class AuditEventOut(BaseModel):
    id: int
    at: datetime
    actor: str = Field(description="who: `key <id> (<name>)` over HTTP, the OS user at the CLI")
    action: str
    model: str | None
    version: int | None
    details: dict[str, Any]


class Events(BaseModel):
    events: list[AuditEventOut]


class AliasRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: VersionNumber = Field(description="the version the alias should point at")


class AliasMoveOut(BaseModel):
    name: str
    alias: str
    version: int
    previous: int | None


class VariantOut(BaseModel):
    version: int
    weight: float
    role: Literal["primary", "canary", "ab", "shadow"]


class DeploymentOut(BaseModel):
    model: str
    revision: int
    variants: list[VariantOut] = Field(description="empty when serving was stopped")
    routing_field: str | None
    previous_revision: int | None
    created_at: datetime | None
    created_by: str
    reason: str


class DeploymentState(BaseModel):
    current: DeploymentOut | None
    history: list[DeploymentOut]


class DeployRequest(BaseModel):
    """A version to deploy: all traffic, or a canary / A-B share, or a shadow."""

    model_config = ConfigDict(extra="forbid")

    version: VersionNumber
    canary: Percent | None = Field(default=None, description="percent of traffic, 0-100")
    ab: Percent | None = Field(default=None, description="percent of traffic, 0-100")
    shadow: bool = Field(default=False, description="copy every request to it; never answers")
    routing_field: str | None = Field(
        default=None,
        max_length=128,
        pattern=_PRINTABLE,
        description="record field that keeps a customer on one variant, e.g. customer_id",
    )
    reason: Reason = ""


class ReasonRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reason = ""


class Deleted(BaseModel):
    model: str
    versions: list[int] = Field(description="the versions deleted")


def router(registry: Registry, guard: Guard) -> APIRouter:
    """Routes of the registry over `registry`, each behind `guard`."""
    api = APIRouter(
        prefix="/v1/models",
        tags=["registry"],
        route_class=JSONRoute,
        responses=error_responses(*GUARDED, 404),
    )
    read, write, admin = guard.require("read"), guard.require("write"), guard.require("admin")
    changes = error_responses(409, 413, 415, 422)

    @api.get("", response_model=ModelList, summary="List registered models")
    def list_models(caller: Annotated[Caller, read]) -> dict[str, Any]:
        """Every model the key may see (a key bound to a model sees that one)."""
        models = [m for m in registry.list_models() if caller.may_see(m.name)]
        return {"models": [m.to_dict() for m in models]}

    @api.get("/{name}", response_model=ModelDetail, summary="A model and its versions")
    def show_model(name: ModelName, caller: Annotated[Caller, read]) -> dict[str, Any]:
        model = registry.get_model(name)
        versions = registry.list_versions(name)
        return caller.shown({**model.to_dict(), "versions": [v.to_dict() for v in versions]})  # type: ignore[no-any-return]

    @api.get("/{name}/versions/{version}", response_model=VersionOut, summary="One version")
    def show_version(
        name: ModelName, version: VersionPath, caller: Annotated[Caller, read]
    ) -> dict[str, Any]:
        return caller.shown(registry.get_version(name, version).to_dict())  # type: ignore[no-any-return]

    @api.get("/{name}/history", response_model=Events, summary="Audit trail, newest first")
    def history(
        name: ModelName, caller: Annotated[Caller, read], limit: int = Limit(100, 1000)
    ) -> dict[str, Any]:
        events = registry.history(name, limit=limit)
        return caller.shown({"events": [e.to_dict() for e in events]})  # type: ignore[no-any-return]

    @api.put(
        "/{name}/aliases/{alias}",
        response_model=AliasMoveOut,
        responses=changes,
        summary="Point an alias at a version",
    )
    def set_alias(
        name: ModelName, alias: AliasPath, body: AliasRequest, caller: Annotated[Caller, write]
    ) -> dict[str, Any]:
        return registry.acting_as(caller.actor).set_alias(name, body.version, alias).to_dict()  # type: ignore[no-any-return]

    @api.delete(
        "/{name}/aliases/{alias}",
        response_model=AliasMoveOut,
        responses=changes,
        summary="Remove an alias",
    )
    def remove_alias(
        name: ModelName, alias: AliasPath, caller: Annotated[Caller, write]
    ) -> dict[str, Any]:
        return registry.acting_as(caller.actor).remove_alias(name, alias).to_dict()  # type: ignore[no-any-return]

    @api.post(
        "/{name}/versions/{version}/archive",
        response_model=VersionOut,
        responses=changes,
        summary="Archive a version (it stops being deployable)",
    )
    def archive(
        name: ModelName, version: VersionPath, caller: Annotated[Caller, write]
    ) -> dict[str, Any]:
        record = registry.acting_as(caller.actor).archive(name, version)
        return caller.shown(record.to_dict())  # type: ignore[no-any-return]

    @api.post(
        "/{name}/versions/{version}/unarchive",
        response_model=VersionOut,
        responses=changes,
        summary="Bring an archived version back",
    )
    def unarchive(
        name: ModelName, version: VersionPath, caller: Annotated[Caller, write]
    ) -> dict[str, Any]:
        record = registry.acting_as(caller.actor).unarchive(name, version)
        return caller.shown(record.to_dict())  # type: ignore[no-any-return]

    @api.delete(
        "/{name}/versions/{version}",
        response_model=Deleted,
        responses=changes,
        summary="Delete a version (not while it has an alias or serves)",
    )
    def delete_version(
        name: ModelName, version: VersionPath, caller: Annotated[Caller, admin]
    ) -> dict[str, Any]:
        deleted = registry.acting_as(caller.actor).delete(name, version)
        return {"model": name, "versions": deleted}

    @api.delete(
        "/{name}",
        response_model=Deleted,
        responses=changes,
        summary="Delete a model and all its versions (not while one has an alias or serves)",
    )
    def delete_model(name: ModelName, caller: Annotated[Caller, admin]) -> dict[str, Any]:
        deleted = registry.acting_as(caller.actor).delete(name)
        return {"model": name, "versions": deleted}

    @api.get(
        "/{name}/deployment",
        response_model=DeploymentState,
        summary="The live deployment and its history",
    )
    def deployment(
        name: ModelName, caller: Annotated[Caller, read], limit: int = Limit(20, 500)
    ) -> dict[str, Any]:
        revisions = registry.deployment_history(name, limit=limit)
        return {
            "current": revisions[0].to_dict() if revisions else None,
            "history": [d.to_dict() for d in revisions],
        }

    @api.post(
        "/{name}/deployment",
        response_model=DeploymentOut,
        responses=changes,
        summary="Deploy a version (all traffic, canary, A/B or shadow)",
    )
    def deploy(name: ModelName, body: DeployRequest, caller: Annotated[Caller, write]) -> Any:
        result = registry.acting_as(caller.actor).deploy(
            name,
            body.version,
            canary=None if body.canary is None else float(body.canary),
            ab=None if body.ab is None else float(body.ab),
            shadow=body.shadow,
            routing_field=body.routing_field,
            reason=body.reason,
        )
        return result.to_dict()

    @api.delete(
        "/{name}/deployment",
        response_model=DeploymentOut,
        responses=changes,
        summary="Stop serving the model (rollback brings the last deployment back)",
    )
    def stop(name: ModelName, caller: Annotated[Caller, write]) -> Any:
        return registry.acting_as(caller.actor).stop(name).to_dict()

    @api.post(
        "/{name}/rollback",
        response_model=DeploymentOut,
        responses=changes,
        summary="Return to the previous deployment",
    )
    def rollback(
        name: ModelName, caller: Annotated[Caller, write], body: ReasonRequest | None = None
    ) -> Any:
        reason = body.reason if body is not None else ""
        return registry.acting_as(caller.actor).rollback(name, reason=reason).to_dict()

    return api

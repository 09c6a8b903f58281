"""HTTP face of the closed loop: pipelines of a model and the jobs queue (read scope)."""

# no `from __future__ import annotations`: FastAPI reads the annotations of routes defined
# inside the router factory, which name its local dependencies

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from shipyard.access.api import Caller, Guard
from shipyard.core.api import GUARDED, JSONRoute, Limit, ModelName, error_responses
from shipyard.registry import Registry
from shipyard.retraining import _repository as repo
from shipyard.retraining._pipeline import decide_by_person
from shipyard.store import JobQueue

__all__ = ["JobOut", "PipelineOut", "router"]


class PipelineOut(BaseModel):
    id: int
    model: str
    status: str
    trigger: dict[str, Any]
    champion_version: int | None
    candidate_version: int | None
    run_id: str | None
    steps: list[dict[str, Any]]
    created_at: datetime
    updated_at: datetime


class PipelineList(BaseModel):
    pipelines: list[PipelineOut]


class PersonsVerdict(BaseModel):
    """Which candidate a person approves or rejects."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, le=2**31 - 1, description="the candidate version")


class JobOut(BaseModel):
    id: int
    kind: str
    model: str | None
    payload: dict[str, Any]
    status: Literal["queued", "running", "done", "failed"]
    run_at: datetime
    attempts: int
    max_attempts: int
    lease_until: datetime | None
    leased_by: str | None
    last_error: str | None
    result: dict[str, Any] | None
    dedup_key: str | None
    created_at: datetime
    updated_at: datetime


class JobList(BaseModel):
    jobs: list[JobOut]


def router(registry: Registry, guard: Guard) -> APIRouter:
    """Pipelines and jobs, read from `registry`'s database."""
    api = APIRouter(
        prefix="/v1",
        tags=["retraining"],
        route_class=JSONRoute,
        responses=error_responses(*GUARDED, 404),
    )
    read = guard.require("read")
    queue = JobQueue(registry.database)

    @api.get(
        "/models/{name}/pipelines",
        response_model=PipelineList,
        summary="Retraining pipelines of a model, newest first",
    )
    def pipelines(
        name: ModelName, caller: Annotated[Caller, read], limit: int = Limit(20, 200)
    ) -> dict[str, Any]:
        registry.get_model(name)
        found = registry.database.read(lambda conn: repo.list_for(conn, name, limit))
        return caller.shown({"pipelines": found})  # type: ignore[no-any-return]

    write = guard.require("write")

    @api.post(
        "/models/{name}/pipelines/approve",
        response_model=PipelineOut,
        responses=error_responses(409, 413, 415, 422),
        summary="Approve a candidate waiting for a person: promote it",
    )
    def approve(
        name: ModelName, body: PersonsVerdict, caller: Annotated[Caller, write]
    ) -> dict[str, Any]:
        """The candidate, waiting for approval or still in its canary, is deployed to all
        traffic and becomes champion (409 when it is neither, or was decided meanwhile)."""
        record = decide_by_person(registry.acting_as(caller.actor), name, body.version, "approve")
        return caller.shown(record)  # type: ignore[no-any-return]

    @api.post(
        "/models/{name}/pipelines/reject",
        response_model=PipelineOut,
        responses=error_responses(409, 413, 415, 422),
        summary="Reject a candidate waiting for a person: roll it back",
    )
    def reject(
        name: ModelName, body: PersonsVerdict, caller: Annotated[Caller, write]
    ) -> dict[str, Any]:
        """The candidate, waiting for approval or still in its canary, is rolled back: the
        deployment goes back to the champion alone (409 when it is neither)."""
        record = decide_by_person(registry.acting_as(caller.actor), name, body.version, "reject")
        return caller.shown(record)  # type: ignore[no-any-return]

    @api.get("/jobs", response_model=JobList, summary="Background jobs, newest first")
    def jobs(
        caller: Annotated[Caller, read],
        status: Literal["queued", "running", "done", "failed"] | None = None,
        model: Annotated[
            str | None, Query(max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
        ] = None,
        limit: int = Limit(100, 1000),
    ) -> dict[str, Any]:
        """A key bound to a model sees that model's jobs."""
        found = queue.list_jobs(status=status, model=caller.only(model), limit=limit)
        return caller.shown({"jobs": [j.to_dict() for j in found]})  # type: ignore[no-any-return]

    return api

"""HTTP face of experiment tracking (read scope).

A key bound to a model sees the runs that trained that model's versions; which runs those
are is the registry's to say, so the server passes a `runs_of(model)` look-up in.
"""

# no `from __future__ import annotations`: FastAPI reads the annotations of routes defined
# inside the router factory, which name its local dependencies

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel

from shipyard.access.api import Caller, Guard
from shipyard.core.api import GUARDED, JSONRoute, Limit, error_responses
from shipyard.core.errors import MalformedRequest, NotFound
from shipyard.tracking._run import Tracker

__all__ = ["RunOut", "router"]

_RUN_ID = r"^[0-9a-f]{32}$"
RunId = Annotated[str, Path(pattern=_RUN_ID, description="a run's 32-hex-digit id")]


class RunOut(BaseModel):
    id: str
    experiment: str
    name: str
    status: str
    started_at: datetime
    ended_at: datetime | None
    params: dict[str, Any]
    tags: dict[str, Any]
    metrics: dict[str, float | None]
    git: dict[str, Any]
    entrypoint: str
    datasets: dict[str, Any]
    artifacts: dict[str, Any]
    created_by: str
    error: str | None


class RunList(BaseModel):
    runs: list[RunOut]


class MetricPoint(BaseModel):
    key: str
    step: int
    value: float | None
    at: datetime


class RunDetail(RunOut):
    metric_history: list[MetricPoint]


class Comparison(BaseModel):
    runs: list[str]
    params: dict[str, list[Any]]
    metrics: dict[str, list[float | None]]
    differs: list[str]


def router(tracker: Tracker, guard: Guard, runs_of: Callable[[str], set[str]]) -> APIRouter:
    """`/v1/runs` over `tracker`; `runs_of(model)` gives the runs behind a model's versions."""
    api = APIRouter(
        prefix="/v1/runs",
        tags=["tracking"],
        route_class=JSONRoute,
        responses=error_responses(*GUARDED, 404),
    )
    read = guard.require("read")

    def visible(caller: Caller, run_id: str) -> None:
        if caller.key.model is not None and run_id not in runs_of(caller.key.model):
            raise NotFound(f"no run {run_id!r} (shipyard runs list)")

    @api.get("", response_model=RunList, summary="Runs, newest first")
    def list_runs(
        caller: Annotated[Caller, read],
        experiment: Annotated[
            str | None, Query(max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")
        ] = None,
        limit: int = Limit(100, 1000),
    ) -> dict[str, Any]:
        among = runs_of(caller.key.model) if caller.key.model is not None else None
        runs = tracker.list_runs(experiment, limit, among=among)
        return caller.shown({"runs": [r.to_dict() for r in runs]})  # type: ignore[no-any-return]

    @api.get("/compare", response_model=Comparison, summary="Runs side by side")
    def compare(
        caller: Annotated[Caller, read],
        ids: Annotated[
            str,
            Query(
                max_length=33 * 20,
                pattern=r"^[0-9a-f]{32}(,[0-9a-f]{32})*$",
                description="two to twenty run ids, comma-separated",
            ),
        ],
    ) -> dict[str, Any]:
        run_ids = ids.split(",")
        if len(run_ids) < 2:
            raise MalformedRequest("give at least two run ids: /v1/runs/compare?ids=ID1,ID2")
        for run_id in run_ids:
            visible(caller, run_id)
        return caller.shown(tracker.compare(run_ids))  # type: ignore[no-any-return]

    @api.get("/{run_id}", response_model=RunDetail, summary="One run with its metric history")
    def show(run_id: RunId, caller: Annotated[Caller, read]) -> dict[str, Any]:
        visible(caller, run_id)
        run = tracker.get(run_id)
        return caller.shown(  # type: ignore[no-any-return]
            {**run.to_dict(), "metric_history": tracker.metric_history(run_id)}
        )

    return api

"""HTTP face of experiment tracking (read scope)."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, Depends, Request

from shipyard.access.api import require
from shipyard.core.errors import MalformedRequest
from shipyard.tracking._run import Tracker

__all__ = ["router"]

router = APIRouter(prefix="/v1/runs", tags=["tracking"], dependencies=[Depends(require("read"))])


def _tracker(request: Request) -> Tracker:
    registry = request.app.state.registry
    return Tracker(registry.database, registry.artifacts, actor=registry.actor)


@router.get("", summary="Runs, newest first")
async def list_runs(
    request: Request, experiment: str | None = None, limit: int = 100
) -> dict[str, Any]:
    runs = await anyio.to_thread.run_sync(
        lambda: _tracker(request).list_runs(experiment, min(max(limit, 1), 1000))
    )
    return {"runs": [r.to_dict() for r in runs]}


@router.get("/compare", summary="Runs side by side")
async def compare(request: Request, ids: str) -> dict[str, Any]:
    run_ids = [i for i in ids.split(",") if i]
    if len(run_ids) < 2:
        raise MalformedRequest("give at least two run ids: /v1/runs/compare?ids=ID1,ID2")
    return await anyio.to_thread.run_sync(lambda: _tracker(request).compare(run_ids))


@router.get("/{run_id}", summary="One run with its metric history")
async def show(request: Request, run_id: str) -> dict[str, Any]:
    tracker = _tracker(request)
    run = await anyio.to_thread.run_sync(tracker.get, run_id)
    history = await anyio.to_thread.run_sync(tracker.metric_history, run_id)
    return {**run.to_dict(), "metric_history": history}

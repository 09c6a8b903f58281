"""HTTP face of the closed loop: pipelines of a model and the jobs queue (read scope)."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, Depends, Request

from shipyard.access.api import require
from shipyard.retraining import _repository as repo
from shipyard.store import JobQueue

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["retraining"], dependencies=[Depends(require("read"))])


@router.get("/models/{name}/pipelines", summary="Retraining pipelines of a model, newest first")
async def pipelines(request: Request, name: str, limit: int = 20) -> dict[str, Any]:
    registry = request.app.state.registry

    def load() -> list[dict[str, Any]]:
        registry.get_model(name)
        with registry.database.transaction() as conn:
            return repo.list_for(conn, name, min(max(limit, 1), 200))

    return {"pipelines": await anyio.to_thread.run_sync(load)}


@router.get("/jobs", summary="Background jobs, newest first")
async def jobs(
    request: Request, status: str | None = None, model: str | None = None, limit: int = 100
) -> dict[str, Any]:
    queue = JobQueue(request.app.state.registry.database)
    found = await anyio.to_thread.run_sync(
        lambda: queue.list_jobs(status=status, model=model, limit=min(max(limit, 1), 1000))
    )
    return {"jobs": [j.to_dict() for j in found]}

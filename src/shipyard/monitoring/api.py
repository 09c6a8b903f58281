"""HTTP face of monitoring: the report of a model, alert rules, and alerts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from shipyard.access.api import require
from shipyard.core.errors import MalformedRequest
from shipyard.monitoring import _repository as repo
from shipyard.monitoring._html import render_html
from shipyard.monitoring._monitor import Monitor
from shipyard.monitoring._rules import parse_window
from shipyard.registry import Registry

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["monitoring"])
READ = [Depends(require("read"))]
WRITE = [Depends(require("write"))]


def _monitor(request: Request) -> Monitor:
    monitor: Monitor = request.app.state.monitor
    return monitor


def _report(request: Request, name: str, window: str, periods: int, fresh: bool) -> dict[str, Any]:
    """The latest snapshot of this window length when it is recent enough, else a new run."""
    monitor = _monitor(request)
    registry: Registry = request.app.state.registry
    registry.get_model(name)
    step = parse_window(window)
    if not 1 <= periods <= 400:
        raise MalformedRequest("periods must be between 1 and 400")
    if not fresh:
        with registry.database.transaction() as conn:
            found = repo.snapshots(conn, name, window, 1)
        if found and found[0]["period_end"] >= datetime.now(UTC) - min(step, timedelta(hours=1)):
            summary: dict[str, Any] = found[0]["summary"]
            return summary
    return monitor.run(name, window=window, periods=periods).to_dict()


@router.get("/models/{name}/monitoring", summary="Monitoring report of a model", dependencies=READ)
async def monitoring(
    request: Request, name: str, window: str = "1d", periods: int = 7, fresh: bool = False
) -> dict[str, Any]:
    """Per version: performance per window (realised and estimated), data quality, drift, concept
    drift, root causes and OK / warning / failing checks. Served from the latest snapshot when
    one is recent, else computed now (`fresh=true` forces that)."""
    return await anyio.to_thread.run_sync(lambda: _report(request, name, window, periods, fresh))


@router.get(
    "/models/{name}/monitoring/report.html",
    summary="The report as a standalone HTML page",
    dependencies=READ,
)
async def monitoring_html(
    request: Request, name: str, window: str = "1d", periods: int = 7, fresh: bool = False
) -> HTMLResponse:
    report = await anyio.to_thread.run_sync(lambda: _report(request, name, window, periods, fresh))
    return HTMLResponse(render_html(report))


@router.get("/alerts", summary="Alerts, newest first", dependencies=READ)
async def alerts(
    request: Request, model: str | None = None, status: str | None = None, limit: int = 100
) -> dict[str, Any]:
    manager = _monitor(request).alert_manager
    assert manager is not None
    found = await anyio.to_thread.run_sync(
        lambda: manager.alerts(model, status, min(max(limit, 1), 1000))
    )
    return {"alerts": found}


@router.get("/models/{name}/alert-rules", summary="Alert rules of a model", dependencies=READ)
async def rules(request: Request, name: str) -> dict[str, Any]:
    manager = _monitor(request).alert_manager
    assert manager is not None
    return {"rules": await anyio.to_thread.run_sync(manager.rules, name)}


@router.post(
    "/models/{name}/alert-rules", status_code=201, summary="Add an alert rule", dependencies=WRITE
)
async def add_rule(request: Request, name: str) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("expression"), str):
        raise MalformedRequest(
            'send {"expression": "accuracy < 0.90 over 7d with >= 500 labels", "severity": "warning", "webhooks": []}'
        )
    manager = _monitor(request).alert_manager
    assert manager is not None
    webhooks = body.get("webhooks") or []
    if not isinstance(webhooks, list) or not all(isinstance(u, str) for u in webhooks):
        raise MalformedRequest("'webhooks' must be a list of URLs")
    return await anyio.to_thread.run_sync(
        lambda: manager.add_rule(
            name,
            body["expression"],
            severity=str(body.get("severity", "warning")),
            webhooks=webhooks,
        )
    )


@router.delete("/alert-rules/{rule_id}", summary="Remove an alert rule", dependencies=WRITE)
async def remove_rule(request: Request, rule_id: int) -> dict[str, Any]:
    manager = _monitor(request).alert_manager
    assert manager is not None
    await anyio.to_thread.run_sync(manager.remove_rule, rule_id)
    return {"removed": rule_id}

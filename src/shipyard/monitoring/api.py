"""HTTP face of monitoring: a model's report, alert rules, and alerts.

Reading never writes or calls out: `GET .../monitoring` answers the latest snapshot, or a
report computed now and not stored. A run that stores a snapshot, evaluates the alert rules
and delivers their webhooks is a change (`POST .../monitoring`, write scope). Both are
bounded: the span of windows, and how many reports a server computes at once (more: 503).
"""

# no `from __future__ import annotations`: FastAPI reads the annotations of routes defined
# inside the router factory, which name its local dependencies

from datetime import datetime
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Path, Query
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from shipyard.access.api import Caller, Guard
from shipyard.core.api import GUARDED, JSONRoute, Limit, ModelName, error_responses
from shipyard.monitoring._alerts import AlertManager
from shipyard.monitoring._html import render_html
from shipyard.monitoring._monitor import Monitor
from shipyard.monitoring._offload import ReportProcess
from shipyard.monitoring._report import AlertRule, ReportRecord
from shipyard.monitoring._windows import MAX_PERIODS

__all__ = ["AlertOut", "MonitoringReportOut", "NewRule", "RuleOut", "router"]

_WINDOW = r"^\s*\d{1,7}\s*[mhdwMHDW]\s*$"
Window = Annotated[
    str,
    Query(max_length=16, pattern=_WINDOW, description="window length: 30m, 1h, 1d, 7d or 2w"),
]
Periods = Annotated[int, Query(ge=1, le=MAX_PERIODS, description="how many windows, ending now")]
RuleId = Annotated[int, Path(ge=1, le=2**31 - 1, description="an alert rule's id")]
_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"


class Period(BaseModel):
    start: datetime
    end: datetime


class MonitoringReportOut(BaseModel):
    """Per version: performance per window (realised and estimated), data quality, drift,
    concept drift, root causes and OK / warning / failing checks."""

    model_config = ConfigDict(extra="allow")

    model: str
    window: str
    period: Period
    computed_at: datetime
    versions: dict[str, dict[str, Any]]
    alerts: list[dict[str, Any]]


class MonitoringRun(BaseModel):
    model_config = ConfigDict(extra="forbid")

    window: str = Field(default="1d", max_length=16, pattern=_WINDOW)
    periods: int = Field(default=7, ge=1, le=MAX_PERIODS)


class AlertOut(BaseModel):
    id: int
    rule_id: int
    model: str
    version: int | None
    status: Literal["firing", "resolved"]
    opened_at: datetime
    last_seen_at: datetime
    resolved_at: datetime | None
    value: float | None
    evidence: dict[str, Any]
    deliveries: list[dict[str, Any]]


class AlertList(BaseModel):
    alerts: list[AlertOut]


class RuleOut(BaseModel):
    id: int
    model: str
    expression: str
    severity: Literal["warning", "critical"]
    webhooks: list[str]
    enabled: bool
    created_at: datetime
    created_by: str


class RuleList(BaseModel):
    rules: list[RuleOut]


class NewRule(BaseModel):
    """An alert rule: `accuracy < 0.90 over 7d with >= 500 labels`, `psi(amount) > 0.2`."""

    model_config = ConfigDict(extra="forbid")

    expression: str = Field(
        min_length=1,
        max_length=500,
        pattern=_PRINTABLE,
        examples=["accuracy < 0.90 over 7d with >= 500 labels"],
    )
    severity: Literal["warning", "critical"] = "warning"
    webhooks: list[
        Annotated[str, Field(max_length=2048, pattern=r"^https?://[^\s\x00-\x1f\x7f]+$")]
    ] = Field(default_factory=list, max_length=10, description="URLs each alert is POSTed to")


class RemovedRule(BaseModel):
    removed: int


def router(monitor: Monitor, guard: Guard, reports: ReportProcess) -> APIRouter:
    """Routes of monitoring over `monitor` (which must have an alert manager); reports are
    computed by `reports`, off the prediction path."""
    manager = monitor.alert_manager
    assert isinstance(manager, AlertManager)
    alerts_of: AlertManager = manager
    api = APIRouter(
        prefix="/v1",
        tags=["monitoring"],
        route_class=JSONRoute,
        responses=error_responses(*GUARDED, 404),
    )
    read, write = guard.require("read"), guard.require("write")

    async def rule_model(rule_id: RuleId) -> list[str]:
        return [await anyio.to_thread.run_sync(alerts_of.model_of_rule, rule_id)]

    @api.get(
        "/models/{name}/monitoring",
        response_model=MonitoringReportOut,
        summary="Monitoring report of a model (read-only)",
    )
    def monitoring(
        name: ModelName,
        caller: Annotated[Caller, read],
        window: Window = "1d",
        periods: Periods = 7,
    ) -> ReportRecord:
        """The latest snapshot of this window length when it is recent, else a report computed
        now and not stored. To store one and evaluate the alert rules: POST."""
        return monitor.latest(name, window=window.strip(), periods=periods, compute=reports.report)

    @api.get(
        "/models/{name}/monitoring/report.html",
        response_class=HTMLResponse,
        responses={200: {"content": {"text/html": {}}, "description": "a standalone page"}},
        summary="The report as a standalone HTML page",
    )
    def monitoring_html(
        name: ModelName,
        caller: Annotated[Caller, read],
        window: Window = "1d",
        periods: Periods = 7,
    ) -> HTMLResponse:
        return HTMLResponse(
            render_html(
                monitor.latest(name, window=window.strip(), periods=periods, compute=reports.report)
            )
        )

    @api.post(
        "/models/{name}/monitoring",
        response_model=MonitoringReportOut,
        responses=error_responses(413, 415, 422),
        summary="Run monitoring now: store a snapshot, evaluate the alert rules",
    )
    def run_monitoring(
        name: ModelName, caller: Annotated[Caller, write], body: MonitoringRun | None = None
    ) -> ReportRecord:
        """Alerts that fire or resolve are delivered to their webhooks."""
        spec = body or MonitoringRun()
        monitor.registry.get_model(name)
        return reports.report(
            name, spec.window.strip(), spec.periods, record=True, actor=caller.actor
        )

    @api.get("/alerts", response_model=AlertList, summary="Alerts, newest first")
    def alerts(
        caller: Annotated[Caller, read],
        model: Annotated[
            str | None, Query(max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
        ] = None,
        status: Literal["firing", "resolved"] | None = None,
        limit: int = Limit(100, 1000),
    ) -> dict[str, Any]:
        """A key bound to a model sees that model's alerts."""
        return {"alerts": alerts_of.alerts(caller.only(model), status, limit)}

    @api.get("/models/{name}/alert-rules", response_model=RuleList, summary="Alert rules")
    def rules(name: ModelName, caller: Annotated[Caller, read]) -> dict[str, Any]:
        monitor.registry.get_model(name)
        return {"rules": alerts_of.rules(name)}

    @api.post(
        "/models/{name}/alert-rules",
        status_code=201,
        response_model=RuleOut,
        responses=error_responses(413, 415, 422),
        summary="Add an alert rule",
    )
    def add_rule(name: ModelName, body: NewRule, caller: Annotated[Caller, write]) -> AlertRule:
        return alerts_of.acting_as(caller.actor).add_rule(
            name, body.expression, severity=body.severity, webhooks=body.webhooks
        )

    @api.delete(
        "/alert-rules/{rule_id}", response_model=RemovedRule, summary="Remove an alert rule"
    )
    def remove_rule(
        rule_id: RuleId, caller: Annotated[Caller, guard.require("write", touches=rule_model)]
    ) -> dict[str, Any]:
        alerts_of.acting_as(caller.actor).remove_rule(rule_id)
        return {"removed": rule_id}

    return api

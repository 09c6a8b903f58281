"""What a monitoring run found: `MonitoringReport`, per version of the model, as snapshots,
the API, the HTML report and the CLI hold it (`to_dict()`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, NotRequired, TypedDict

from shipyard.core.values import jsonable
from shipyard.monitoring._logs import Period

__all__ = ["Alert", "AlertRule", "Check", "DataQuality", "Delivery", "MonitoringReport", "Status"]

Status = Literal["ok", "warning", "failing", "unknown"]


class Check(TypedDict):
    """One mark of a version's last window: `status` compares `value` with `target` (None:
    no target, or nothing measured yet: `unknown`); `note` says what it rests on."""

    name: str
    value: float | int | bool | None
    target: float | None
    status: Status
    note: str


class AlertRule(TypedDict):
    """An alert rule as stored: its expression, severity and the webhooks it posts to."""

    id: int
    model: str
    expression: str
    severity: str
    webhooks: list[str]
    enabled: bool
    created_at: datetime | None
    created_by: str


class Delivery(TypedDict):
    """The latest attempt to post an alert to one webhook: delivered (`status`), or failed
    (`error`, and `retry_at` while the retry policy has attempts left)."""

    url: str
    ok: bool
    attempts: int
    at: str
    status: NotRequired[int]
    error: NotRequired[str]
    retry_at: NotRequired[str]


class Alert(TypedDict):
    """One alert: a rule breached by one version, from `opened_at` until `resolved_at`."""

    id: int | None  # None until stored
    rule_id: int
    model: str
    version: int | None
    status: str  # firing | resolved
    opened_at: datetime
    last_seen_at: datetime
    resolved_at: NotRequired[datetime | None]
    value: float | None
    evidence: dict[str, Any]
    deliveries: list[Delivery]
    severity: NotRequired[str]  # the rule's, added when delivered


class DataQuality(TypedDict, total=False):
    """One feature's data quality in the last window against the reference sample."""

    missing_rate: float | None
    reference_missing_rate: float | None
    missing_increase: float
    missing_from_current: bool
    out_of_range_rate: float | None
    unseen_share: float | None
    unseen: Any
    violations: int


@dataclass
class MonitoringReport:
    """What one run found, per version; `to_dict()` is what snapshots and the API hold."""

    model: str
    window: str
    period: Period
    computed_at: datetime
    versions: dict[int, dict[str, Any]] = field(default_factory=dict)
    alerts: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = jsonable(
            {
                "model": self.model,
                "window": self.window,
                "period": {"start": self.period.start, "end": self.period.end},
                "computed_at": self.computed_at,
                "versions": {str(v): s for v, s in self.versions.items()},
                "alerts": self.alerts,
            }
        )
        return out

    @property
    def status(self) -> Status:
        marks = [c["status"] for s in self.versions.values() for c in s.get("checks", [])]
        return "failing" if "failing" in marks else "warning" if "warning" in marks else "ok"

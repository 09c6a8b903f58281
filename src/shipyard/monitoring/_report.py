"""What a monitoring run found: `MonitoringReport`, per version of the model, as snapshots,
the API, the HTML report and the CLI hold it (`to_dict()`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypedDict

from shipyard.core.values import jsonable
from shipyard.monitoring._logs import Period

__all__ = ["Check", "DataQuality", "MonitoringReport", "Status"]

Status = Literal["ok", "warning", "failing", "unknown"]


class Check(TypedDict):
    """One mark of a version's last window: `status` compares `value` with `target` (None:
    no target, or nothing measured yet: `unknown`); `note` says what it rests on."""

    name: str
    value: float | int | bool | None
    target: float | None
    status: Status
    note: str


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

"""What a monitoring run found: `MonitoringReport`, per version of the model, and the typed
records it is made of, as snapshots, the API, the HTML report and the CLI hold them
(`to_dict()` -> `ReportRecord`).

Times are datetimes while a run computes and ISO 8601 text once a report is stored or sent
(`Moment`); everything else has one type in both."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, NotRequired, final

# pydantic (the API's response models) reads these; before Python 3.12 it needs this TypedDict
from typing_extensions import TypedDict

from shipyard.core.values import jsonable
from shipyard.monitoring._logs import Period

__all__ = [
    "Alert",
    "AlertRule",
    "Bounds",
    "CalibrationBin",
    "CalibrationRecord",
    "Check",
    "ClassBreakdown",
    "ClassMetrics",
    "ColumnDriftRecord",
    "Concept",
    "Confusion",
    "DataQuality",
    "Delivery",
    "DriftRecord",
    "Estimates",
    "FeatureViewHealth",
    "KpiValue",
    "Metrics",
    "Moment",
    "MonitoringReport",
    "MovedFeature",
    "NotMeasured",
    "ReportRecord",
    "RootCause",
    "Segment",
    "Status",
    "VersionSummary",
    "Window",
]

Status = Literal["ok", "warning", "failing", "unknown"]
Moment = datetime | str
"""A datetime while a run computes; ISO 8601 text once the report is stored or sent."""

Metrics = dict[str, float | int | bool | None]
"""The last window's numbers by metric name, as rules and checks look them up
(`accuracy`, `mae`, `latency_p99`, `drift_share`, `estimated_accuracy`, ...)."""


class Check(TypedDict):
    """One mark of a version's last window: `status` compares `value` with `target` (None:
    no target, or nothing measured yet: `unknown`); `note` says what it rests on."""

    name: str
    value: float | int | bool | None
    target: float | None
    status: Status
    note: str


class Bounds(TypedDict):
    start: Moment
    end: Moment


@final  # no other keys: `"drift" in record` tells it from `NotMeasured`
class ColumnDriftRecord(TypedDict):
    """One column's drift verdict (`ColumnDrift.to_dict()`)."""

    column: str
    kind: str
    method: str
    statistic: float | None
    p_value: float | None
    p_value_adjusted: float | None
    effect: str
    effect_size: float | None
    threshold: float
    drift: bool
    status: str
    missing: dict[str, Any]
    stats: dict[str, Any]
    reason: str


@final
class NotMeasured(TypedDict, total=False):
    """A measure that could not be taken this window ({} or why not)."""

    note: str


class DriftRecord(TypedDict):
    """The data set's drift (`DriftReport.to_dict()`) and what it was measured against; a
    version without reference rows yet (no sample, fewer first answers than a reference
    takes) or without traffic has only the first three."""

    columns: dict[str, ColumnDriftRecord]
    drifted: list[str]
    drift_share: float
    rows_reference: NotRequired[int]
    rows_current: NotRequired[int]
    dataset_drift: NotRequired[bool]
    thresholds: NotRequired[dict[str, float]]
    missing_in_current: NotRequired[list[str]]
    schema_problems: NotRequired[list[str]]
    reference: NotRequired[str]  # what the window was compared with


class Concept(TypedDict):
    """The concept-drift detector on a classifier's right/wrong stream; `applies` is False
    (with a `note`) for a task it does not watch."""

    detected: bool
    changes: list[dict[str, Any]]
    labelled: int
    applies: NotRequired[bool]
    note: NotRequired[str]
    performance_change: NotRequired[bool]
    inputs_stable: NotRequired[bool]
    error_rate: NotRequired[float]


CalibrationBin = TypedDict(
    "CalibrationBin",
    {"from": float, "to": float, "count": int, "mean_score": float, "positive_rate": float},
)


class CalibrationRecord(TypedDict):
    """Reliability bins and the expected calibration error (None without labelled scores)."""

    bins: list[CalibrationBin]
    ece: float | None


class Estimates(TypedDict):
    """Whether the windows carry estimates before labels (`estimated`), and if not, why."""

    applies: bool
    note: NotRequired[str]


class MovedFeature(TypedDict):
    feature: str
    status: str
    effect: str
    effect_size: float
    reason: str


class Segment(TypedDict):
    """A categorical segment whose quality fell between the earlier windows and the last;
    accuracy and recall for a classifier, mean absolute error for a regressor."""

    feature: str
    segment: str
    labelled: int
    impact: float
    accuracy_before: NotRequired[float]
    accuracy_now: NotRequired[float]
    recall_before: NotRequired[float | None]
    recall_now: NotRequired[float | None]
    mae_before: NotRequired[float]
    mae_now: NotRequired[float]


class AttributionShift(TypedDict):
    """A feature whose contribution to the answers moved between the reference rows and the
    window: mean contribution (signed) and mean |contribution| in each."""

    feature: str
    reference_mean: float
    current_mean: float
    shift: float
    reference_abs: float
    current_abs: float


class Attributed(TypedDict, total=False):
    """How the model's answers were explained for the root cause: the method, the space of
    the contributions, how many rows of each, the features whose contributions moved most;
    or why they could not be."""

    method: str
    space: str
    reference_rows: int
    current_rows: int
    shifted: list[AttributionShift]
    unavailable: str


class RootCause(TypedDict, total=False):
    features: list[MovedFeature]
    segments: list[Segment]
    attributions: Attributed


ClassMetrics = TypedDict(
    "ClassMetrics",
    {
        "class": str,
        "support": int,
        "predicted": int,
        "precision": float,
        "recall": float,
        "f1": float,
    },
)


class Confusion(TypedDict):
    """A multiclass confusion matrix: rows are true classes, columns predicted ones."""

    classes: list[str]
    matrix: list[list[int]]


class ClassBreakdown(TypedDict):
    per_class: list[ClassMetrics]
    confusion: Confusion


class Window(TypedDict, total=False):
    """One window of one version (all its variants added up; `by_variant` holds them apart):
    traffic, latency and scores always; quality as the version's task measures it once labels
    are back (the other tasks' metrics are None); `estimated` before labels for a binary
    classifier."""

    window_start: Moment
    variant: str
    task: str
    volume: int
    throughput_per_s: float
    variants: dict[str, int]
    errors: int
    refused: int
    error_rate: float
    refused_rate: float
    latency_p50: float | None
    latency_p95: float | None
    latency_p99: float | None
    score_mean: float | None
    score_p50: float | None
    score_p90: float | None
    predicted_positive_rate: float | None
    labelled: int
    label_coverage: float
    accuracy: float | None
    precision: float | None
    recall: float | None
    f1: float | None
    false_positive_rate: float | None
    auc: float | None
    confusion: dict[str, Any]
    macro_precision: float | None
    macro_recall: float | None
    macro_f1: float | None
    weighted_f1: float | None
    per_class: list[ClassMetrics]
    mae: float | None
    rmse: float | None
    mean_residual: float | None
    r2: float | None
    unusable_labels: int
    estimated: dict[str, Any]


class FeatureViewHealth(TypedDict):
    """A feature view a version was trained on, as the online store holds it: how old its
    newest value is, and whether its last materialization drifted from the view's reference."""

    version: int | None
    store: str | None
    newest_event: Moment | None
    materialized_at: Moment | None
    freshness_seconds: float | None
    ttl_seconds: float | None
    drift_share: float | None
    drifted: list[str]


class KpiValue(TypedDict):
    """A business KPI declared beside the model (`kpis:` in shipyard.yaml), computed from the
    logs: over the report's whole range (`total`), its last window, and per window."""

    name: str
    expression: str
    total: float | None
    last: float | None
    windows: list[float | None]


class VersionSummary(TypedDict):
    """Everything one run found about one version."""

    version: int
    task: str | None
    window: str
    period: Bounds
    variants: list[str]
    windows: list[Window]
    by_variant: list[Window]
    drift: DriftRecord
    score_drift: ColumnDriftRecord | NotMeasured
    quality: dict[str, DataQuality]
    concept: Concept
    calibration: CalibrationRecord
    residual_drift: ColumnDriftRecord | NotMeasured
    estimates: Estimates
    root_cause: RootCause
    classes: NotRequired[ClassBreakdown]
    feature_views: NotRequired[dict[str, FeatureViewHealth]]
    kpis: NotRequired[list[KpiValue]]
    # per declared sensitive attribute: its groups' outcomes and the gaps (`_fairness`)
    fairness: NotRequired[dict[str, dict[str, Any]]]
    metrics: Metrics
    checks: list[Check]


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
    versions: dict[int, VersionSummary] = field(default_factory=dict)
    alerts: list[Alert] = field(default_factory=list)

    def to_dict(self) -> ReportRecord:
        out: ReportRecord = jsonable(
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
        marks = [c["status"] for s in self.versions.values() for c in s["checks"]]
        return "failing" if "failing" in marks else "warning" if "warning" in marks else "ok"


class ReportRecord(TypedDict):
    """A report as snapshots and the API hold it: versions keyed by their number as text."""

    model: str
    window: str
    period: Bounds
    computed_at: Moment
    versions: dict[str, VersionSummary]
    alerts: list[Alert]

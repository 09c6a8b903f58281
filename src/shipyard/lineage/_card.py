"""A model card: what a registered version is for, what it learned from, how well it does
against its targets overall and per group, what limits it, where it came from and who let it
into production (`shipyard models card NAME:VERSION`).

What a person knows is written beside the model in `shipyard.yaml` (refused when malformed):

    models:
      fraud-detector:
        card:
          owner: fraud-analytics@example.com
          intended_use: flag card transactions for a person to review
          out_of_scope: declining a payment without review
          limitations: [trained on one month of one country's transactions]
          contact: "#fraud-models"

Everything else is read from the records: the version (purpose, metrics, threshold, lineage),
its tracked run (data versions, code, environment, seed), the latest monitoring snapshot (live
metrics), the alert rules (targets: a rule's threshold, else `DEFAULT_TARGETS`) and open
alerts, the declared fairness attributes (per-group metrics of the served predictor on the
run's holdout), the retraining pipelines and the audit trail (approvals). Limitations are the
written ones plus the ones found: no holdout kept, groups too small to compare, a fairness gap
above its limit, metrics that miss their targets, open alerts, and what the record lacks to
make the version again (`shipyard reproduce`).

The card is data first (`ModelCard.to_dict()`, `--json`); `_card_render` lays out the same
sections from it as Markdown or as one standalone page (autoescaped, no scripts).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from shipyard.core.errors import ConfigurationError, InvalidInput, VersionArchived
from shipyard.core.project import read_project_file
from shipyard.core.values import jsonable
from shipyard.lineage._reproduce import reproduction_gaps
from shipyard.logstore import LogReader
from shipyard.monitoring import (
    DEFAULT_TARGETS,
    AlertManager,
    FairnessSpec,
    Monitor,
    Rule,
    binary_outcomes,
    fairness_metrics,
    fairness_of,
    parse_rule,
)
from shipyard.registry import AuditEvent, ModelVersion, Registry
from shipyard.retraining import pipeline_history
from shipyard.tracking import RunRecord, Tracker

__all__ = ["CardText", "ModelCard", "card_text_of", "model_card"]

FAIRNESS_GAP_LIMIT = 0.1  # a gap above this is a limitation, unless an alert rule draws the line
AUDIT_EVENTS = 10_000  # the model's most recent audit events searched for the version's approvals
PIPELINES = 200  # the model's most recent retraining pipelines searched for the version
LIVE_METRICS = (
    "accuracy", "precision", "recall", "f1", "false_positive_rate", "auc", "macro_f1",
    "weighted_f1", "mae", "rmse", "r2", "latency_p95", "error_rate", "volume", "labelled",
)  # fmt: skip
# what a good value satisfies where no alert rule says: DEFAULT_TARGETS by metric name
DEFAULT_GOOD = {"accuracy": ">=", "r2": ">=", "error_rate": "<=", "latency_p95": "<="}
DEFAULT_KEYS = {"latency_p95": "latency_p95_ms"}
GROUP_COLUMNS = ("rows", "positives", "selection_rate", "true_positive_rate",
                 "false_positive_rate", "accuracy")  # fmt: skip
NEGATION = {"<": ">=", "<=": ">", ">": "<=", ">=": "<", "==": "!=", "!=": "=="}
OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
    "==": operator.eq, "!=": operator.ne,
}  # fmt: skip

Line = Annotated[str, StringConstraints(min_length=1, max_length=1000, strip_whitespace=True)]


class CardText(BaseModel):
    """What a person writes on a model's card (`models.<name>.card` in shipyard.yaml)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    owner: str = Field(default="", max_length=200, description="who answers for the model")
    intended_use: str = Field(default="", max_length=4000, description="what it is meant for")
    out_of_scope: str = Field(default="", max_length=4000, description="what it must not do")
    limitations: list[Line] = Field(default_factory=list, max_length=50)
    contact: str = Field(default="", max_length=200, description="where to ask or report")


def card_text_of(raw: Any, source: Path | str) -> dict[str, CardText]:
    """The `card:` text of every model in a project mapping (`read_project_file`'s)."""
    models = raw.get("models") if isinstance(raw, dict) else None
    out: dict[str, CardText] = {}
    for model, body in models.items() if isinstance(models, dict) else ():
        written = body.get("card") if isinstance(body, dict) else None
        if written is None:
            continue
        try:
            out[str(model)] = CardText.model_validate(written)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'card'}: {e['msg']}" for e in error.errors()
            )
            raise ConfigurationError(f"{source}: model {model!r}: card: {problems}") from None
    return out


# -- the card's data ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DataEntry:
    """A data set the version's run logged: kept as a data version, or fingerprinted only."""

    role: str
    sha256: str
    rows: int | None
    columns: list[str]
    key: list[str] | None
    label: str | None
    created_at: datetime | None
    kept: bool


@dataclass(frozen=True)
class MetricRow:
    """A metric beside its target: `met` is None where no target applies."""

    name: str
    source: str  # registered | live
    value: float
    target: str | None  # what a good value satisfies: ">= 0.9"
    met: bool | None
    basis: str  # the alert rule the target comes from, or "default"


@dataclass(frozen=True)
class Groups:
    """Per-group metrics: `attributes` is `fairness_metrics`' answer when `status` is measured."""

    status: str  # measured | not declared | not applicable | no holdout | unavailable
    note: str
    data: str = ""
    min_group_rows: int | None = None
    attributes: dict[str, dict[str, Any]] = field(default_factory=dict)
    limits: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Limitation:
    kind: str  # written | holdout | bias | small_groups | fairness_gap | target | alert | reproducibility
    text: str


@dataclass(frozen=True)
class Lineage:
    parent: int | None
    pipeline: int | None
    trigger: dict[str, Any] | None
    run_id: str | None
    entrypoint: str | None
    params: dict[str, Any]
    seed: int | None
    python: str | None
    git: dict[str, Any]
    packages: dict[str, str]
    feature_views: dict[str, Any]
    reproduces: int | None


@dataclass(frozen=True)
class Approval:
    at: datetime
    actor: str
    action: str  # the audit event's
    what: str  # registered, deployed, approved, ...
    detail: str


@dataclass(frozen=True)
class ModelCard:
    """Everything a model card says about one version; `to_dict()` is its JSON."""

    ref: str
    status: str
    purpose: str
    description: str
    intended_use: str
    out_of_scope: str
    owner: str
    contact: str
    task: str
    flavour: str
    runtime: str
    threshold: float | None
    aliases: list[str]
    features: list[str]
    registered_at: datetime
    registered_by: str
    data: list[DataEntry]
    data_fingerprint: dict[str, Any] | None
    metrics: list[MetricRow]
    live: dict[str, Any] | None  # the snapshot the live metrics come from: window, computed_at
    groups: Groups
    limitations: list[Limitation]
    lineage: Lineage
    approvals: list[Approval]
    generated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = jsonable(asdict(self))
        return out


# -- building it --------------------------------------------------------------------------------


def model_card(
    registry: Registry, tracker: Tracker, ref: str, *, project: Path | None = None
) -> ModelCard:
    """The card of `ref` (`NAME:VERSION` or `NAME:ALIAS`).

    Args:
        project: the project file with the model's `card:` and `fairness:` (default:
            ./shipyard.yaml, else [tool.shipyard] in ./pyproject.toml; none is fine).
    """
    version = registry.resolve(ref)
    found = read_project_file(project, must_exist=project is not None)
    text = card_text_of(*found).get(version.name, CardText()) if found else CardText()
    fairness = fairness_of(*found).get(version.name) if found else None
    run = tracker.get(version.run_id) if version.run_id else None
    alerts = AlertManager(registry.database)
    rules = [parse_rule(r["expression"]) for r in alerts.rules(version.name) if r["enabled"]]
    snapshot = Monitor(registry, LogReader(registry.artifacts)).last_snapshot(version.name)
    metrics, live = _metrics(version, rules, snapshot)
    groups = _groups(registry, tracker, version, run, fairness, rules)
    limitations = [
        *(Limitation("written", line) for line in text.limitations),
        *_found(version, run, groups, metrics),
        *_open_alerts(alerts, version),
        *(
            Limitation("reproducibility", f"cannot be reproduced: {gap}")
            for gap in reproduction_gaps(version.ref, run)
        ),
    ]
    return ModelCard(
        ref=version.ref, status=version.status, purpose=version.purpose,
        description=version.description, intended_use=text.intended_use,
        out_of_scope=text.out_of_scope, owner=text.owner or version.created_by,
        contact=text.contact, task=version.task, flavour=version.flavour,
        runtime=version.runtime, threshold=version.threshold, aliases=list(version.aliases),
        features=list(version.features), registered_at=version.created_at,
        registered_by=version.created_by, data=_data(tracker, run),
        data_fingerprint=version.data_fingerprint, metrics=metrics, live=live, groups=groups,
        limitations=limitations, lineage=_lineage(version, run),
        approvals=_approvals(registry, version), generated_at=datetime.now(UTC),
    )  # fmt: skip


def _data(tracker: Tracker, run: RunRecord | None) -> list[DataEntry]:
    out = []
    for role, entry in (run.datasets if run is not None else {}).items():
        kept = bool(entry.get("snapshot"))
        stored = tracker.data.get(entry["sha256"]) if kept else None
        columns = entry.get("columns") or (stored.columns if stored else [])
        out.append(DataEntry(
            role=role, sha256=str(entry.get("sha256", "")), rows=entry.get("rows"),
            columns=list(columns), key=entry.get("key"), label=entry.get("label"),
            created_at=stored.created_at if stored else None, kept=kept,
        ))  # fmt: skip
    return out


def _target(metric: str, rules: list[Rule]) -> tuple[str, float, str] | None:
    """(what a good value satisfies, the bar, where it comes from) for a model-level metric:
    a rule fires on a bad value, so its negation is the target."""
    for rule in rules:
        if (rule.metric, rule.feature) == (metric, None) and rule.op and rule.threshold is not None:
            return NEGATION[rule.op], rule.threshold, f"alert rule '{rule.describe()}'"
    if metric in DEFAULT_GOOD:
        return DEFAULT_GOOD[metric], DEFAULT_TARGETS[DEFAULT_KEYS.get(metric, metric)], "default"
    return None


def _row(name: str, source: str, value: float, rules: list[Rule]) -> MetricRow:
    target = _target(name, rules)
    if target is None:
        return MetricRow(name, source, value, None, None, "")
    op, bar, basis = target
    return MetricRow(name, source, value, f"{op} {bar:g}", OPS[op](value, bar), basis)


def _metrics(
    version: ModelVersion, rules: list[Rule], snapshot: Mapping[str, Any] | None
) -> tuple[list[MetricRow], dict[str, Any] | None]:
    """The registered metrics, then the live ones of the latest monitoring snapshot."""
    metrics = version.metrics
    rows = [
        _row(str(k), "registered", float(v), rules) for k, v in metrics.items() if _is_number(v)
    ]
    summary = (snapshot or {}).get("versions", {}).get(str(version.version))
    if snapshot is None or summary is None:
        return rows, None
    measured = summary.get("metrics", {})
    rows += [
        _row(name, "live", float(measured[name]), rules)
        for name in LIVE_METRICS
        if _is_number(measured.get(name))
    ]
    return rows, {k: snapshot[k] for k in ("window", "period", "computed_at")}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _holdout(run: RunRecord | None) -> dict[str, Any] | None:
    entry = (run.datasets if run is not None else {}).get("holdout")
    return entry if entry is not None and entry.get("snapshot") else None


def _groups(
    registry: Registry,
    tracker: Tracker,
    version: ModelVersion,
    run: RunRecord | None,
    spec: FairnessSpec | None,
    rules: list[Rule],
) -> Groups:
    """Per-group outcomes of the served predictor on the run's holdout, per declared attribute."""
    if spec is None:
        where = f"models.{version.name}.fairness in shipyard.yaml"
        return Groups("not declared", f"no sensitive attributes are declared ({where})")
    if version.task != "binary":
        note = f"per-group metrics apply to binary classifiers; {version.ref} is a {version.task} model"
        return Groups("not applicable", note)
    entry = _holdout(run)
    if entry is None or not entry.get("label"):
        note = "no holdout data version with its label was kept: nothing to score per group"
        return Groups("no holdout", note)
    data = f"holdout {entry['sha256'][:12]}, {entry.get('rows', 0):,} rows, label {entry['label']}"
    try:
        report = _score_groups(registry, tracker, version, entry, spec)
    except (InvalidInput, VersionArchived) as error:
        return Groups("unavailable", str(error), data, spec.min_group_rows)
    limits = {attribute: _gap_limit(attribute, rules) for attribute in report}
    threshold = _threshold_text(version.threshold)
    note = f"the served predictor of {version.ref} on its holdout, at threshold {threshold}"
    return Groups("measured", note, data, spec.min_group_rows, report, limits)


def _score_groups(
    registry: Registry,
    tracker: Tracker,
    version: ModelVersion,
    entry: dict[str, Any],
    spec: FairnessSpec,
) -> dict[str, dict[str, Any]]:
    rows = tracker.data.load(entry["sha256"]).to_pandas()
    sig = version.signature
    missing = [c for c in sig.names if c not in rows.columns]
    if missing:
        raise InvalidInput(f"the holdout lacks the model's column(s) {missing} to score")
    predictor = registry.open(version.name, version.version).predictor
    answers = predictor.predict(sig.validate_frame(rows[sig.names]))
    truth = rows[entry["label"]].to_numpy()
    positive = registry.positive_class(version)
    actual, flagged = binary_outcomes(answers, truth, positive, version.threshold)
    columns = {c: rows[c].to_numpy() for c in rows.columns}
    return fairness_metrics(spec, columns, actual, flagged)


def _gap_limit(attribute: str, rules: list[Rule]) -> float:
    """An alert rule's threshold on the attribute's fairness gap, else `FAIRNESS_GAP_LIMIT`."""
    for rule in rules:
        if rule.metric == "fairness_gap" and rule.feature == attribute and rule.threshold:
            return rule.threshold
    return FAIRNESS_GAP_LIMIT


# -- limitations found --------------------------------------------------------------------------


def _found(
    version: ModelVersion, run: RunRecord | None, groups: Groups, metrics: list[MetricRow]
) -> list[Limitation]:
    out = _holdout_gaps(version, run)
    if groups.status == "not declared" and version.task == "binary":
        out.append(Limitation("bias", f"not tested for bias: {groups.note}"))
    if groups.status == "unavailable":
        out.append(Limitation("bias", f"per-group metrics could not be measured: {groups.note}"))
    for attribute, report in groups.attributes.items():
        out += _group_gaps(attribute, report, groups)
    for row in metrics:
        if row.met is False:
            text = f"{row.source} {row.name} {row.value:.4g} misses its target {row.target} ({row.basis})"
            out.append(Limitation("target", text))
    return out


def _holdout_gaps(version: ModelVersion, run: RunRecord | None) -> list[Limitation]:
    entry = _holdout(run)
    if run is None:
        text = f"{version.ref} was registered outside a tracked run: no holdout data version was kept, so its metrics cannot be checked again on held-out rows"
    elif entry is None:
        text = "its run kept no holdout data version: run.log_dataset('holdout', frame, label=...) inside the run"
    elif not entry.get("label"):
        text = "its holdout data version names no label column, so it cannot be scored: log it with label=..."
    else:
        return []
    return [Limitation("holdout", text)]


def _group_gaps(attribute: str, report: dict[str, Any], groups: Groups) -> list[Limitation]:
    out = []
    small = [g for g in report["groups"] if not g["compared"]]
    if small:
        names = ", ".join(f"{g['group']} ({g['rows']} rows)" for g in small)
        text = f"{attribute}: too few holdout rows to compare (under min_group_rows {groups.min_group_rows}): {names}"
        out.append(Limitation("small_groups", text))
    gap, limit = report["fairness_gap"], groups.limits.get(attribute, FAIRNESS_GAP_LIMIT)
    if gap is not None and gap > limit:
        parity = _number(report["demographic_parity_difference"])
        odds = _number(report["equalized_odds_difference"])
        text = f"{attribute}: fairness gap {gap:.3g} is above {limit:g} (demographic parity difference {parity}, equalized odds difference {odds})"
        out.append(Limitation("fairness_gap", text))
    return out


def _open_alerts(alerts: AlertManager, version: ModelVersion) -> list[Limitation]:
    rules = {r["id"]: r for r in alerts.rules(version.name)}
    out = []
    for alert in alerts.alerts(version.name, status="firing"):
        if alert["version"] not in (None, version.version):
            continue
        rule = rules.get(alert["rule_id"])
        what = rule["expression"] if rule else f"rule {alert['rule_id']}"
        severity = f"{rule['severity']}, " if rule else ""
        since = f"firing since {_when(alert['opened_at'])}, value {_number(alert['value'])}"
        text = f"open alert: {what} ({severity}{since})"
        out.append(Limitation("alert", text))
    return out


# -- lineage and approvals ----------------------------------------------------------------------


def _lineage(version: ModelVersion, run: RunRecord | None) -> Lineage:
    lineage = version.lineage or {}
    environment = run.environment if run is not None else {}
    store = lineage.get("feature_store")
    views = store.get("views") if isinstance(store, dict) else None
    return Lineage(
        parent=lineage.get("parent"), pipeline=lineage.get("pipeline"),
        trigger=lineage.get("trigger"), run_id=run.id if run else version.run_id,
        entrypoint=(run.entrypoint or None) if run else None,
        params=dict(run.params) if run and run.params else dict(version.params),
        seed=environment.get("seed"), python=environment.get("python"),
        git=dict(run.git) if run else {}, packages=dict(environment.get("packages") or {}),
        feature_views=dict(views or {}), reproduces=lineage.get("reproduces"),
    )  # fmt: skip


def _approvals(registry: Registry, version: ModelVersion) -> list[Approval]:
    """Who registered, deployed, promoted, approved or rejected the version, oldest first:
    the audit events that name it, and the steps of the pipelines that made it."""
    pipelines = {
        p["id"]
        for p in pipeline_history(registry, version.name, limit=PIPELINES)
        if p["candidate_version"] == version.version
    }
    made_by = (version.lineage or {}).get("pipeline")
    if made_by is not None:
        pipelines.add(int(made_by))
    out = []
    for event in reversed(registry.history(version.name, limit=AUDIT_EVENTS)):
        described = _describe(event, version.version, pipelines)
        if described is not None:
            out.append(Approval(event.at, event.actor, event.action, *described))
    return out


def _describe(event: AuditEvent, version: int, pipelines: set[int]) -> tuple[str, str] | None:
    """(what happened to `version`, the detail) for an audit event that concerns it."""
    details = event.details
    if event.action.startswith("pipeline."):
        return _pipeline_step(event, pipelines)
    if event.action in ("deployment.created", "deployment.rolled_back"):
        return _deployment(event, version)
    if event.version != version:
        return None
    if event.action == "version.registered":
        return "registered", f"run {details['run']}" if details.get("run") else "outside a run"
    if event.action in ("alias.moved", "alias.removed"):
        verb = "alias set" if event.action == "alias.moved" else "alias removed"
        return verb, str(details.get("alias", ""))
    if event.action in ("version.archived", "version.unarchived"):
        return event.action.removeprefix("version."), ""
    return None


def _deployment(event: AuditEvent, version: int) -> tuple[str, str] | None:
    mine = [v for v in event.details.get("variants") or [] if v.get("version") == version]
    if not mine:
        return None
    role = mine[0].get("role", "primary")
    what = "deployed" if role == "primary" else f"deployed as {role}"
    if event.action == "deployment.rolled_back":
        what = "back in service by a rollback"
    detail = f"revision {event.details.get('revision')}: {event.details.get('to', '')}"
    reason = event.details.get("reason")
    return what, f"{detail}; {reason}" if reason else detail


def _pipeline_step(event: AuditEvent, pipelines: set[int]) -> tuple[str, str] | None:
    details = event.details
    if details.get("pipeline") not in pipelines:
        return None
    step, status = event.action.removeprefix("pipeline."), str(details.get("status", ""))
    where = f"pipeline {details['pipeline']}"
    reason = f"{where}: {details.get('reason') or ''}"
    if step == "validate":
        gates = "; ".join(
            f"{g.get('gate')}: {'passed' if g.get('passed') else 'failed'}"
            for g in details.get("gates") or []
        )
        return ("validated" if status == "passed" else "refused by a gate"), f"{where}: {gates}"
    if step == "decide":
        return ("waiting for approval" if status == "awaiting_approval" else "decided"), reason
    person = str(details.get("reason") or "")
    if step == "promote":
        return ("approved" if person.startswith("approved by") else "promoted"), reason
    if step == "rollback":
        return ("rejected" if person.startswith("rejected by") else "rolled back"), reason
    if step == "failed":
        return "pipeline failed", f"{where}: {details.get('error', '')}"
    return None


def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _when(value: Any) -> str:
    """A moment as `2026-11-29 14:05 UTC`, from a datetime or ISO 8601 text."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if not isinstance(moment, datetime):
        return "-"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _threshold_text(threshold: float | None) -> str:
    return "0.5 (default)" if threshold is None else f"{threshold:g}"

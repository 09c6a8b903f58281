"""A monitoring run: for each version of a model that served in the period, what happened per
window, whether the inputs drifted, whether the model got worse and why, with OK / warning /
failing marks; stored as a snapshot, then checked against the alert rules.
"""

from __future__ import annotations

import io
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shipyard.core import Settings, validate_model_name
from shipyard.core.errors import InvalidInput, Overloaded
from shipyard.logstore import LogReader, label_text
from shipyard.monitoring import _repository as repo
from shipyard.monitoring._alerts import AlertManager
from shipyard.monitoring._concept import detect_changes
from shipyard.monitoring._drift import DriftReport, compare
from shipyard.monitoring._estimate import Calibration, calibration_table, estimate
from shipyard.monitoring._logs import LogQueries, Period, numpy_column
from shipyard.monitoring._rules import MAX_WINDOW, Rule, parse_rule, parse_window
from shipyard.registry import ModelVersion, Registry

__all__ = ["DEFAULT_TARGETS", "Monitor", "MonitoringReport"]

log = logging.getLogger("shipyard.monitoring")

DEFAULT_TARGETS: dict[str, float] = {
    "accuracy": 0.90,
    "latency_p95_ms": 100.0,
    "error_rate": 0.01,
    "missing_rate_increase": 0.05,
    "out_of_range_rate": 0.05,
    "unseen_share": 0.01,
}


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
        out: dict[str, Any] = _jsonable(
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
    def status(self) -> str:
        marks = [c["status"] for s in self.versions.values() for c in s.get("checks", [])]
        return "failing" if "failing" in marks else "warning" if "warning" in marks else "ok"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    return value


class Monitor:
    """Runs monitoring for registered models over their logs.

    Args:
        registry: versions, their reference samples and models.
        reader: the prediction, label and error logs.
        alerts: rules and alert records (None: no alert evaluation).
        targets: what "good" is where no alert rule says (see `DEFAULT_TARGETS`).
    """

    def __init__(
        self,
        registry: Registry,
        reader: LogReader,
        alerts: AlertManager | None = None,
        targets: dict[str, float] | None = None,
        *,
        concurrency: int | None = None,
    ) -> None:
        self.registry = registry
        self.reader = reader
        self.alert_manager = alerts
        self.targets = {**DEFAULT_TARGETS, **(targets or {})}
        self._references: dict[tuple[str, int], pa.Table | None] = {}
        self._slots = threading.BoundedSemaphore(concurrency) if concurrency else None

    @classmethod
    def from_settings(
        cls, settings: Settings, registry: Registry, *, concurrency: int | None = None
    ) -> Monitor:
        """A monitor over `settings`' logs; `concurrency` caps runs at once (servers: a run
        uses one DuckDB thread and at most that many run, so reports never starve predictions)."""
        webhooks = [u.strip() for u in (settings.alert_webhooks or "").split(",") if u.strip()]
        manager = AlertManager(registry.database, actor=settings.actor, webhooks=webhooks)
        reader = LogReader(registry.artifacts, threads=1 if concurrency else None)
        return cls(registry, reader, manager, concurrency=concurrency)

    # -- the run --------------------------------------------------------------------------------

    def latest(
        self,
        name: str,
        *,
        window: str = "1d",
        periods: int = 7,
        compute: Callable[[str, str, int], dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """What a reader sees: the latest snapshot of this window length when it is recent
        (within the window, and at most an hour old), else a report computed now and not
        stored (no snapshot, no alert evaluation: reading changes nothing), by `compute`
        when given (a server computes off its prediction path)."""
        self.registry.get_model(name)
        step = _checked_span(window, periods)
        found = self.registry.database.read(lambda conn: repo.snapshots(conn, name, window, 1))
        if found and found[0]["period_end"] >= datetime.now(UTC) - min(step, timedelta(hours=1)):
            summary: dict[str, Any] = found[0]["summary"]
            return summary
        if compute is not None:
            return compute(name, window, periods)
        return self.run(name, window=window, periods=periods, record=False).to_dict()

    def run(
        self,
        name: str,
        *,
        window: str = "1d",
        periods: int = 7,
        now: datetime | None = None,
        record: bool = True,
    ) -> MonitoringReport:
        """Monitor `name` over the last `periods` windows of length `window`, ending `now`.

        With `record` (the default) the report is stored as a snapshot and the alert rules are
        evaluated (alerts fire, resolve and are delivered); without, nothing is written.
        """
        validate_model_name(name)
        step = _checked_span(window, periods)
        if self._slots is not None and not self._slots.acquire(blocking=False):
            raise Overloaded(
                "monitoring reports are being computed already; retry shortly (or read the "
                "latest snapshot: GET /v1/models/NAME/monitoring)",
                retry_after=5.0,
            )
        try:
            return self._run(name, window, periods, step, now, keep=record)
        finally:
            if self._slots is not None:
                self._slots.release()

    def _run(
        self,
        name: str,
        window: str,
        periods: int,
        step: timedelta,
        now: datetime | None,
        *,
        keep: bool,
    ) -> MonitoringReport:
        versions = {v.version: v for v in self.registry.list_versions(name)}
        moment = (now or datetime.now(UTC)).astimezone(UTC)
        end = _align(moment, step)
        period = Period(end - periods * step, end, step)
        report = MonitoringReport(name, window, period, datetime.now(UTC))
        rows = LogQueries(self.reader, name, period).windows(self._positive(versions))
        errors = LogQueries(self.reader, name, period).errors()
        served = sorted({r["version"] for r in rows})
        for version in served:
            record = versions.get(version)
            if record is None:
                continue
            report.versions[version] = self._version_summary(
                name, record, period, window, rows, errors
            )
        if not keep:
            return report
        if self.alert_manager is not None:
            report.alerts = _jsonable(
                self._alerts(name, versions, served, step, end, moment, report)
            )
        with self.registry.database.transaction() as conn:
            repo.save_snapshot(conn, name, window, period.start, period.end, report.to_dict())
        return report

    def _alerts(
        self,
        name: str,
        versions: dict[int, ModelVersion],
        served: list[int],
        step: timedelta,
        end: datetime,
        moment: datetime,
        report: MonitoringReport,
    ) -> list[dict[str, Any]]:
        """Evaluate the rules on the live versions that had traffic; retire the others' alerts.

        Windows end at `end` (the next window boundary); alerts open and resolve at `moment`,
        when the rules were evaluated, never at a boundary still in the future.
        """
        assert self.alert_manager is not None
        plan = self.registry.serving_plan().get(name)
        # never deployed and no production alias: every version with traffic counts as live
        live = {v.version for v in plan.variants} if plan is not None else set(served)
        served = [v for v in served if v in live]
        changed: list[dict[str, Any]] = []
        if served:
            cache: dict[tuple[str, int], dict[str, Any] | None] = {}

            def summary_for(rule: Rule, version: int) -> dict[str, Any] | None:
                if rule.window is None or rule.window == step:
                    found: dict[str, Any] | None = report.to_dict()["versions"].get(str(version))
                    return found
                key = (str(rule.window), version)
                if key not in cache:
                    cache[key] = self._summary_over(name, versions[version], end, rule.window)
                return cache[key]

            changed += self.alert_manager.evaluate(name, summary_for, served, moment)
        if plan is not None:
            changed += self.alert_manager.retire(name, live, moment)
        return changed

    def _summary_over(
        self, name: str, record: ModelVersion, end: datetime, length: timedelta
    ) -> dict[str, Any] | None:
        """A version's summary over one window of `length` ending at `end` (for rules with `over`)."""
        period = Period(end - length, end, length)
        queries = LogQueries(self.reader, name, period)
        rows = queries.windows(self._positive({record.version: record}))
        if not any(r["version"] == record.version for r in rows):
            return None
        summary = self._version_summary(
            name, record, period, _duration_text(length), rows, queries.errors()
        )
        return _jsonable(summary)  # type: ignore[no-any-return]

    # -- one version ----------------------------------------------------------------------------

    def _version_summary(
        self,
        name: str,
        record: ModelVersion,
        period: Period,
        window: str,
        rows: list[dict[str, Any]],
        errors: list[dict[str, Any]],
    ) -> dict[str, Any]:
        version = record.version
        mine = [r for r in rows if r["version"] == version]
        failed = [e for e in errors if e["version"] == version]
        windows = _merge_windows(mine, failed, period)
        current_period = Period(period.end - period.step, period.end, period.step)
        current_queries = LogQueries(self.reader, name, current_period)
        current = current_queries.sample(version)
        positive = self._positive_label(record)
        summary: dict[str, Any] = {
            "version": version,
            "window": window,
            "period": {"start": period.start, "end": period.end},
            "variants": sorted({r["variant"] for r in mine}),
            "windows": windows,
            "by_variant": [{k: v for k, v in r.items() if k != "version"} for r in mine],
        }
        drift = self._drift(name, record, current)
        summary["drift"] = (
            drift.to_dict()
            if drift is not None
            else {"columns": {}, "drifted": [], "drift_share": 0.0}
        )
        summary["score_drift"] = self._score_drift(name, record, current)
        summary["quality"] = _quality(drift, current_queries.schema_violations())
        labelled = LogQueries(self.reader, name, period).sample(version, labelled_only=True)
        summary["concept"] = self._concept(labelled, positive, drift)
        summary["calibration"], calibration = self._calibration(
            labelled, positive, current_period.start
        )
        everything = LogQueries(self.reader, name, period).sample(version)
        _estimates(windows, everything, record.threshold, calibration, period)
        summary["root_cause"] = self._root_cause(name, record, drift, period, positive)
        summary["metrics"] = _current_metrics(windows, summary)
        summary["checks"] = self._checks(name, summary)
        return summary

    def reference(self, name: str, version: int) -> pa.Table | None:
        """The version's reference sample (None for bundles registered before samples existed)."""
        key = (name, version)
        if key not in self._references:
            raw = self.registry.read_artifact(name, version, "reference/sample.parquet")
            self._references[key] = pq.read_table(io.BytesIO(raw)) if raw is not None else None
        return self._references[key]

    def _drift(self, name: str, record: ModelVersion, current: pa.Table) -> DriftReport | None:
        reference = self.reference(name, record.version)
        if reference is None or current.num_rows == 0 or "features" not in current.column_names:
            return None
        features = pa.Table.from_struct_array(current.column("features").combine_chunks())
        columns = [c for c in reference.column_names if c in features.column_names]
        if not columns:
            return None
        # the whole reference: a feature the logs no longer carry is reported, not skipped
        return compare(reference, features.select(columns))

    def _score_drift(self, name: str, record: ModelVersion, current: pa.Table) -> dict[str, Any]:
        """Scores of the window against the model's scores on its own reference sample."""
        reference = self.reference(name, record.version)
        if reference is None or current.num_rows == 0 or record.task != "binary":
            return {}
        bundle = self.registry.open(name, record.version)
        columns = record.signature.validate_frame(reference.to_pandas())
        ref_scores = np.asarray(bundle.predictor.predict(columns))[:, 1]
        cur_scores = numpy_column(current, "score").astype(np.float64)
        report = compare(pa.table({"score": ref_scores}), pa.table({"score": cur_scores}))
        return report.columns["score"].to_dict()

    def _concept(
        self, labelled: pa.Table, positive: str | None, drift: DriftReport | None
    ) -> dict[str, Any]:
        if labelled.num_rows < 100:
            return {
                "detected": False,
                "changes": [],
                "labelled": labelled.num_rows,
                "note": "fewer than 100 labelled predictions",
            }
        wrong = (numpy_column(labelled, "label") != numpy_column(labelled, "truth")).astype(
            np.float64
        )
        times = [
            t if t.tzinfo else t.replace(tzinfo=UTC) for t in labelled.column("ts").to_pylist()
        ]
        changes = detect_changes(wrong, times)
        worse = [c for c in changes if c.worse]
        inputs_stable = drift is None or not drift.drifted
        return {
            "detected": bool(worse) and inputs_stable,
            "performance_change": bool(worse),
            "inputs_stable": inputs_stable,
            "changes": [c.to_dict() for c in changes],
            "labelled": labelled.num_rows,
            "error_rate": float(wrong.mean()),
        }

    def _calibration(
        self, labelled: pa.Table, positive: str | None, before: datetime
    ) -> tuple[dict[str, Any], Calibration]:
        if positive is None or labelled.num_rows == 0:
            return {"bins": [], "ece": None}, Calibration()
        scores = numpy_column(labelled, "score").astype(np.float64)
        is_positive = numpy_column(labelled, "truth") == positive
        times = np.array([t.timestamp() for t in labelled.column("ts").to_pylist()])
        earlier = times < before.timestamp()
        calibration = Calibration.fit(scores[earlier], is_positive[earlier])
        return calibration_table(scores, is_positive.astype(np.float64)), calibration

    def _root_cause(
        self,
        name: str,
        record: ModelVersion,
        drift: DriftReport | None,
        period: Period,
        positive: str | None,
    ) -> dict[str, Any]:
        moved = []
        if drift is not None:
            for column in drift.ranked()[:5]:
                if column.status != "ok":
                    moved.append(
                        {
                            "feature": column.column,
                            "status": column.status,
                            "effect": column.effect,
                            "effect_size": column.effect_size,
                            "reason": column.reason,
                        }
                    )
        segments = []
        current = Period(period.end - period.step, period.end, period.step)
        baseline = Period(period.start, period.end - period.step, period.step)
        for spec in record.signature.columns:
            if spec.type != "string":
                continue
            now_rows = {
                s["segment"]: s
                for s in LogQueries(self.reader, name, current).segments(
                    record.version, spec.name, positive
                )
            }
            before_rows = {
                s["segment"]: s
                for s in LogQueries(self.reader, name, baseline).segments(
                    record.version, spec.name, positive
                )
            }
            total = sum(s["labelled"] for s in now_rows.values()) or 1
            for segment, now in now_rows.items():
                before = before_rows.get(segment)
                if before is None or now["labelled"] < 20 or before["labelled"] < 20:
                    continue
                drop = before["accuracy"] - now["accuracy"]
                segments.append({
                    "feature": spec.name, "segment": segment, "labelled": now["labelled"],
                    "accuracy_before": before["accuracy"], "accuracy_now": now["accuracy"],
                    "recall_before": before["recall"], "recall_now": now["recall"],
                    "impact": drop * now["labelled"] / total,
                })  # fmt: skip
        segments.sort(key=lambda s: -s["impact"])
        return {"features": moved, "segments": [s for s in segments if s["impact"] > 0][:5]}

    # -- marks ----------------------------------------------------------------------------------

    def _target(self, name: str, metric: str, default: float) -> float:
        """An alert rule's threshold for `metric` when there is one, else the default target."""
        if self.alert_manager is None:
            return default
        for row in self.alert_manager.rules(name):
            rule = parse_rule(row["expression"])
            if rule.metric == metric and rule.threshold is not None and rule.feature is None:
                return rule.threshold
        return default

    def _checks(self, model: str, summary: dict[str, Any]) -> list[dict[str, Any]]:
        metrics = summary["metrics"]
        checks = []
        accuracy_target = self._target(model, "accuracy", self.targets["accuracy"])
        checks.append(_mark("accuracy", metrics.get("accuracy"), accuracy_target, higher_is_better=True, margin=0.02,
                            note=f"{metrics.get('labelled', 0)} labelled, coverage {metrics.get('label_coverage', 0):.0%}"))  # fmt: skip
        if metrics.get("accuracy") is None and metrics.get("estimated_accuracy") is not None:
            checks.append(_mark("estimated accuracy", metrics["estimated_accuracy"], accuracy_target, higher_is_better=True, margin=0.02,
                                note="before labels, from calibrated scores"))  # fmt: skip
        checks.append(_mark("false-positive rate", metrics.get("false_positive_rate"), None, True))
        latency_target = self._target(model, "latency_p95", self.targets["latency_p95_ms"])
        checks.append(
            _mark(
                "latency p95 (ms)",
                metrics.get("latency_p95"),
                latency_target,
                higher_is_better=False,
                margin=0.2 * latency_target,
            )
        )
        checks.append(
            _mark(
                "error rate",
                metrics.get("error_rate"),
                self.targets["error_rate"],
                higher_is_better=False,
                margin=self.targets["error_rate"],
            )
        )
        quality = summary["quality"]
        worse_missing = [
            f
            for f, q in quality.items()
            if q.get("missing_increase", 0) > self.targets["missing_rate_increase"]
        ]
        checks.append({"name": "missing features", "value": len(worse_missing), "target": 0,
                       "status": "failing" if worse_missing else "ok", "note": ", ".join(worse_missing)})  # fmt: skip
        out_of_range = [
            f
            for f, q in quality.items()
            if (q.get("out_of_range_rate") or 0) > self.targets["out_of_range_rate"]
        ]
        checks.append({"name": "out-of-range values", "value": len(out_of_range), "target": 0,
                       "status": "warning" if out_of_range else "ok", "note": ", ".join(out_of_range)})  # fmt: skip
        unseen = [
            f
            for f, q in quality.items()
            if (q.get("unseen_share") or 0) > self.targets["unseen_share"]
        ]
        checks.append({"name": "unseen categories", "value": len(unseen), "target": 0,
                       "status": "warning" if unseen else "ok", "note": ", ".join(unseen)})  # fmt: skip
        violations = {f: q["violations"] for f, q in quality.items() if q.get("violations")}
        checks.append({"name": "schema violations", "value": sum(violations.values()), "target": 0,
                       "status": "warning" if violations else "ok", "note": ", ".join(f"{f} ({n})" for f, n in violations.items())})  # fmt: skip
        drifted = summary["drift"].get("drifted", [])
        checks.append({"name": "drifted features", "value": len(drifted), "target": 0,
                       "status": "warning" if drifted else "ok", "note": ", ".join(drifted)})  # fmt: skip
        if summary["score_drift"]:
            checks.append({"name": "score drift", "value": summary["score_drift"]["effect_size"], "target": summary["score_drift"]["threshold"],
                           "status": "warning" if summary["score_drift"]["drift"] else "ok", "note": summary["score_drift"]["reason"]})  # fmt: skip
        concept = summary["concept"]
        checks.append({"name": "concept drift", "value": concept.get("detected", False), "target": False,
                       "status": "failing" if concept.get("detected") else ("warning" if concept.get("performance_change") else "ok"),
                       "note": _concept_note(concept)})  # fmt: skip
        return checks

    def _positive(self, versions: dict[int, ModelVersion]) -> str | None:
        latest = max(versions.values(), key=lambda v: v.version, default=None)
        return self._positive_label(latest) if latest is not None else None

    def _positive_label(self, record: ModelVersion) -> str | None:
        """The positive class of a binary model, as text (how the logs store labels)."""
        if record.task != "binary":
            return None
        classes = self.registry.metadata(record.name, record.version)["model"].get("classes") or [
            0,
            1,
        ]
        return label_text(classes[1])


MAX_PERIODS = 400


def _checked_span(window: str, periods: int) -> timedelta:
    """The window length, once `periods` of them are known to be a span worth computing."""
    step = parse_window(window)
    if not 1 <= periods <= MAX_PERIODS:
        raise InvalidInput(f"periods must be between 1 and {MAX_PERIODS}, got {periods}")
    if step * periods > MAX_WINDOW:
        raise InvalidInput(
            f"{periods} windows of {window} span more than ten years; ask for fewer or shorter ones"
        )
    return step


def _align(moment: datetime, step: timedelta) -> datetime:
    """`moment` rounded up to a window boundary (days and weeks align to midnight UTC)."""
    moment = moment.astimezone(UTC)
    seconds = step.total_seconds()
    epoch = moment.timestamp()
    aligned = (
        math.ceil(epoch / seconds) * seconds
        if seconds <= 86_400
        else math.ceil(epoch / 86_400) * 86_400
    )
    return datetime.fromtimestamp(aligned, UTC)


def _duration_text(length: timedelta) -> str:
    seconds = int(length.total_seconds())
    for unit, size in (("w", 604_800), ("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _merge_windows(
    rows: list[dict[str, Any]], errors: list[dict[str, Any]], period: Period
) -> list[dict[str, Any]]:
    """One row per window (variants added up), with error and rejection rates."""
    out: dict[datetime, dict[str, Any]] = {}
    for row in rows:
        start = row["window_start"]
        if row["variant"] == "shadow":
            continue
        merged = out.setdefault(start, {"window_start": start, "parts": []})
        merged["parts"].append(row)
    result = []
    for start in sorted(out):
        parts = out[start]["parts"]
        volume = sum(p["volume"] for p in parts)
        main = max(parts, key=lambda p: p["volume"])
        merged = {k: v for k, v in main.items() if k not in ("variant", "version")}
        merged["volume"] = volume
        merged["throughput_per_s"] = volume / period.seconds
        merged["variants"] = {p["variant"]: p["volume"] for p in parts}
        fails = [e for e in errors if e["window_start"] == start]
        server_errors = sum(e["count"] for e in fails if e["status"] >= 500)
        refused = sum(e["count"] for e in fails if e["status"] < 500)
        merged["errors"] = server_errors
        merged["refused"] = refused
        merged["error_rate"] = (
            server_errors / (volume + server_errors + refused)
            if volume + server_errors + refused
            else 0.0
        )
        merged["refused_rate"] = (
            refused / (volume + server_errors + refused)
            if volume + server_errors + refused
            else 0.0
        )
        result.append(merged)
    return result


def _estimates(
    windows: list[dict[str, Any]],
    sample: pa.Table,
    threshold: float | None,
    calibration: Calibration,
    period: Period,
) -> None:
    """Confidence-based estimates per window, beside the realised numbers."""
    if sample.num_rows == 0 or threshold is None:
        return
    scores = numpy_column(sample, "score").astype(np.float64)
    times = np.array([t.timestamp() for t in sample.column("ts").to_pylist()])
    index = np.floor((times - period.start.timestamp()) / period.seconds).astype(np.int64)
    for row in windows:
        i = round((row["window_start"] - period.start).total_seconds() / period.seconds)
        mask = index == i
        if mask.any():
            row["estimated"] = estimate(scores[mask], threshold, calibration)


def _quality(drift: DriftReport | None, violations: dict[str, int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if drift is not None:
        for name, column in drift.columns.items():
            missing = column.missing
            stats = column.stats
            out[name] = {
                "missing_rate": missing["current_rate"],
                "reference_missing_rate": missing["reference_rate"],
                "missing_increase": missing["current_rate"] - missing["reference_rate"],
                "out_of_range_rate": stats.get("out_of_range_rate"),
                "unseen_share": stats.get("unseen_share"),
                "unseen": stats.get("unseen"),
                "violations": violations.get(name, 0),
            }
        for name in drift.missing_in_current:
            out[name] = {
                "missing_from_current": True,
                "missing_rate": 1.0,
                "violations": violations.get(name, 0),
            }
    for name, count in violations.items():
        out.setdefault(name, {"violations": count})
    return out


def _current_metrics(windows: list[dict[str, Any]], summary: dict[str, Any]) -> dict[str, Any]:
    """The numbers rules and checks look at: the last window's."""
    if not windows:
        return {}
    last = windows[-1]
    estimated = last.get("estimated", {})
    metrics = {
        key: last.get(key)
        for key in (
            "accuracy", "precision", "recall", "f1", "false_positive_rate", "auc", "error_rate", "volume",
            "labelled", "label_coverage", "latency_p50", "latency_p95", "latency_p99", "score_mean", "mae", "rmse",
        )
    }  # fmt: skip
    metrics["throughput"] = last.get("throughput_per_s")
    metrics["estimated_accuracy"] = estimated.get("accuracy")
    metrics["estimated_precision"] = estimated.get("precision")
    metrics["estimated_recall"] = estimated.get("recall")
    metrics["drift_share"] = summary["drift"].get("drift_share", 0.0)
    metrics["score_drift"] = bool(summary["score_drift"].get("drift", False))
    metrics["concept_drift"] = bool(summary["concept"].get("detected", False))
    return metrics


def _mark(
    name: str,
    value: float | None,
    target: float | None,
    higher_is_better: bool,
    margin: float = 0.0,
    note: str = "",
) -> dict[str, Any]:
    if value is None or target is None:
        return {
            "name": name,
            "value": value,
            "target": target,
            "status": "ok" if value is not None else "unknown",
            "note": note,
        }
    if higher_is_better:
        status = "failing" if value < target else "warning" if value < target + margin else "ok"
    else:
        status = "failing" if value > target else "warning" if value > target - margin else "ok"
    return {"name": name, "value": value, "target": target, "status": status, "note": note}


def _concept_note(concept: dict[str, Any]) -> str:
    worse = [c for c in concept.get("changes", []) if c["worse"]]
    if not worse:
        return str(concept.get("note", "error rate stable"))
    last = worse[-1]
    stable = "inputs stable" if concept.get("inputs_stable") else "inputs drifted too"
    return f"error rate {last['error_rate_before']:.1%} -> {last['error_rate_after']:.1%} from {last['at'][:10]}; {stable}"

"""A monitoring run: for each version of a model that served in the period, what happened per
window, whether the inputs drifted, whether the model got worse and why, with OK / warning /
failing marks; stored as a snapshot, then checked against the alert rules.
"""

from __future__ import annotations

import functools
import io
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shipyard.core import Settings, validate_model_name
from shipyard.core.durations import duration_text
from shipyard.core.errors import InvalidInput, Overloaded
from shipyard.core.values import jsonable
from shipyard.logstore import LogReader, label_text
from shipyard.monitoring import _repository as repo
from shipyard.monitoring._alerts import AlertManager
from shipyard.monitoring._checks import DEFAULT_TARGETS, Targets, checks, data_quality
from shipyard.monitoring._concept import detect_changes
from shipyard.monitoring._drift import DriftReport, compare
from shipyard.monitoring._estimate import Calibration, calibration_table
from shipyard.monitoring._fairness import FairnessSpec, fairness_metrics, load_fairness
from shipyard.monitoring._kpis import Kpi, load_kpis
from shipyard.monitoring._logs import LogQueries, Period, numpy_column
from shipyard.monitoring._report import (
    Alert,
    CalibrationRecord,
    ColumnDriftRecord,
    Concept,
    Confusion,
    DriftRecord,
    Estimates,
    FeatureViewHealth,
    MonitoringReport,
    NotMeasured,
    ReportRecord,
    VersionSummary,
    Window,
)
from shipyard.monitoring._root_cause import attributions, root_cause
from shipyard.monitoring._rules import Rule
from shipyard.monitoring._windows import (
    align,
    checked_span,
    current_metrics,
    estimates,
    merge_windows,
    residual_drift,
    top_k,
)
from shipyard.registry import LoadedBundle, ModelVersion, Registry

__all__ = ["DEFAULT_TARGETS", "Monitor", "MonitoringReport"]

log = logging.getLogger("shipyard.monitoring")

# a version registered without reference rows is compared with its first answers, once it has
# given this many (looked for from this long before its registration)
LOG_REFERENCE_ROWS = 1_000
LOG_REFERENCE_SEARCH = timedelta(days=30)


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
        kpis: Mapping[str, Sequence[Kpi]] | None = None,
        fairness: Mapping[str, FairnessSpec] | None = None,
    ) -> None:
        self.registry = registry
        self.kpis = dict(kpis or {})
        self.fairness = dict(fairness or {})
        self.reader = reader
        self.alert_manager = alerts
        self.targets = {**DEFAULT_TARGETS, **(targets or {})}
        self._references: dict[tuple[str, int], pa.Table | None] = {}
        self._first_answers: dict[tuple[str, int], tuple[pa.Table, str]] = {}
        self._slots = threading.BoundedSemaphore(concurrency) if concurrency else None

    @classmethod
    def from_settings(
        cls, settings: Settings, registry: Registry, *, concurrency: int | None = None
    ) -> Monitor:
        """A monitor over `settings`' logs; `concurrency` caps runs at once (servers: a run
        uses one DuckDB thread and at most that many run, so reports never starve predictions)."""
        webhooks = [u.strip() for u in (settings.alert_webhooks or "").split(",") if u.strip()]
        fairness = load_fairness(settings.config)
        manager = AlertManager(
            registry.database, actor=settings.actor, webhooks=webhooks, fairness=fairness
        )
        reader = LogReader(registry.artifacts, threads=1 if concurrency else None)
        kpis = load_kpis(settings.config)
        return cls(registry, reader, manager, concurrency=concurrency, kpis=kpis, fairness=fairness)

    # -- the run --------------------------------------------------------------------------------

    def latest(
        self,
        name: str,
        *,
        window: str = "1d",
        periods: int = 7,
        compute: Callable[[str, str, int], ReportRecord] | None = None,
    ) -> ReportRecord:
        """What a reader sees: the latest snapshot of this window length when it is recent
        (within the window, and at most an hour old), else a report computed now and not
        stored (no snapshot, no alert evaluation: reading changes nothing), by `compute`
        when given (a server computes off its prediction path)."""
        self.registry.get_model(name)
        step = checked_span(window, periods)
        found = self.registry.database.read(lambda conn: repo.snapshots(conn, name, window, 1))
        if found and found[0]["period_end"] >= datetime.now(UTC) - min(step, timedelta(hours=1)):
            stored: ReportRecord = found[0]["summary"]
            return stored
        if compute is not None:
            return compute(name, window, periods)
        return self.run(name, window=window, periods=periods, record=False).to_dict()

    def last_snapshot(self, name: str, window: str | None = None) -> ReportRecord | None:
        """The newest stored report of `name` (of this window length when given), however old:
        what a dashboard shows at once, whatever the size of the logs (None: none stored)."""
        self.registry.get_model(name)
        if window is None:
            found = self.registry.database.read(lambda conn: repo.newest_snapshot(conn, name))
            return None if found is None else found["summary"]
        checked_span(window, 1)
        rows = self.registry.database.read(lambda conn: repo.snapshots(conn, name, window, 1))
        return rows[0]["summary"] if rows else None

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
        step = checked_span(window, periods)
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
        end = align(moment, step)
        period = Period(end - periods * step, end, step)
        report = MonitoringReport(name, window, period, datetime.now(UTC))
        rows = LogQueries(self.reader, name, period).windows(
            self._positive(versions), {v: r.task for v, r in versions.items()}
        )
        errors = LogQueries(self.reader, name, period).errors()
        served = sorted({r["version"] for r in rows})
        for version in served:
            record = versions.get(version)
            if record is None:
                continue
            report.versions[version] = self._version_summary(
                name, record, period, window, rows, errors
            )
        if self.kpis.get(name) and report.versions:
            values = LogQueries(self.reader, name, period).kpis(self.kpis[name])
            for version, summary in report.versions.items():
                summary["kpis"] = values.get(version, [])  # type: ignore[typeddict-item]
        if not keep:
            return report
        if self.alert_manager is not None:
            report.alerts = jsonable(
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
    ) -> list[Alert]:
        """Evaluate the rules on the live versions that had traffic; retire the others' alerts.

        Windows end at `end` (the next window boundary); alerts open and resolve at `moment`,
        when the rules were evaluated, never at a boundary still in the future.
        """
        assert self.alert_manager is not None
        plan = self.registry.serving_plan().get(name)
        # never deployed and no production alias: every version with traffic counts as live
        live = {v.version for v in plan.variants} if plan is not None else set(served)
        served = [v for v in served if v in live]
        changed: list[Alert] = []
        if served:
            cache: dict[tuple[str, int], VersionSummary | None] = {}

            def summary_for(rule: Rule, version: int) -> VersionSummary | None:
                if rule.window is None or rule.window == step:
                    return report.to_dict()["versions"].get(str(version))
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
    ) -> VersionSummary | None:
        """A version's summary over one window of `length` ending at `end` (for rules with `over`)."""
        period = Period(end - length, end, length)
        queries = LogQueries(self.reader, name, period)
        rows = queries.windows(
            self._positive({record.version: record}), {record.version: record.task}
        )
        if not any(r["version"] == record.version for r in rows):
            return None
        summary = self._version_summary(
            name, record, period, duration_text(length), rows, queries.errors()
        )
        stored: VersionSummary = jsonable(summary)  # as the snapshot would hold it
        return stored

    # -- one version ----------------------------------------------------------------------------

    def _version_summary(
        self,
        name: str,
        record: ModelVersion,
        period: Period,
        window: str,
        rows: list[dict[str, Any]],
        errors: list[dict[str, Any]],
    ) -> VersionSummary:
        version = record.version
        mine = [r for r in rows if r["version"] == version]
        failed = [e for e in errors if e["version"] == version]
        windows = merge_windows(mine, failed, period)
        current_period = Period(period.end - period.step, period.end, period.step)
        current_queries = LogQueries(self.reader, name, current_period)
        current = current_queries.sample(version)
        positive = self._positive_label(record)
        drift = self._drift(name, record, current)
        # the version's bundle (every file checked), opened once for the checks that score with it
        bundle = functools.cache(lambda: self.registry.open(name, version))
        labelled = LogQueries(self.reader, name, period).sample(version, labelled_only=True)
        calibration_record, calibration = self._calibration(
            labelled, positive, current_period.start
        )
        estimated: Estimates = {"applies": True}
        if record.task == "binary":
            everything = LogQueries(self.reader, name, period).sample(version)
            estimates(windows, everything, record.threshold, calibration, period)
        else:
            estimated = {
                "applies": False,
                "note": "estimates before labels come from a binary classifier's calibrated "
                f"scores; they do not apply to a {record.task or 'model of unknown task'}",
            }
        summary: VersionSummary = {
            "version": version,
            "task": record.task,
            "window": window,
            "period": {"start": period.start, "end": period.end},
            "variants": sorted({r["variant"] for r in mine}),
            "windows": windows,
            "by_variant": [
                cast(Window, {k: v for k, v in r.items() if k != "version"}) for r in mine
            ],
            "drift": self._drift_record(name, record, drift),
            "score_drift": self._score_drift(name, record, current, bundle),
            "quality": data_quality(drift, current_queries.schema_violations()),
            "concept": self._concept(labelled, record.task, drift),
            "calibration": calibration_record,
            "residual_drift": (
                residual_drift(labelled, current_period.start)
                if record.task == "regression"
                else {}
            ),
            "estimates": estimated,
            "root_cause": root_cause(
                self.reader,
                record,
                drift,
                period,
                positive,
                attributions(bundle, record, current),
            ),
            "metrics": {},
            "checks": [],
        }
        declared = self.fairness.get(name)
        if declared is not None and record.task == "binary":
            summary["fairness"] = _fairness(declared, labelled, positive)
        views = _trained_views(record)
        if views:
            summary["feature_views"] = self._feature_views(views, min(period.end, self._now()))
        if record.task == "multiclass" and windows:
            last = windows[-1]
            summary["classes"] = {
                "per_class": last.get("per_class", []),
                "confusion": cast(Confusion, last.get("confusion", {"classes": [], "matrix": []})),
            }
        summary["metrics"] = current_metrics(windows, summary)
        if record.task == "multiclass":
            classes = self.registry.classes(name, version) or []
            summary["metrics"].update(
                top_k(labelled, [label_text(c) for c in classes], current_period.start)
            )
        summary["checks"] = checks(record, summary, self._targets(name))
        return summary

    def _now(self) -> datetime:
        return datetime.now(UTC)

    def _feature_views(self, views: list[str], now: datetime) -> dict[str, FeatureViewHealth]:
        """How fresh (and how drifted) the store's values of each view are at `now`."""
        found = self.registry.database.read(lambda conn: repo.feature_health(conn, views))
        out: dict[str, FeatureViewHealth] = {}
        for view, health in found.items():
            newest = health["newest_event"]
            out[view] = {
                **health,  # type: ignore[typeddict-item]
                "freshness_seconds": (now - newest).total_seconds() if newest else None,
            }
        return out

    def reference(self, name: str, version: int) -> pa.Table | None:
        """The version's reference sample (None for bundles registered before samples existed)."""
        key = (name, version)
        if key not in self._references:
            raw = self.registry.read_artifact(name, version, "reference/sample.parquet")
            self._references[key] = pq.read_table(io.BytesIO(raw)) if raw is not None else None
        return self._references[key]

    def _reference_for(self, name: str, record: ModelVersion) -> tuple[pa.Table, str] | None:
        """What the version's inputs and answers are compared with: its reference sample, or,
        for a version registered without one (a federated model: no row of its training data
        is at the server), its first `LOG_REFERENCE_ROWS` answers once it has given that many
        (fixed from then on: later answers come after them)."""
        sample = self.reference(name, record.version)
        if sample is not None:
            return sample, "its reference sample (rows of its training data)"
        key = (name, record.version)
        if key not in self._first_answers:
            # from a month before its registration (hosts' clocks differ, and a replayed
            # history, the demo's, is logged at past times) to now, however quiet it has been
            start = record.created_at - LOG_REFERENCE_SEARCH
            end = self._now()
            if end <= start:
                return None
            first = LogQueries(self.reader, name, Period(start, end, end - start)).first(
                record.version, LOG_REFERENCE_ROWS
            )
            if first.num_rows < LOG_REFERENCE_ROWS:
                return None  # not yet: looked for again at the next run
            times = first.column("ts")
            self._first_answers[key] = (
                pa.Table.from_struct_array(first.column("features").combine_chunks()),
                f"its first {first.num_rows} answers ({times[0].as_py():%Y-%m-%d %H:%M} to "
                f"{times[-1].as_py():%Y-%m-%d %H:%M}); it was registered without rows of its "
                "training data",
            )
        return self._first_answers[key]

    def _drift(self, name: str, record: ModelVersion, current: pa.Table) -> DriftReport | None:
        found = self._reference_for(name, record)
        if found is None or current.num_rows == 0 or "features" not in current.column_names:
            return None
        reference = found[0]
        features = pa.Table.from_struct_array(current.column("features").combine_chunks())
        columns = [c for c in reference.column_names if c in features.column_names]
        if not columns:
            return None
        # the whole reference: a feature the logs no longer carry is reported, not skipped
        return compare(reference, features.select(columns))

    def _drift_record(
        self, name: str, record: ModelVersion, drift: DriftReport | None
    ) -> DriftRecord:
        if drift is None:
            return {"columns": {}, "drifted": [], "drift_share": 0.0}
        out = drift.to_dict()
        found = self._reference_for(name, record)
        if found is not None:
            out["reference"] = found[1]
        return out

    def _score_drift(
        self,
        name: str,
        record: ModelVersion,
        current: pa.Table,
        open_bundle: Callable[[], LoadedBundle],
    ) -> ColumnDriftRecord | NotMeasured:
        """What the model answered in the window against what it answers on its own reference
        sample: the positive class's score (binary), the predicted value (regression), or the
        predicted class as a category (multiclass)."""
        found = self._reference_for(name, record)
        if found is None or current.num_rows == 0:
            return {}
        reference = found[0]
        if record.task not in ("binary", "regression", "multiclass"):
            return {}
        bundle = open_bundle()
        columns = record.signature.validate_frame(reference.to_pandas())
        answers = np.asarray(bundle.predictor.predict(columns))
        if record.task == "binary":
            before, now = answers[:, 1], numpy_column(current, "score").astype(np.float64)
        elif record.task == "regression":
            before, now = answers.reshape(-1), numpy_column(current, "value").astype(np.float64)
        else:
            classes = bundle.metadata["model"].get("classes")  # the bundle just read holds them
            if not classes or answers.ndim != 2 or answers.shape[1] != len(classes):
                return {}
            names = np.array([label_text(c) for c in classes], dtype=object)
            before, now = names[answers.argmax(axis=1)], numpy_column(current, "label")
        report = compare(pa.table({"score": before}), pa.table({"score": now}))
        return report.columns["score"].to_dict()

    def _concept(self, labelled: pa.Table, task: str | None, drift: DriftReport | None) -> Concept:
        if task not in ("binary", "multiclass"):
            return {
                "applies": False,
                "detected": False,
                "changes": [],
                "labelled": labelled.num_rows,
                "note": "the detector watches a classifier's right/wrong stream; for a "
                f"{task or 'model of unknown task'} see residual drift",
            }
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
            "applies": True,
            "detected": bool(worse) and inputs_stable,
            "performance_change": bool(worse),
            "inputs_stable": inputs_stable,
            "changes": [c.to_dict() for c in changes],
            "labelled": labelled.num_rows,
            "error_rate": float(wrong.mean()),
        }

    def _calibration(
        self, labelled: pa.Table, positive: str | None, before: datetime
    ) -> tuple[CalibrationRecord, Calibration]:
        if positive is None or labelled.num_rows == 0:
            return {"bins": [], "ece": None}, Calibration()
        scores = numpy_column(labelled, "score").astype(np.float64)
        is_positive = numpy_column(labelled, "truth") == positive
        times = np.array([t.timestamp() for t in labelled.column("ts").to_pylist()])
        earlier = times < before.timestamp()
        calibration = Calibration.fit(scores[earlier], is_positive[earlier])
        return calibration_table(scores, is_positive.astype(np.float64)), calibration

    def _targets(self, name: str) -> Targets:
        """The model's targets: its alert rules' thresholds over the defaults."""
        rules = self.alert_manager.rules(name) if self.alert_manager is not None else []
        return Targets.of(self.targets, [r["expression"] for r in rules])

    def _positive(self, versions: dict[int, ModelVersion]) -> str | None:
        latest = max(versions.values(), key=lambda v: v.version, default=None)
        return self._positive_label(latest) if latest is not None else None

    def _positive_label(self, record: ModelVersion) -> str | None:
        """The positive class of a binary model, as text (how the logs store labels)."""
        positive = self.registry.positive_class(record)
        return label_text(positive) if positive is not None else None


def _fairness(
    spec: FairnessSpec, labelled: pa.Table, positive: str | None
) -> dict[str, dict[str, Any]]:
    """Each declared attribute's groups on a sample of the labelled predictions: the
    attribute's column (a logged input), the predicted and the true label."""
    if labelled.num_rows == 0 or "features" not in labelled.column_names:
        return {}
    features = pa.Table.from_struct_array(labelled.column("features").combine_chunks())
    columns = {n: features.column(n).to_numpy(zero_copy_only=False) for n in features.column_names}
    predicted = labelled.column("label").to_pylist()
    actual = np.asarray([label_text(t) == positive for t in labelled.column("truth").to_pylist()])
    flagged = np.asarray([label_text(p) == positive for p in predicted])
    try:
        return fairness_metrics(spec, columns, actual, flagged)
    except InvalidInput as error:  # an attribute the model's inputs do not carry
        return {a.name: {"error": error.message} for a in spec.attributes}


def _trained_views(record: ModelVersion) -> list[str]:
    """The feature views a version was trained on (its lineage's `feature_store`)."""
    found = (record.lineage or {}).get("feature_store") or {}
    views = found.get("views") if isinstance(found, dict) else None
    return sorted(views) if isinstance(views, dict) else []

"""What each dashboard page shows, read from the same Python APIs the CLI and HTTP API use.

Every function here returns plain data (dicts, lists, numbers, text) for one page; the
templates lay it out and the routes only pass it through. Monitoring figures come from the
stored snapshots, so a page opens in the time one database read takes whatever the size of
the logs; only a model with no snapshot at all gets a report computed on the spot.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shipyard.access import Caller, KeyStore
from shipyard.explain import compare_importance
from shipyard.monitoring import AlertManager, Monitor, ReportRecord, parse_window
from shipyard.registry import ModelVersion, Registry
from shipyard.retraining import PipelineRecord, pending_approvals, pipeline_history
from shipyard.tracking import Tracker

__all__ = [
    "Views",
    "health_of",
]

Compute = Callable[[str, str, int], ReportRecord]

# the seed's targets for the monitoring page: (metric, label, better when higher)
CLASSIFIER_LINES = (
    ("accuracy", "Accuracy", True),
    ("precision", "Precision", True),
    ("recall", "Recall", True),
    ("false_positive_rate", "False positive rate", False),
)
REGRESSOR_LINES = (("mae", "MAE", False), ("rmse", "RMSE", False))


def health_of(report: ReportRecord | None) -> str:
    """failing / warning / ok over every check of every version; unknown without a report."""
    if report is None:
        return "unknown"
    marks = {c["status"] for s in report["versions"].values() for c in s.get("checks", [])}
    for status in ("failing", "warning", "ok"):
        if status in marks:
            return status
    return "unknown"


def _ago(moment: Any, now: datetime) -> str:
    if moment is None:
        return ""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    seconds = max(0.0, (now - moment).total_seconds())
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return "just now"


@dataclass
class Views:
    """The dashboard's reads, over the server's services."""

    registry: Registry
    monitor: Monitor
    tracker: Tracker
    keys: KeyStore
    compute: Compute

    @property
    def alerts(self) -> AlertManager:
        manager = self.monitor.alert_manager
        assert manager is not None
        return manager

    # -- models -----------------------------------------------------------------------------------

    def models(self, caller: Caller) -> list[dict[str, Any]]:
        now = datetime.now(UTC)
        rows = []
        for model in self.registry.list_models():
            if not caller.may_see(model.name):
                continue
            deployment = self.registry.deployment(model.name)
            snapshot = self.monitor.last_snapshot(model.name)
            alerts = self.alerts.alerts(model.name, None, 1)
            pipelines = self.pipelines(model.name, 1)
            rows.append(
                {
                    "name": model.name,
                    "description": model.description,
                    "versions": model.version_count,
                    "latest": model.latest_version,
                    "aliases": model.aliases,
                    "variants": [v.to_dict() for v in deployment.variants] if deployment else [],
                    "stopped": deployment is not None and deployment.stopped,
                    "health": health_of(snapshot),
                    "checked": _ago(snapshot["computed_at"], now) if snapshot else "",
                    "alert": alerts[0] if alerts else None,
                    "alert_ago": _ago(alerts[0]["opened_at"], now) if alerts else "",
                    "retrain": pipelines[0] if pipelines else None,
                    "retrain_ago": _ago(pipelines[0]["updated_at"], now) if pipelines else "",
                }
            )
        return rows

    def model(self, name: str, caller: Caller) -> dict[str, Any]:
        found = self.registry.get_model(name)
        versions = sorted(self.registry.list_versions(name), key=lambda v: -v.version)
        deployment = self.registry.deployment(name)
        metric_names = sorted({k for v in versions for k, x in v.metrics.items() if _number(x)})
        explained = next((v for v in versions if v.importance), None)
        return {
            "model": found.to_dict(),
            "versions": [caller.shown(_version(v)) for v in versions],
            "importance": _importance(explained) if explained is not None else None,
            "metric_names": metric_names,
            "deployment": deployment.to_dict() if deployment else None,
            "history": [d.to_dict() for d in self.registry.deployment_history(name, limit=10)],
        }

    def compare(self, name: str, a: int, b: int, caller: Caller) -> dict[str, Any]:
        left, right = self.registry.get_version(name, a), self.registry.get_version(name, b)
        metrics = sorted(set(left.metrics) | set(right.metrics))
        params = sorted(set(left.params) | set(right.params))
        columns_a = {c.name: c for c in left.signature.columns}
        columns_b = {c.name: c for c in right.signature.columns}
        signature = []
        for column in sorted(set(columns_a) | set(columns_b)):
            was, now = columns_a.get(column), columns_b.get(column)
            change = (
                "added"
                if was is None
                else "removed"
                if now is None
                else "changed"
                if was.to_dict() != now.to_dict()
                else "same"
            )
            signature.append(
                {
                    "column": column,
                    "a": was.to_dict() if was else None,
                    "b": now.to_dict() if now else None,
                    "change": change,
                }
            )
        return {
            "name": name,
            "a": caller.shown(_version(left)),
            "b": caller.shown(_version(right)),
            "importance": compare_importance(left.importance, right.importance)[:IMPORTANCE_SHOWN],
            "metrics": [
                {
                    "name": k,
                    "a": left.metrics.get(k),
                    "b": right.metrics.get(k),
                    "delta": _delta(left.metrics.get(k), right.metrics.get(k)),
                }
                for k in metrics
            ],
            "params": [
                {
                    "name": k,
                    "a": left.params.get(k),
                    "b": right.params.get(k),
                    "differs": repr(left.params.get(k)) != repr(right.params.get(k)),
                }
                for k in params
            ],
            "signature": signature,
            "lineage": {
                "a": caller.shown(left.lineage),
                "b": caller.shown(right.lineage),
                "runs": [left.run_id, right.run_id],
                "fingerprints": [
                    caller.shown(left.data_fingerprint),
                    caller.shown(right.data_fingerprint),
                ],
            },
        }

    # -- monitoring ---------------------------------------------------------------------------------

    def monitoring(
        self, name: str, window: str | None, periods: int | None, version: int | None
    ) -> dict[str, Any]:
        """The production monitoring page: the newest snapshot of `window` (of any window when
        None) when it covers `periods` windows (any number when None), else a report computed
        now and not stored."""
        report = self.monitor.last_snapshot(name, window)
        if report is not None and periods is not None and _windows_in(report) != periods:
            report = None
        stored = report is not None
        if report is None:
            report = self.compute(name, window or "1d", periods or 7)
        versions = sorted(report["versions"], key=int, reverse=True)
        chosen = str(version) if version is not None and str(version) in versions else None
        if chosen is None and versions:
            deployment = self.registry.deployment(name)
            serving = deployment.primary.version if deployment and deployment.variants else None
            chosen = str(serving) if str(serving) in versions else versions[0]
        summary = report["versions"].get(chosen) if chosen else None
        return {
            "name": name,
            "report": report,
            "stored": stored,
            "window": report["window"],
            "periods": _windows_in(report),
            "versions": versions,
            "version": chosen,
            "summary": summary,
            "performance": _performance(summary) if summary else [],
            "series": _series(summary) if summary else {},
            "drift": _drift(summary) if summary else [],
            "missing": _missing(summary) if summary else None,
            "variants": _variants(summary) if summary else [],
            "alerts": _unique_alerts([*self.alerts.alerts(name, "firing", 20), *report["alerts"]]),
            "kpis": summary.get("kpis", []) if summary else [],
        }

    # -- retraining ---------------------------------------------------------------------------------

    def pipelines(self, name: str, limit: int = 20) -> list[PipelineRecord]:
        return pipeline_history(self.registry, name, limit)

    def retraining(self, name: str, caller: Caller) -> dict[str, Any]:
        self.registry.get_model(name)
        pipelines = caller.shown(self.pipelines(name, 20))
        alerts = {a["id"]: a for a in self.alerts.alerts(name, None, 200)}
        for pipeline in pipelines:
            pipeline["alerts"] = [
                alerts[i] for i in pipeline["trigger"].get("alerts", []) if i in alerts
            ]
        return {
            "name": name,
            "pipelines": pipelines,
            "pending": caller.shown(pending_approvals(self.registry, name)),
        }

    # -- runs -----------------------------------------------------------------------------------

    def runs(self, experiment: str | None, caller: Caller, limit: int = 200) -> dict[str, Any]:
        allowed = None
        if caller.key.model is not None:  # a bound key sees the runs behind its model
            allowed = {v.run_id for v in self.registry.list_versions(caller.key.model) if v.run_id}
        runs = self.tracker.list_runs(experiment, limit, among=allowed)
        everything = self.tracker.list_runs(None, 1000, among=allowed)
        return {
            "runs": [caller.shown(r.to_dict()) for r in runs],
            "experiments": sorted({r.experiment for r in everything}),
            "experiment": experiment,
        }

    def compare_runs(self, run_ids: Sequence[str], caller: Caller) -> dict[str, Any]:
        if caller.key.model is not None:
            allowed = {v.run_id for v in self.registry.list_versions(caller.key.model) if v.run_id}
            for run_id in run_ids:
                if run_id not in allowed:
                    from shipyard.core.errors import NotFound

                    raise NotFound(f"no run {run_id!r} (shipyard runs list)")
        compared = self.tracker.compare(list(run_ids))
        curves: dict[str, dict[str, list[list[float]]]] = {}
        for run_id in run_ids:
            for point in self.tracker.metric_history(run_id):
                series = curves.setdefault(point["key"], {}).setdefault(run_id, [])
                series.append([float(point["step"]), float(point["value"])])
        compared["charts"] = [
            _curve_chart(key, runs)
            for key, runs in sorted(curves.items())
            if any(len(points) > 1 for points in runs.values())
        ][:12]
        compared["records"] = [caller.shown(self.tracker.get(r).to_dict()) for r in run_ids]
        return compared


def _curve_chart(key: str, runs: dict[str, list[list[float]]]) -> dict[str, Any]:
    """One metric's curves, a series per run over the union of their steps."""
    steps = sorted({step for points in runs.values() for step, _ in points})
    series = []
    for run_id, points in runs.items():
        at: dict[float, float] = {point[0]: point[1] for point in points}
        series.append({"label": run_id, "values": [at.get(step) for step in steps]})
    return {
        "title": key,
        "kind": "line",
        "time": False,
        "x": steps,
        "x_label": "step",
        "y_label": key,
        "series": series,
    }


def _windows_in(report: ReportRecord) -> int:
    """How many windows a report covers."""
    period = report["period"]
    start, end = (datetime.fromisoformat(str(period[k])) for k in ("start", "end"))
    step = parse_window(report["window"])
    return max(1, round((end - start) / step))


def _missing(summary: Any) -> dict[str, Any]:
    """The missing-feature rate of the last window: over every feature, and the worst one."""
    rates = {
        name: q["missing_rate"]
        for name, q in summary.get("quality", {}).items()
        if q.get("missing_rate") is not None
    }
    if not rates:
        return {"mean": None, "worst": None, "worst_rate": None}
    worst = max(rates, key=lambda k: rates[k])
    return {"mean": sum(rates.values()) / len(rates), "worst": worst, "worst_rate": rates[worst]}


def _variants(summary: Any) -> list[dict[str, Any]]:
    """Each variant's last window (canary, A/B arms and primary apart)."""
    rows = summary.get("by_variant", [])
    if not rows:
        return []
    last = max(str(r.get("window_start")) for r in rows)
    keys = ("volume", "accuracy", "mae", "latency_p95", "error_rate", "labelled")
    return [
        {"variant": r.get("variant"), **{k: r.get(k) for k in keys}}
        for r in rows
        if str(r.get("window_start")) == last
    ]


def _unique_alerts(alerts: list[Any]) -> list[Any]:
    seen: set[Any] = set()
    out = []
    for alert in alerts:
        key = alert.get("id") or (
            alert.get("rule_id"),
            alert.get("version"),
            str(alert.get("opened_at")),
        )
        if key not in seen:
            seen.add(key)
            out.append(alert)
    return out


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


IMPORTANCE_SHOWN = 12  # features the model and compare pages list by importance


def _importance(version: ModelVersion) -> dict[str, Any]:
    """A version's most relied-on features, each with its share of the total."""
    importance = version.importance or {}
    features = importance.get("features", {})
    total = sum(features.values()) or 1.0
    return {
        "version": version.version,
        "method": importance.get("method"),
        "space": importance.get("space"),
        "rows": importance.get("rows"),
        "features": [
            {"feature": k, "value": v, "share": v / total}
            for k, v in list(features.items())[:IMPORTANCE_SHOWN]
        ],
    }


def _delta(a: Any, b: Any) -> float | None:
    return float(b) - float(a) if _number(a) and _number(b) else None


def _version(v: ModelVersion) -> dict[str, Any]:
    record = v.to_dict()
    record["columns"] = len(v.signature.columns)
    return record


def _performance(summary: Any) -> list[dict[str, Any]]:
    """The performance lines of the seed's page, each against its target: realised from the
    labels back so far, estimated before labels where the version's task allows."""
    checks = {c["name"]: c for c in summary.get("checks", [])}
    metrics = summary.get("metrics", {})
    lines = REGRESSOR_LINES if summary.get("task") == "regression" else CLASSIFIER_LINES
    out = []
    for key, label, higher in lines:
        check = checks.get(key, {})
        out.append(
            {
                "key": key,
                "label": label,
                "value": metrics.get(key),
                "estimated": metrics.get(f"estimated_{key}"),
                "target": check.get("target"),
                "status": check.get("status", "unknown"),
                "note": check.get("note", ""),
                "higher_is_better": higher,
            }
        )
    return out


def _series(summary: Any) -> dict[str, Any]:
    """Per window: quality (realised and estimated), latency percentiles, throughput, error
    and missing rates, as columns a chart reads."""
    windows = summary.get("windows", [])
    times = [_epoch(w.get("window_start")) for w in windows]
    task = summary.get("task")

    def column(key: str) -> list[Any]:
        return [w.get(key) for w in windows]

    estimated = [w.get("estimated", {}) or {} for w in windows]
    quality_key = "mae" if task == "regression" else "accuracy"
    return {
        "x": times,
        "quality": {
            "label": "MAE" if task == "regression" else "accuracy",
            "realised": column(quality_key),
            "estimated": [e.get(quality_key) for e in estimated],
        },
        "latency": {
            "p50": column("latency_p50"),
            "p95": column("latency_p95"),
            "p99": column("latency_p99"),
        },
        "throughput": column("throughput_per_s"),
        "volume": column("volume"),
        "error_rate": column("error_rate"),
        "labelled": column("labelled"),
    }


def _drift(summary: Any) -> list[dict[str, Any]]:
    """Per feature: the verdict, the missing rate, and the histograms behind it."""
    columns = summary.get("drift", {}).get("columns", {})
    quality = summary.get("quality", {})
    out = []
    for name, record in sorted(columns.items(), key=lambda kv: (not kv[1]["drift"], kv[0])):
        stats = record.get("stats", {})
        histogram = stats.get("histogram")
        bars: dict[str, Any] | None = None
        if histogram:
            edges = histogram["edges"]
            bars = {
                "labels": [
                    f"{_short(edges[i])} to {_short(edges[i + 1])}" for i in range(len(edges) - 1)
                ],
                "reference": histogram["reference"],
                "current": histogram["current"],
            }
        elif stats.get("shares"):
            shares = stats["shares"]
            bars = {
                "labels": [str(c) for c in shares["categories"]],
                "reference": shares["reference"],
                "current": shares["current"],
            }
        out.append(
            {
                "column": name,
                "kind": record["kind"],
                "method": record["method"],
                "statistic": record["statistic"],
                "effect": record["effect"],
                "effect_size": record["effect_size"],
                "threshold": record["threshold"],
                "drift": record["drift"],
                "status": record["status"],
                "reason": record["reason"],
                "missing_rate": quality.get(name, {}).get("missing_rate"),
                "bars": bars,
            }
        )
    return out


def _short(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1e4 else f"{value:,.0f}"


def _epoch(moment: Any) -> float | None:
    if moment is None:
        return None
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return float(moment.timestamp())

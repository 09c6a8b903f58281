"""OK / warning / failing marks on a version's last window, as its task measures quality,
and the targets they are measured against."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shipyard.monitoring._drift import DriftReport
from shipyard.monitoring._report import (
    Check,
    Concept,
    DataQuality,
    FeatureViewHealth,
    Status,
    VersionSummary,
)
from shipyard.monitoring._rules import Rule, parse_rule
from shipyard.registry import ModelVersion

__all__ = ["DEFAULT_TARGETS", "REGRESSION_TOLERANCE", "Targets", "checks", "data_quality"]

DEFAULT_TARGETS: dict[str, float] = {
    "accuracy": 0.90,
    "latency_p95_ms": 100.0,
    "error_rate": 0.01,
    "missing_rate_increase": 0.05,
    "out_of_range_rate": 0.05,
    "unseen_share": 0.01,
    "r2": 0.0,
}
# a regressor's MAE / RMSE fail when this many times what it was registered with
REGRESSION_TOLERANCE = 1.25


@dataclass(frozen=True)
class Targets:
    """What "good" is for one model: an alert rule's threshold for a metric when the model has
    such a rule (the rule says where the team draws the line), else the default."""

    defaults: dict[str, float]
    rules: tuple[Rule, ...] = ()

    @classmethod
    def of(cls, defaults: dict[str, float], expressions: list[str]) -> Targets:
        return cls(defaults, tuple(parse_rule(e) for e in expressions))

    def __getitem__(self, name: str) -> float:
        return self.defaults[name]

    def target(self, metric: str, default: float | None) -> float | None:
        """The threshold of a model-level rule on `metric`, else `default` (None: no target)."""
        for rule in self.rules:
            if rule.metric == metric and rule.threshold is not None and rule.feature is None:
                return rule.threshold
        return default


def checks(record: ModelVersion, summary: VersionSummary, targets: Targets) -> list[Check]:
    """OK / warning / failing marks on the last window, with the task's own quality checks
    first (see `_quality_checks`), then serving, data and drift checks."""
    metrics = summary["metrics"]
    out = _quality_checks(record, summary, targets)
    latency_target = targets.target("latency_p95", targets["latency_p95_ms"])
    out.append(
        _mark(
            "latency p95 (ms)",
            metrics.get("latency_p95"),
            latency_target,
            higher_is_better=False,
            margin=0.2 * (latency_target or 0.0),
        )
    )
    out.append(
        _mark(
            "error rate",
            metrics.get("error_rate"),
            targets.target("error_rate", targets["error_rate"]),
            higher_is_better=False,
            margin=targets["error_rate"],
        )
    )
    quality = summary["quality"]
    worse_missing = [
        f
        for f, q in quality.items()
        if q.get("missing_increase", 0) > targets["missing_rate_increase"]
    ]
    out.append({"name": "missing features", "value": len(worse_missing), "target": 0,
                   "status": "failing" if worse_missing else "ok", "note": ", ".join(worse_missing)})  # fmt: skip
    out_of_range = [
        f
        for f, q in quality.items()
        if (q.get("out_of_range_rate") or 0) > targets["out_of_range_rate"]
    ]
    out.append({"name": "out-of-range values", "value": len(out_of_range), "target": 0,
                   "status": "warning" if out_of_range else "ok", "note": ", ".join(out_of_range)})  # fmt: skip
    unseen = [
        f for f, q in quality.items() if (q.get("unseen_share") or 0) > targets["unseen_share"]
    ]
    out.append({"name": "unseen categories", "value": len(unseen), "target": 0,
                   "status": "warning" if unseen else "ok", "note": ", ".join(unseen)})  # fmt: skip
    violations = {f: q["violations"] for f, q in quality.items() if q.get("violations")}
    out.append({"name": "schema violations", "value": sum(violations.values()), "target": 0,
                   "status": "warning" if violations else "ok", "note": ", ".join(f"{f} ({n})" for f, n in violations.items())})  # fmt: skip
    drifted = summary["drift"].get("drifted", [])
    out.append({"name": "drifted features", "value": len(drifted), "target": 0,
                   "status": "warning" if drifted else "ok", "note": ", ".join(drifted)})  # fmt: skip
    score = summary["score_drift"]
    if "drift" in score:
        out.append({"name": "score drift" if record.task == "binary" else "prediction drift",
                       "value": score["effect_size"], "target": score["threshold"],
                       "status": "warning" if score["drift"] else "ok", "note": score["reason"]})  # fmt: skip
    residual = summary["residual_drift"]
    if "drift" in residual:
        out.append({"name": "residual drift", "value": residual["effect_size"], "target": residual["threshold"],
                       "status": "warning" if residual["drift"] else "ok", "note": residual["reason"]})  # fmt: skip
    for view, health in sorted(summary.get("feature_views", {}).items()):
        out.append(_freshness(view, health))
        if health["drifted"]:
            out.append({"name": f"feature drift ({view})", "value": health["drift_share"], "target": 0,
                        "status": "warning", "note": "at the store: " + ", ".join(health["drifted"])})  # fmt: skip
    concept = summary["concept"]
    if concept.get("applies", True):
        out.append({"name": "concept drift", "value": concept.get("detected", False), "target": None,
                       "status": "failing" if concept.get("detected") else ("warning" if concept.get("performance_change") else "ok"),
                       "note": _concept_note(concept)})  # fmt: skip
    else:
        out.append({"name": "concept drift", "value": None, "target": None, "status": "unknown",
                       "note": concept.get("note", "")})  # fmt: skip
    return out


def _quality_checks(record: ModelVersion, summary: VersionSummary, targets: Targets) -> list[Check]:
    """How good the predictions were, as the task measures it.

    binary       accuracy (and, before labels, estimated accuracy), false-positive rate
    multiclass   accuracy, macro F1, the class with the lowest recall
    regression   MAE and RMSE (target: an alert rule's threshold, else 1.25x the value
                 the version was registered with, else none), R² (target 0: a model
                 worse than predicting the mean fails)
    """
    metrics = summary["metrics"]
    coverage = (
        f"{metrics.get('labelled', 0)} labelled, coverage {metrics.get('label_coverage', 0):.0%}"
    )
    checks = []
    if record.task == "regression":
        unusable = metrics.get("unusable_labels") or 0
        note = coverage + (f"; {unusable} labels are not numbers" if unusable else "")
        for metric, title in (("mae", "MAE"), ("rmse", "RMSE")):
            registered = record.metrics.get(metric)
            default = (
                REGRESSION_TOLERANCE * float(registered)
                if isinstance(registered, int | float)
                else None
            )
            target = targets.target(metric, default)
            hint = (
                ""
                if target is not None
                else f"; no target: register with metrics={{'{metric}': ...}} or add a rule '{metric} > ...'"
            )
            checks.append(_mark(title, metrics.get(metric), target, higher_is_better=False,
                                margin=0.1 * (target or 0), note=note + hint))  # fmt: skip
        r2_target = targets.target("r2", targets["r2"])
        checks.append(_mark("R²", metrics.get("r2"), r2_target, higher_is_better=True, margin=0.1,
                            note="1 - MSE / variance of the labels"))  # fmt: skip
        return checks
    accuracy_target = targets.target("accuracy", targets["accuracy"])
    checks.append(_mark("accuracy", metrics.get("accuracy"), accuracy_target, higher_is_better=True, margin=0.02,
                        note=coverage))  # fmt: skip
    if record.task == "multiclass":
        macro_target = targets.target("macro_f1", None)
        checks.append(_mark("macro F1", metrics.get("macro_f1"), macro_target, higher_is_better=True, margin=0.02,
                            note=f"weighted F1 {_number(metrics.get('weighted_f1'))}"))  # fmt: skip
        breakdown = summary.get("classes")
        classes = [c for c in breakdown["per_class"] if c["support"]] if breakdown else []
        if classes:
            weakest = min(classes, key=lambda c: c["recall"])
            checks.append({"name": "lowest class recall", "value": weakest["recall"], "target": None, "status": "ok",
                           "note": f"class {weakest['class']} ({weakest['support']} labelled)"})  # fmt: skip
        return checks
    if metrics.get("accuracy") is None and metrics.get("estimated_accuracy") is not None:
        checks.append(_mark("estimated accuracy", metrics["estimated_accuracy"], accuracy_target, higher_is_better=True, margin=0.02,
                            note="before labels, from calibrated scores"))  # fmt: skip
    checks.append(_mark("false-positive rate", metrics.get("false_positive_rate"), None, True))
    return checks


def data_quality(drift: DriftReport | None, violations: dict[str, int]) -> dict[str, DataQuality]:
    out: dict[str, DataQuality] = {}
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


def _mark(
    name: str,
    value: float | None,
    target: float | None,
    higher_is_better: bool,
    margin: float = 0.0,
    note: str = "",
) -> Check:
    if value is None or target is None:
        return {
            "name": name,
            "value": value,
            "target": target,
            "status": "ok" if value is not None else "unknown",
            "note": note,
        }
    status: Status
    if higher_is_better:
        status = "failing" if value < target else "warning" if value < target + margin else "ok"
    else:
        status = "failing" if value > target else "warning" if value > target - margin else "ok"
    return {"name": name, "value": value, "target": target, "status": status, "note": note}


def _freshness(view: str, health: FeatureViewHealth) -> Check:
    """The age of the view's newest value in the online store, against its TTL: past it the
    view serves nothing but stale values (failing); past half of it, a warning."""
    age, ttl = health["freshness_seconds"], health["ttl_seconds"]
    name = f"freshness ({view}, hours)"
    if age is None:
        return {"name": name, "value": None, "target": None, "status": "failing" if health["version"] is None else "unknown",
                "note": "never materialized: shipyard features materialize " + view}  # fmt: skip
    hours = age / 3600
    if ttl is None:
        return {
            "name": name,
            "value": hours,
            "target": None,
            "status": "ok",
            "note": "the view has no TTL",
        }
    status: Status = "failing" if age > ttl else "warning" if age > ttl / 2 else "ok"
    return {"name": name, "value": hours, "target": ttl / 3600, "status": status,
            "note": f"newest value {str(health['newest_event'])[:19]}; TTL {ttl / 3600:g} h"}  # fmt: skip


def _concept_note(concept: Concept) -> str:
    worse = [c for c in concept["changes"] if c["worse"]]
    if not worse:
        return str(concept.get("note", "error rate stable"))
    last = worse[-1]
    stable = "inputs stable" if concept.get("inputs_stable") else "inputs drifted too"
    return f"error rate {last['error_rate_before']:.1%} -> {last['error_rate_after']:.1%} from {last['at'][:10]}; {stable}"


def _number(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "-"

"""Windows of a monitoring period: their bounds, the rows of every variant merged into one per
window, estimates before labels, and the numbers of the last window that rules and checks
read."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa

from shipyard.core.errors import InvalidInput
from shipyard.monitoring._drift import compare
from shipyard.monitoring._estimate import Calibration, estimate
from shipyard.monitoring._logs import Period, numpy_column
from shipyard.monitoring._report import (
    ColumnDriftRecord,
    Metrics,
    NotMeasured,
    VersionSummary,
    Window,
)
from shipyard.monitoring._rules import MAX_WINDOW, parse_window

__all__ = [
    "MAX_PERIODS",
    "align",
    "checked_span",
    "current_metrics",
    "estimates",
    "merge_windows",
    "residual_drift",
    "top_k",
]


MAX_PERIODS = 400


def checked_span(window: str, periods: int) -> timedelta:
    """The window length, once `periods` of them are known to be a span worth computing."""
    step = parse_window(window)
    if not 1 <= periods <= MAX_PERIODS:
        raise InvalidInput(f"periods must be between 1 and {MAX_PERIODS}, got {periods}")
    if step * periods > MAX_WINDOW:
        raise InvalidInput(
            f"{periods} windows of {window} span more than ten years; ask for fewer or shorter ones"
        )
    return step


def align(moment: datetime, step: timedelta) -> datetime:
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


def merge_windows(
    rows: list[dict[str, Any]], errors: list[dict[str, Any]], period: Period
) -> list[Window]:
    """One row per window (variants added up), with error and rejection rates."""
    out: dict[datetime, dict[str, Any]] = {}
    for row in rows:
        start = row["window_start"]
        if row["variant"] == "shadow":
            continue
        merged = out.setdefault(start, {"window_start": start, "parts": []})
        merged["parts"].append(row)
    result: list[Window] = []
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
        result.append(cast(Window, merged))
    return result


def estimates(
    windows: list[Window],
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
        start = row["window_start"]
        assert isinstance(start, datetime)  # while the run computes
        i = round((start - period.start).total_seconds() / period.seconds)
        mask = index == i
        if mask.any():
            row["estimated"] = estimate(scores[mask], threshold, calibration)


def current_metrics(windows: list[Window], summary: VersionSummary) -> Metrics:
    """The numbers rules and checks look at: the last window's."""
    if not windows:
        return {}
    last = windows[-1]
    estimated = last.get("estimated", {})
    metrics: Metrics = {
        key: last.get(key)  # type: ignore[misc]  # a Window key each
        for key in (
            "accuracy", "precision", "recall", "f1", "false_positive_rate", "auc", "error_rate", "volume",
            "labelled", "label_coverage", "latency_p50", "latency_p95", "latency_p99", "score_mean", "mae", "rmse",
            "r2", "mean_residual", "unusable_labels", "macro_precision", "macro_recall", "macro_f1", "weighted_f1",
        )
    }  # fmt: skip
    metrics["throughput"] = last.get("throughput_per_s")
    metrics["estimated_accuracy"] = estimated.get("accuracy")
    metrics["estimated_precision"] = estimated.get("precision")
    metrics["estimated_recall"] = estimated.get("recall")
    metrics["drift_share"] = summary["drift"].get("drift_share", 0.0)
    metrics["score_drift"] = bool(summary["score_drift"].get("drift", False))
    metrics["residual_drift"] = bool(summary["residual_drift"].get("drift", False))
    metrics["concept_drift"] = bool(summary["concept"].get("detected", False))
    return metrics


def residual_drift(labelled: pa.Table, since: datetime) -> ColumnDriftRecord | NotMeasured:
    """Residuals (prediction - label) of the last window against the windows before it: a
    regressor whose errors change shape (a bias, a wider spread) drifts here first."""
    if labelled.num_rows == 0:
        return {}
    values = numpy_column(labelled, "value").astype(np.float64)
    truth = pd.to_numeric(pd.Series(numpy_column(labelled, "truth")), errors="coerce").to_numpy()
    residuals = values - truth.astype(np.float64)
    times = np.array([t.timestamp() for t in labelled.column("ts").to_pylist()])
    usable = np.isfinite(residuals)
    before = residuals[usable & (times < since.timestamp())]
    now = residuals[usable & (times >= since.timestamp())]
    if len(before) < 30 or len(now) < 30:
        return {
            "note": f"needs 30 labelled predictions on each side ({len(before)} before, {len(now)} now)"
        }
    report = compare(pa.table({"residual": before}), pa.table({"residual": now}))
    return report.columns["residual"].to_dict()


def top_k(labelled: pa.Table, classes: list[str | None], since: datetime) -> dict[str, float]:
    """Top-2 (and top-3 with four or more classes) accuracy of the last window's labelled
    predictions: the true class among the k most probable; needs the logged probabilities."""
    if labelled.num_rows == 0 or len(classes) < 3:
        return {}
    times = np.array([t.timestamp() for t in labelled.column("ts").to_pylist()])
    recent = labelled.filter(pa.array(times >= since.timestamp()))
    index = {c: i for i, c in enumerate(classes)}
    rows = [
        (p, index[t])
        for p, t in zip(
            recent.column("probabilities").to_pylist(),
            recent.column("truth").to_pylist(),
            strict=True,
        )
        if p is not None and len(p) == len(classes) and t in index
    ]
    if not rows:
        return {}
    probabilities = np.array([p for p, _ in rows], dtype=np.float64)
    truth = np.array([t for _, t in rows])
    # the rank of the true class: how many classes were given more probability
    rank = (probabilities > probabilities[np.arange(len(rows)), truth][:, None]).sum(axis=1)
    return {f"top_{k}_accuracy": float((rank < k).mean()) for k in (2, 3) if k < len(classes)}

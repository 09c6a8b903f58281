"""The monitoring report as one standalone HTML file: inline CSS and SVG charts, no scripts,
no fonts or libraries from the network, so it opens anywhere, offline, and can be mailed.

Python decides what the page says and where each mark of a chart goes (`LineChart`, `Bars`,
`DriftChart`: typed, plain numbers and text); the Jinja2 template `templates/report.html.j2`
turns that into markup, with autoescaping on, so no text from a report (a feature name, a
category, a note) can ever become markup.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import jinja2

from shipyard.monitoring._report import (
    Check,
    ClassMetrics,
    ColumnDriftRecord,
    Confusion,
    ReportRecord,
    VersionSummary,
    Window,
)

__all__ = ["render_html"]

BLUE, ORANGE, GREY = "#1a73e8", "#e8710a", "#9aa5b1"
STATUS_COLOURS = {"ok": "#34a853", "warning": "#f9ab00", "drift": "#d93025"}


def fmt(value: Any) -> str:
    """A number as a reader wants it: 4 significant digits, thousands grouped above 1,000."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


# -- charts: geometry in Python, markup in the template -----------------------------------------


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    title: str


@dataclass(frozen=True)
class Series:
    name: str
    colour: str
    points: list[Point]
    lines: list[list[Point]]  # runs of consecutive values (a None leaves a gap)


@dataclass(frozen=True)
class Label:
    x: float
    y: float
    text: str
    anchor: str = "start"


@dataclass(frozen=True)
class LineChart:
    """A small line chart. Values on the y axis stand left of the plot (never over its
    points); the x labels are anchored inside the picture (none clipped)."""

    title: str
    width: int
    height: int
    left: int
    right: int
    grid: list[Label]  # y-axis values, at their heights
    x_labels: list[Label]
    series: list[Series]
    target: float | None = None  # the target line's height
    empty: bool = False


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    colour: str
    title: str


@dataclass(frozen=True)
class Bars:
    """The reference's share beside the current share, per bin or category."""

    title: str
    width: int
    height: int
    bars: list[Bar]
    labels: list[Label]


@dataclass(frozen=True)
class DriftRow:
    y: float
    name: str
    width: float
    colour: str
    reason: str


@dataclass(frozen=True)
class DriftChart:
    """Each feature's effect size against its threshold (the dashed line)."""

    width: int
    height: int
    rows: list[DriftRow]
    threshold_x: float
    bar: int


def line_chart(
    title: str,
    labels: Sequence[str],
    series: dict[str, Sequence[float | None]],
    target: float | None = None,
) -> LineChart:
    width, height, pad, left = 420, 180, 34, 52
    points = [v for s in series.values() for v in s if v is not None]
    if not points or not labels:
        return LineChart(title, width, height, left, width - pad, [], [], [], empty=True)
    values = points + ([target] if target is not None else [])
    low, high = min(values), max(values)
    # a margin of a tenth of the span (of the value, when flat) so no point sits on the edge;
    # rates and other non-negative values never get a negative axis
    margin = 0.1 * ((high - low) or abs(high) or 1.0)
    low, high = low - margin, high + margin
    if min(values) >= 0:
        low = max(low, 0.0)
    n = len(labels)

    def x(i: int) -> float:
        return round(left + (width - left - pad) * (i / max(1, n - 1)), 1)

    def y(v: float) -> float:
        return round(height - pad - (height - 2 * pad) * (v - low) / (high - low), 1)

    grid = [Label(left - 6, y(v), fmt(v), "end") for v in (low, (low + high) / 2, high)]
    x_labels = [
        Label(x(i), height - 8, labels[i], "start" if i == 0 else "end" if i == n - 1 else "middle")
        for i in sorted({0, n // 2, n - 1})
    ]
    drawn = []
    for colour, (name, data) in zip((BLUE, ORANGE, GREY), series.items(), strict=False):
        marks: list[Point] = []
        runs: list[list[Point]] = [[]]
        for i, value in enumerate(data):
            if value is None:
                runs.append([])
                continue
            point = Point(x(i), y(float(value)), f"{name} {labels[i]}: {fmt(float(value))}")
            marks.append(point)
            runs[-1].append(point)
        drawn.append(Series(name, colour, marks, [r for r in runs if len(r) > 1]))
    return LineChart(
        title, width, height, left, width - pad, grid, x_labels, drawn,
        y(target) if target is not None else None,
    )  # fmt: skip


def bars(
    title: str, labels: Sequence[str], reference: Sequence[float], current: Sequence[float]
) -> Bars | None:
    width, height, pad = 420, 170, 28
    n = len(labels)
    if not n:
        return None
    top = max([*reference, *current, 1e-9])
    slot = (width - 2 * pad) / n
    drawn = []
    for i in range(n):
        for j, (share, colour) in enumerate(((reference[i], GREY), (current[i], BLUE))):
            h = (height - 2 * pad) * share / top
            which = "reference" if j == 0 else "current"
            drawn.append(Bar(round(pad + i * slot + j * slot / 2, 1), round(height - pad - h, 1),
                             round(max(slot / 2 - 1, 1), 1), round(h, 1), colour,
                             f"{labels[i]}: {which} {share:.1%}"))  # fmt: skip
    texts = []
    for i in sorted({0, n // 2, n - 1}):
        last = i == n - 1 and n > 1
        texts.append(
            Label(round(pad + (n if last else i) * slot, 1), height - 8, labels[i][:14],
                  "end" if last else "start")
        )  # fmt: skip
    return Bars(title, width, height, drawn, texts)


def drift_chart(columns: dict[str, ColumnDriftRecord]) -> DriftChart | None:
    rows = sorted(columns.values(), key=lambda c: -_relative(c))
    if not rows:
        return None
    width, bar = 420, 18
    top = max(1.5, *[_relative(c) for c in rows])
    scale = (width - 190) / top
    drawn = [
        DriftRow(
            i * bar,
            c["column"][:24],
            round(max(_relative(c) * scale, 1), 1),
            STATUS_COLOURS[c["status"]],
            c["reason"],
        )
        for i, c in enumerate(rows)
    ]
    return DriftChart(width, 20 + bar * len(rows), drawn, round(170 + scale, 1), bar)


def _relative(column: ColumnDriftRecord) -> float:
    return float((column["effect_size"] or 0) / (column["threshold"] or 1))


# -- the page -----------------------------------------------------------------------------------


@dataclass
class VersionView:
    """What the page shows of one version."""

    version: str
    variants: list[str]
    checks: list[Check]
    charts: list[LineChart] = field(default_factory=list)
    drift: DriftChart | None = None
    distributions: list[Bars] = field(default_factory=list)
    causes: list[tuple[str, str]] = field(default_factory=list)
    per_class: list[ClassMetrics] = field(default_factory=list)
    confusion: Confusion | None = None


def _version_view(version: str, summary: VersionSummary) -> VersionView:
    windows = summary.get("windows", [])
    labels = [str(w["window_start"])[:16].replace("T", " ") for w in windows]
    view = VersionView(version, list(summary.get("variants", [])), list(summary.get("checks", [])))
    view.charts = [
        *_quality_charts(summary, labels, windows),
        line_chart(
            "Volume (predictions per window)",
            labels,
            {"volume": [w.get("volume") for w in windows]},
        ),
        line_chart(
            "Latency (ms)",
            labels,
            {
                "p50": [w.get("latency_p50") for w in windows],
                "p95": [w.get("latency_p95") for w in windows],
                "p99": [w.get("latency_p99") for w in windows],
            },
        ),
    ]
    columns = summary["drift"]["columns"]
    view.drift = drift_chart(columns)
    for column in sorted(columns.values(), key=lambda c: -_relative(c))[:4]:
        stats, title = (
            column["stats"],
            f"{column['column']}: reference vs current ({column['status']})",
        )
        found = None
        if column["kind"] == "numeric" and stats.get("histogram"):
            hist = stats["histogram"]
            edges = hist["edges"]
            names = [fmt(edges[i]) for i in range(len(edges) - 1)]
            found = bars(title, names, hist["reference"], hist["current"])
        elif column["kind"] == "categorical" and stats.get("shares"):
            shares = stats["shares"]
            found = bars(title, shares["categories"], shares["reference"], shares["current"])
        if found is not None:
            view.distributions.append(found)
    root = summary["root_cause"]
    view.causes = [(f"feature {f['feature']}", f["reason"]) for f in root["features"]]
    for s in root["segments"]:
        metric, before, now = (
            ("MAE", s.get("mae_before"), s.get("mae_now"))
            if "mae_now" in s
            else ("accuracy", s.get("accuracy_before"), s.get("accuracy_now"))
        )
        view.causes.append((f"{s['feature']} = {s['segment']}",
                            f"{metric} {fmt(before)} → {fmt(now)} over {s['labelled']} labelled rows"))  # fmt: skip
    attributed = root.get("attributions") or {}
    for a in attributed.get("shifted", []):
        view.causes.append((
            f"contribution of {a['feature']}",
            f"mean {fmt(a['reference_mean'])} → {fmt(a['current_mean'])} ({attributed['space']}, "
            f"{attributed['method']}); mean |contribution| {fmt(a['reference_abs'])} → "
            f"{fmt(a['current_abs'])}",
        ))  # fmt: skip
    breakdown = summary.get("classes")
    if breakdown is not None:
        view.per_class, view.confusion = list(breakdown["per_class"]), breakdown["confusion"]
    return view


def _quality_charts(
    summary: VersionSummary, labels: list[str], windows: list[Window]
) -> list[LineChart]:
    """The charts of how good the predictions were, as the model's task measures it."""
    targets = {c["name"]: c["target"] for c in summary.get("checks", [])}
    task = summary.get("task", "binary")
    if task == "regression":
        return [
            line_chart(
                "Error: MAE and RMSE (labelled rows)",
                labels,
                {"MAE": [w.get("mae") for w in windows], "RMSE": [w.get("rmse") for w in windows]},
                targets.get("MAE"),
            ),
            line_chart(
                "R² (1 - MSE / variance of the labels)",
                labels,
                {"R²": [w.get("r2") for w in windows]},
                targets.get("R²"),
            ),
            line_chart(
                "Mean residual (prediction - label)",
                labels,
                {"mean residual": [w.get("mean_residual") for w in windows]},
            ),
        ]
    if task == "multiclass":
        return [
            line_chart(
                "Accuracy and F1 (labelled rows)",
                labels,
                {
                    "accuracy": [w.get("accuracy") for w in windows],
                    "macro F1": [w.get("macro_f1") for w in windows],
                    "weighted F1": [w.get("weighted_f1") for w in windows],
                },
                targets.get("accuracy"),
            )
        ]
    return [
        line_chart(
            "Accuracy: realised (labelled rows) and estimated (before labels)",
            labels,
            {
                "realised": [w.get("accuracy") for w in windows],
                "estimated": [w.get("estimated", {}).get("accuracy") for w in windows],
            },
            targets.get("accuracy"),
        ),
        line_chart(
            "Recall and false-positive rate",
            labels,
            {
                "recall": [w.get("recall") for w in windows],
                "false-positive rate": [w.get("false_positive_rate") for w in windows],
            },
        ),
    ]


@cache
def _template() -> jinja2.Template:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("shipyard.monitoring", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a name the template misspells fails the tests
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["fmt"] = fmt
    return environment.get_template("report.html.j2")


def render_html(report: ReportRecord) -> str:
    """The whole report (as `MonitoringReport.to_dict()` gives it) as a standalone page."""
    versions = [
        _version_view(version, summary)
        for version, summary in sorted(report["versions"].items(), key=lambda kv: -int(kv[0]))
    ]
    return _template().render(report=report, versions=versions)

"""The demo's month in production: four weeks of traffic replayed into the prediction log with
their own timestamps, labels arriving late, then the monitor run over them.

Week by week, amounts inflate (a seasonal shift: data drift) and a card-testing fraud pattern
the model never saw grows (concept drift). The monitor should name both: the drift in
`transaction_amount`, and the accuracy falling below the fraud team's 90% while most inputs
look as they did in training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from shipyard.core import Settings
from shipyard.demo._data import FEATURES, LABEL, drifting_week
from shipyard.logstore import LogWriter
from shipyard.monitoring import Monitor, render_html
from shipyard.registry import Deployment, Registry
from shipyard.serving import PredictionService, choose

if TYPE_CHECKING:
    from shipyard.monitoring import ReportRecord

__all__ = ["WEEKS", "MonthResult", "replay_month", "replay_weeks"]

# (amount inflation, share of card-testing fraud) per week after release
WEEKS = [(1.00, 0.000), (1.05, 0.015), (1.25, 0.045), (1.60, 0.105)]
LATE_LABEL_SHARE = 0.25  # of the last week, only this share of labels has come in
RULES = [
    "accuracy < 0.90 over 7d with >= 500 labels",
    "drift(transaction_amount)",
    "latency_p95 > 100ms",
]


@dataclass
class MonthResult:
    weeks: list[dict[str, Any]] = field(default_factory=list)
    drifted: list[str] = field(default_factory=list)
    concept_drift: bool = False
    alerts: list[str] = field(default_factory=list)
    segments: list[str] = field(default_factory=list)
    html: Path | None = None


def replay_weeks(
    settings: Settings,
    model: str,
    weeks: list[tuple[int, float, float, float]],
    *,
    start: datetime,
    rows_per_week: int,
) -> None:
    """Replay weeks `(index, amount inflation, card-testing share, labelled share)` from `start`,
    each routed through the deployment live at the time (so a canary gets its share)."""
    with Registry.from_settings(settings) as registry:
        service = PredictionService(registry, settings)
        types = {
            c.name: str(c.type) for c in registry.resolve(f"{model}:production").signature.columns
        }
        writer = LogWriter(
            settings.resolved_spool_dir / "replay",
            registry.artifacts,
            types_of=lambda m, v: types,
            flush_seconds=3600,
        )
        with writer:
            for week, inflation, share, labelled in weeks:
                plan = registry.serving_plan()[model]
                frame = drifting_week(
                    rows_per_week,
                    week,
                    start=start,
                    amount_inflation=inflation,
                    card_testing_share=share,
                )
                _score_and_log(service, plan, writer, frame, labelled, seed=week)
            writer.flush()


def replay_month(
    settings: Settings,
    model: str,
    version: int,
    *,
    end: datetime,
    rows_per_week: int = 8000,
    console: Console,
) -> MonthResult:
    """Replay four weeks ending at `end` through the production version, label them, and monitor."""
    start = end - timedelta(days=7 * len(WEEKS))
    weeks = [
        (i, inflation, share, 1.0 if i < len(WEEKS) - 1 else LATE_LABEL_SHARE)
        for i, (inflation, share) in enumerate(WEEKS)
    ]
    replay_weeks(settings, model, weeks, start=start, rows_per_week=rows_per_week)
    with Registry.from_settings(settings) as registry:
        monitor = Monitor.from_settings(settings, registry)
        assert monitor.alert_manager is not None
        for rule in RULES:
            monitor.alert_manager.add_rule(
                model, rule, severity="critical" if "accuracy" in rule else "warning"
            )
        report = monitor.run(model, window="7d", periods=len(WEEKS), now=end).to_dict()
    html = settings.home / "monitoring.html"
    html.write_text(render_html(report))
    return _show(report, html, console)


def _score_and_log(
    service: PredictionService,
    plan: Deployment,
    writer: LogWriter,
    frame: pd.DataFrame,
    labelled: float,
    seed: int,
) -> None:
    """Score a week in hourly batches (each row on the variant its customer routes to), log each
    batch at its hour, and the labels that come back a day later."""
    rng = np.random.default_rng(seed)
    customers = frame["customer_id"].to_numpy()
    truth_all = frame[LABEL].to_numpy()
    routed = np.array([choose(plan, str(c)).version for c in customers])
    roles = {v.version: v.role for v in plan.live}
    hours = frame["timestamp"].dt.floor("h").to_numpy()
    for version in np.unique(routed):
        served = service.load(plan.name, int(version))
        mine = frame[routed == version]
        columns = served.signature.validate_frame(mine[FEATURES])
        mine_hours = hours[routed == version]
        mine_truth = truth_all[routed == version]
        for hour in np.unique(mine_hours):
            index = np.flatnonzero(mine_hours == hour)
            batch = {name: values[index] for name, values in columns.items()}
            result = service.score_now(served, batch, len(index))
            at = (
                pd.Timestamp(hour).tz_localize(UTC).timestamp()
                if pd.Timestamp(hour).tzinfo is None
                else pd.Timestamp(hour).timestamp()
            )
            writer.log_predictions(
                model=served.name, version=served.version, variant=roles[int(version)], ids=result.ids, inputs=batch,
                outputs=result.outputs(), latency_ms=result.latency_ms, at=at,
            )  # fmt: skip
            keep = rng.random(len(index)) < labelled
            if keep.any():
                ids = [pid for pid, k in zip(result.ids, keep, strict=True) if k]
                writer.log_labels(ids, mine_truth[index][keep].tolist(), at=at + 86_400)


def _show(report: ReportRecord, html: Path, console: Console) -> MonthResult:
    result = MonthResult(html=html)
    summary = next(iter(report["versions"].values()), None)
    if summary is None:
        console.print("[red]no replayed traffic reached the monitor[/]")
        return result
    table = Table(
        "week",
        "volume",
        "labelled",
        "accuracy",
        "estimated",
        "recall",
        "FPR",
        "amount drift",
        title="a month in production (weekly windows)",
    )
    for i, w in enumerate(summary["windows"]):
        result.weeks.append(
            {k: w.get(k) for k in ("volume", "labelled", "accuracy", "recall")}
            | {"estimated": w.get("estimated", {}).get("accuracy")}
        )
        table.add_row(
            f"week {i + 1}", f"{w['volume']:,}", f"{w['labelled']:,}", _pct(w.get("accuracy")),
            _pct(w.get("estimated", {}).get("accuracy")), _pct(w.get("recall")), _pct(w.get("false_positive_rate")),
            f"x{WEEKS[i][0]:.2f}" if i < len(WEEKS) else "",
        )  # fmt: skip
    console.print(table)
    drift = summary["drift"]
    result.drifted = list(drift.get("drifted", []))
    for name in result.drifted:
        console.print(f"[yellow]⚠[/] drift in [bold]{name}[/]: {drift['columns'][name]['reason']}")
    concept = summary["concept"]
    result.concept_drift = bool(concept.get("detected") or concept.get("performance_change"))
    for change in concept.get("changes", []):
        if change["worse"]:
            console.print(
                f"[yellow]⚠[/] the error rate rose from {change['error_rate_before']:.1%} to {change['error_rate_after']:.1%} "
                f"around {change['at'][:10]} (ADWIN over {concept['labelled']:,} labelled predictions)"
            )
    last = summary["windows"][-1] if summary["windows"] else {}
    if last.get("accuracy") is not None and last.get("estimated", {}).get("accuracy") is not None:
        console.print(
            f"  the estimate before labels ({last['estimated']['accuracy']:.1%}) cannot see a fraud pattern the model "
            f"never learned; the labels that came in show {last['accuracy']:.1%}: concept drift"
        )
    for segment in summary["root_cause"].get("segments", [])[:3]:
        result.segments.append(f"{segment['feature']}={segment['segment']}")
        console.print(
            f"  root cause: {segment['feature']} = [bold]{segment['segment']}[/] lost the most: accuracy "
            f"{segment['accuracy_before']:.1%} -> {segment['accuracy_now']:.1%}"
        )
    for alert in report.get("alerts", []):
        result.alerts.append(alert["evidence"]["rule"])
        console.print(
            f"[bold red]ALERT[/] {alert['evidence']['rule']} (value {_short(alert['value'])})"
        )
    console.print(f"[green]✓[/] report with charts: {html} (standalone, opens offline)")
    return result


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)

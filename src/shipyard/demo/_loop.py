"""The demo's closed loop: the accuracy alert at the end of week 4 triggers a retrain; the
worker builds the data from the labelled log, trains in a tracked run, validates against the
champion, registers and canaries the candidate; week 5's labels decide; week 6 runs on the
winner. Time is simulated: the worker's clock follows the replayed weeks."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from shipyard.core import Settings
from shipyard.demo._replay import WEEKS, replay_weeks
from shipyard.monitoring import Monitor, render_html
from shipyard.registry import Registry
from shipyard.retraining import (
    DataSpec,
    HoldoutSpec,
    PolicySpec,
    RetrainSpec,
    RolloutSpec,
    load_specs,
)
from shipyard.worker import Worker

if TYPE_CHECKING:
    from shipyard.monitoring import ReportRecord

__all__ = ["SPEC", "LoopResult", "close_the_loop"]

ALERT_RULE = "accuracy < 0.90 over 7d with >= 500 labels"


def SPEC(model: str) -> RetrainSpec:
    """The model's retraining spec, as its shipyard.yaml would say it."""
    return RetrainSpec(
        name=model,
        train="shipyard.demo.training:train",
        params={"C": 0.5, "max_iter": 2000},
        data=DataSpec(source="logs", window="28d", label="is_fraud", time_column="timestamp"),
        holdout=HoldoutSpec(split="time", fraction=0.25),
        gates=["auc >= 0.75", "accuracy >= champion - 0.005"],
        rollout=RolloutSpec(
            canary=10,
            routing_field="customer_id",
            min_labels=300,
            max_labels=3000,
            check_every="1d",
        ),
        policies=[PolicySpec(on_alert=ALERT_RULE)],
        cooldown="1d",
        threshold_share=0.04,  # the review team's capacity: the riskiest 4% of transactions
    )


@dataclass
class LoopResult:
    timeline: list[dict[str, Any]] = field(default_factory=list)
    weekly_accuracy: list[float | None] = field(default_factory=list)
    candidate: int | None = None
    status: str = ""
    champion_after: int | None = None
    html: Path | None = None


def close_the_loop(
    settings: Settings, model: str, *, end_of_week4: datetime, rows_per_week: int, console: Console
) -> LoopResult:
    """Run the loop from the alert at the end of week 4 to the winner serving week 6."""
    result = LoopResult()
    clock = [end_of_week4 + timedelta(minutes=1)]
    start = end_of_week4 - timedelta(days=7 * len(WEEKS))
    with Worker(
        settings,
        specs=load_specs(settings.config),  # the project file declares SPEC(model)
        clock=lambda: clock[0],
        monitor_window="7d",
        name="demo-worker",
    ) as worker:
        worker.start_schedule()
        worker.run_until_idle()  # tick: the firing alert queues a retrain; the retrain canaries a candidate
        pipeline = worker.pipeline(model).history(1)[0]
        result.candidate, result.status = pipeline["candidate_version"], pipeline["status"]
        if pipeline["status"] != "canary":
            console.print(f"[red]the pipeline ended {pipeline['status']}[/]")
            result.timeline = _timeline(settings, model, start)
            return result
        # week 5: traffic and labels, 10% of customers on the candidate
        inflation, share = WEEKS[-1]
        replay_weeks(
            settings, model, [(4, inflation, share, 1.0)], start=start, rows_per_week=rows_per_week
        )
        clock[0] = end_of_week4 + timedelta(days=7, minutes=1)
        worker.run_until_idle()  # the rollout check is due: the canary's evidence decides
        pipeline = worker.pipeline(model).history(1)[0]
        result.status = pipeline["status"]
    # week 6: everyone on whatever won
    replay_weeks(
        settings, model, [(5, inflation, share, 1.0)], start=start, rows_per_week=rows_per_week
    )
    end = end_of_week4 + timedelta(days=14)
    with Registry.from_settings(settings) as registry:
        result.champion_after = registry.resolve(f"{model}:production").version
        report = (
            Monitor.from_settings(settings, registry)
            .run(model, window="7d", periods=6, now=end)
            .to_dict()
        )
    result.weekly_accuracy = _weekly_accuracy(report, start)
    result.timeline = _timeline(settings, model, start)
    _show(result, console)
    # the report as it stands after the loop (the month's, written before it, is replaced)
    result.html = settings.home / "monitoring.html"
    result.html.write_text(render_html(report))
    console.print(
        f"[green]✓[/] report after the loop: {result.html} (six weeks, every version that served)"
    )
    return result


def _weekly_accuracy(report: ReportRecord, start: datetime) -> list[float | None]:
    """Accuracy per week over every version that answered (what customers experienced)."""
    weeks: dict[str, list[tuple[int, float]]] = {}
    for summary in report["versions"].values():
        for window in summary["windows"]:
            accuracy = window.get("accuracy")
            if accuracy is not None:
                weeks.setdefault(str(window["window_start"]), []).append(
                    (window["labelled"], accuracy)
                )
    out = []
    for key in sorted(weeks):
        labelled = sum(n for n, _ in weeks[key])
        out.append(sum(n * a for n, a in weeks[key]) / labelled if labelled else None)
    return out


def _timeline(settings: Settings, model: str, start: datetime) -> list[dict[str, Any]]:
    """The audit trail from the replayed month on, as (week, what, evidence) lines."""
    interesting = ("alert.firing", "pipeline.", "deployment.", "alert.resolved")
    with Registry.from_settings(settings) as registry:
        events = list(reversed(registry.history(model, limit=500)))
    lines = []
    for ev in events:
        if not ev.action.startswith(interesting):
            continue
        details = ev.details
        lines.append(
            {
                "action": ev.action,
                "version": ev.version,
                "details": details,
                "at": ev.at.isoformat(),
            }
        )
    return lines


def _show(result: LoopResult, console: Console) -> None:
    table = Table("step", "what happened", title="the closed loop", show_lines=False)
    for line in result.timeline:
        table.add_row(line["action"], _describe(line))
    console.print(table)
    weeks = ", ".join(
        f"week {i + 1} {a:.1%}" for i, a in enumerate(result.weekly_accuracy) if a is not None
    )
    console.print(f"accuracy by week (all variants): {weeks}")
    console.print(
        f"[green]✓[/] candidate {result.candidate} {result.status}; production is now version {result.champion_after}"
    )


def _describe(line: dict[str, Any]) -> str:
    d, action = line["details"], line["action"]
    if action == "alert.firing":
        return f"{d.get('rule')} (value {_num(d.get('value'))}) on version {line['version']}"
    if action == "alert.resolved":
        why = d.get("reason") or f"value {_num(d.get('value'))}"
        return f"{d.get('rule')} on version {line['version']}: resolved ({why})"
    if action == "pipeline.data":
        return f"{d.get('rows')} labelled rows from the prediction log ({d.get('train_rows')} train / {d.get('holdout_rows')} holdout)"
    if action == "pipeline.train":
        return f"trained {d.get('entrypoint')} in run {str(d.get('run'))[:12]}"
    if action == "pipeline.validate":
        gates = "; ".join(
            f"{g['gate']}: {_num(g['value'])} vs {_num(g['bar'])} {'pass' if g['passed'] else 'FAIL'}"
            for g in d.get("gates", [])
        )
        return f"{d.get('status')}: {gates}"
    if action == "pipeline.register":
        return f"registered version {d.get('version')} (run {str(d.get('run'))[:12]})"
    if action in ("pipeline.canary", "deployment.created", "deployment.rolled_back"):
        return str(d.get("split") or d.get("to") or "")
    if action in ("pipeline.decide", "pipeline.promote", "pipeline.rollback"):
        return str(d.get("reason", d.get("status", "")))
    return ", ".join(f"{k}={v}" for k, v in d.items() if not isinstance(v, dict | list))[:120]


def _num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)

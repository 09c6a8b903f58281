"""`shipyard monitor ...`: run monitoring, read the report, manage alert rules and alerts."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.panel import Panel
from rich.table import Table

from shipyard.cli._common import console, emit_json, json_flag, open_registry, settings
from shipyard.monitoring import AlertManager, Monitor, render_html

if TYPE_CHECKING:
    from shipyard.monitoring import ReportRecord, VersionSummary, Window

app = typer.Typer(
    help="Watch models in production: performance, data quality, drift, alerts.",
    no_args_is_help=True,
)

_MARKS = {
    "ok": "[green]OK[/]",
    "warning": "[yellow]warning[/]",
    "failing": "[bold red]failing[/]",
    "unknown": "[dim]-[/]",
}


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def render(report: ReportRecord) -> None:
    """The report as a fraud team's dashboard in the terminal."""
    period = report["period"]
    console.print(
        Panel.fit(
            f"[bold]{report['model']}[/]: windows of {report['window']} from {str(period['start'])[:16]} to {str(period['end'])[:16]}",
            border_style="cyan",
        )
    )
    if not report["versions"]:
        console.print("no predictions were logged in this period")
    for version, summary in sorted(report["versions"].items(), key=lambda kv: -int(kv[0])):
        checks = Table(
            "check",
            "value",
            "target",
            "",
            "note",
            title=f"version {version} ({', '.join(summary['variants'])})",
        )
        for check in summary["checks"]:
            checks.add_row(
                check["name"],
                _fmt(check["value"]),
                _fmt(check["target"]),
                _MARKS.get(check["status"], check["status"]),
                check.get("note", ""),
            )
        console.print(checks)
        console.print(_windows_table(summary))
        breakdown = summary.get("classes")
        if breakdown is not None and breakdown["per_class"]:
            classes = Table(
                "class",
                "labelled",
                "predicted",
                "precision",
                "recall",
                "F1",
                title="per class (last window)",
            )
            for row in breakdown["per_class"]:
                classes.add_row(str(row["class"]), f"{row['support']:,}", f"{row['predicted']:,}",
                                _fmt(row["precision"]), _fmt(row["recall"]), _fmt(row["f1"]))  # fmt: skip
            console.print(classes)
        drift = summary["drift"]
        if drift.get("columns"):
            table = Table(
                "feature",
                "method",
                "effect",
                "threshold",
                "p (adj.)",
                "missing",
                "",
                title="drift vs the training data",
            )
            ranked = sorted(
                drift["columns"].values(),
                key=lambda c: -(c["effect_size"] or 0) / (c["threshold"] or 1),
            )
            for c in ranked:
                mark = {
                    "ok": "[green]OK[/]",
                    "warning": "[yellow]warning[/]",
                    "drift": "[bold red]drift[/]",
                }[c["status"]]
                missing = (
                    f"{c['missing']['reference_rate']:.1%} -> {c['missing']['current_rate']:.1%}"
                )
                table.add_row(
                    c["column"],
                    c["method"],
                    f"{c['effect']} {_fmt(c['effect_size'])}",
                    _fmt(c["threshold"]),
                    _fmt(c["p_value_adjusted"]),
                    missing,
                    mark,
                )
            console.print(table)
        root = summary.get("root_cause", {})
        for f in root.get("features", []):
            console.print(f"  [bold]cause[/]: {f['feature']}: {f['reason']}")
        for s in root.get("segments", []):
            metric, before, now = (
                ("MAE", s["mae_before"], s["mae_now"])
                if "mae_now" in s
                else ("accuracy", s["accuracy_before"], s["accuracy_now"])
            )
            console.print(
                f"  [bold]segment[/]: {s['feature']}={s['segment']}: {metric} {before:.3f} -> {now:.3f} "
                f"({s['labelled']} labelled)"
            )
    for alert in report.get("alerts", []):
        console.print(
            f"[bold red]alert {alert['id']} {alert['status']}[/]: {alert['evidence'].get('rule')} (value {_fmt(alert['value'])})"
        )


# the per-window quality columns of each task: (title, its value in a window)
_WINDOW_COLUMNS: dict[str, list[tuple[str, Callable[[Window], Any]]]] = {
    "binary": [("accuracy", lambda w: w.get("accuracy")),
               ("estimated", lambda w: w.get("estimated", {}).get("accuracy")),
               ("recall", lambda w: w.get("recall")), ("FPR", lambda w: w.get("false_positive_rate"))],
    "multiclass": [("accuracy", lambda w: w.get("accuracy")), ("macro F1", lambda w: w.get("macro_f1")),
                   ("weighted F1", lambda w: w.get("weighted_f1"))],
    "regression": [("MAE", lambda w: w.get("mae")), ("RMSE", lambda w: w.get("rmse")),
                   ("R²", lambda w: w.get("r2")), ("mean residual", lambda w: w.get("mean_residual"))],
}  # fmt: skip


def _windows_table(summary: VersionSummary) -> Table:
    columns = _WINDOW_COLUMNS.get(summary.get("task") or "binary", _WINDOW_COLUMNS["binary"])
    table = Table(
        "window",
        "volume",
        "errors",
        "labelled",
        *(title for title, _ in columns),
        "p95 ms",
        title="per window",
    )
    for w in summary["windows"]:
        quality = [_fmt(value(w)) for _, value in columns]
        table.add_row(
            str(w["window_start"])[:16].replace("T", " "), f"{w['volume']:,}", f"{w.get('error_rate', 0):.2%}",
            f"{w.get('labelled', 0):,}", *quality, _fmt(w.get("latency_p95")),
        )  # fmt: skip
    return table


def _write_html(report: ReportRecord, path: Path | None) -> None:
    if path is not None:
        path.write_text(render_html(report))
        console.print(f"[green]✓[/] wrote {path} (standalone; opens offline)")


@app.command("run")
def run(
    ctx: typer.Context,
    name: str,
    window: str = typer.Option("1d", "--window", "-w", help="window length: 30m, 1h, 1d, 7d ..."),
    periods: int = typer.Option(7, "--periods", "-p", min=1, max=400, help="how many windows back"),
    html: Path | None = typer.Option(
        None, "--html", help="also write the report as a standalone HTML file"
    ),
    as_json: bool = json_flag("the report (every metric, test and verdict)"),
    now: datetime | None = typer.Option(
        None,
        "--now",
        formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"],
        help="monitor as of this moment (ISO 8601, UTC unless it says otherwise) instead of "
        "now: the windows end at the boundary after it",
    ),
) -> None:
    """Compute monitoring for NAME now, store it as a snapshot, evaluate its alert rules."""
    moment = (now if now.tzinfo else now.replace(tzinfo=UTC)) if now is not None else None
    with open_registry(ctx) as registry:
        report = (
            Monitor.from_settings(settings(ctx), registry)
            .run(name, window=window, periods=periods, now=moment)
            .to_dict()
        )
    _show(report, html, as_json)


@app.command("report")
def report(
    ctx: typer.Context,
    name: str,
    window: str = typer.Option("1d", "--window", "-w"),
    html: Path | None = typer.Option(
        None, "--html", help="write the report as a standalone HTML file"
    ),
    as_json: bool = json_flag("the report (every metric, test and verdict)"),
) -> None:
    """Show the latest stored report of NAME (run `shipyard monitor run` to refresh it)."""
    from shipyard.monitoring import _repository as repo

    with open_registry(ctx) as registry:
        registry.get_model(name)
        with registry.database.transaction() as conn:
            found = repo.latest_snapshot(conn, name, window)
        if found is None:
            found = (
                Monitor.from_settings(settings(ctx), registry).run(name, window=window).to_dict()
            )
    _show(found, html, as_json)


def _show(report: ReportRecord, html: Path | None, as_json: bool) -> None:
    _write_html(report, html)
    if as_json:
        emit_json(report)
        return
    render(report)


def _alerts(ctx: typer.Context) -> tuple[Any, AlertManager]:
    registry = open_registry(ctx)
    from shipyard.monitoring import load_fairness

    config = settings(ctx).config
    return registry, AlertManager(
        registry.database, actor=settings(ctx).actor, fairness=load_fairness(config)
    )


@app.command("alerts")
def alerts(
    ctx: typer.Context,
    model: str | None = typer.Option(None, "--model", "-m"),
    status: str | None = typer.Option(None, "--status", help="firing or resolved"),
    as_json: bool = json_flag("the alerts"),
) -> None:
    """List alerts, newest first."""
    registry, manager = _alerts(ctx)
    with registry:
        found = manager.alerts(model, status)
    if as_json:
        emit_json(found)
        return
    table = Table("id", "model", "version", "status", "rule", "value", "opened", "resolved")
    for a in found:
        table.add_row(
            str(a["id"]), a["model"], str(a["version"]), a["status"], a["evidence"].get("rule", ""), _fmt(a["value"]),
            f"{a['opened_at']:%Y-%m-%d %H:%M}", f"{a['resolved_at']:%Y-%m-%d %H:%M}" if a["resolved_at"] else "",
        )  # fmt: skip
    console.print(table if found else "no alerts")


@app.command("rules")
def rules(ctx: typer.Context, name: str, as_json: bool = json_flag("the rules")) -> None:
    """List the alert rules of NAME."""
    registry, manager = _alerts(ctx)
    with registry:
        registry.get_model(name)
        found = manager.rules(name)
    if as_json:
        emit_json(found)
        return
    table = Table("id", "rule", "severity", "webhooks")
    for r in found:
        table.add_row(str(r["id"]), r["expression"], r["severity"], ", ".join(r["webhooks"]))
    console.print(
        table
        if found
        else f"no alert rules for {name}; add one with `shipyard monitor rule-add {name} 'accuracy < 0.9 over 7d'`"
    )


@app.command("rule-add")
def rule_add(
    ctx: typer.Context,
    name: str,
    expression: str = typer.Argument(..., help="e.g. 'accuracy < 0.90 over 7d with >= 500 labels'"),
    severity: str = typer.Option("warning", "--severity", help="warning or critical"),
    webhook: list[str] | None = typer.Option(
        None, "--webhook", help="URL to POST alerts to (repeatable)"
    ),
    as_json: bool = json_flag("the new rule"),
) -> None:
    """Add an alert rule to NAME; it is evaluated after every monitoring run."""
    registry, manager = _alerts(ctx)
    with registry:
        registry.get_model(name)
        rule = manager.add_rule(name, expression, severity=severity, webhooks=webhook or [])
    if as_json:
        emit_json(rule)
        return
    console.print(
        f"[green]added[/] rule {rule['id']} to {name}: {rule['expression']} ({rule['severity']})"
    )


@app.command("rule-remove")
def rule_remove(ctx: typer.Context, rule_id: int) -> None:
    """Remove an alert rule."""
    registry, manager = _alerts(ctx)
    with registry:
        manager.remove_rule(rule_id)
    console.print(f"removed rule {rule_id}")

"""`shipyard runs ...`: experiment tracking runs."""

from __future__ import annotations

import typer
from rich.table import Table

from shipyard.cli._common import console, emit_json, json_flag, open_registry
from shipyard.tracking import Tracker

app = typer.Typer(help="Experiment tracking runs: what trained each model.", no_args_is_help=True)


def _tracker(ctx: typer.Context) -> Tracker:
    registry = open_registry(ctx)
    return Tracker(registry.database, registry.artifacts, actor=registry.actor)


@app.command("list")
def list_runs(
    ctx: typer.Context,
    experiment: str | None = typer.Option(None, "--experiment", "-e"),
    limit: int = typer.Option(50, "--limit"),
    as_json: bool = json_flag("the runs' records"),
) -> None:
    """Runs, newest first."""
    tracker = _tracker(ctx)
    try:
        runs = tracker.list_runs(experiment, limit)
    finally:
        tracker.database.close()
    if as_json:
        emit_json([r.to_dict() for r in runs])
        return
    table = Table("run", "experiment", "name", "status", "started", "metrics", "commit")
    for r in runs:
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in list(r.metrics.items())[:4])
        commit = (r.git.get("commit") or "")[:10] + ("*" if r.git.get("dirty") else "")
        table.add_row(
            r.id[:12],
            r.experiment,
            r.name,
            r.status,
            f"{r.started_at:%Y-%m-%d %H:%M}",
            metrics,
            commit,
        )
    console.print(
        table if runs else "no runs yet; wrap training in `with shipyard.start_run(experiment=...)`"
    )


@app.command("show")
def show(
    ctx: typer.Context, run_id: str, as_json: bool = json_flag("the run and its metric history")
) -> None:
    """One run: params, metrics (with their history), data sets, code version, artifacts."""
    tracker = _tracker(ctx)
    try:
        run = tracker.get(_resolve(tracker, run_id))
        history = tracker.metric_history(run.id)
    finally:
        tracker.database.close()
    if as_json:
        emit_json({**run.to_dict(), "metric_history": history})
        return
    console.print(f"[bold]run {run.id}[/] {run.experiment} / {run.name}  {run.status}")
    console.print(
        f"started {run.started_at:%Y-%m-%d %H:%M:%S} by {run.created_by}; entrypoint {run.entrypoint or '-'}"
    )
    if run.git:
        console.print(
            f"code: commit {run.git.get('commit')} on {run.git.get('branch')}"
            + (" (uncommitted changes)" if run.git.get("dirty") else "")
        )
    for title, values in (("params", run.params), ("metrics", run.metrics), ("tags", run.tags)):
        if values:
            console.print(f"{title}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
    for name, data in run.datasets.items():
        console.print(
            f"data {name}: sha256 {str(data.get('sha256'))[:16]}..., rows {data.get('rows', '-')}"
        )
    if run.error:
        console.print(f"[red]error[/]: {run.error}")


@app.command("compare")
def compare(
    ctx: typer.Context,
    run_ids: list[str],
    as_json: bool = json_flag("the comparison (params and metrics side by side)"),
) -> None:
    """Params and metrics of runs side by side; the params that differ are marked."""
    tracker = _tracker(ctx)
    try:
        result = tracker.compare([_resolve(tracker, r) for r in run_ids])
    finally:
        tracker.database.close()
    if as_json:
        emit_json(result)
        return
    table = Table("", *[r[:12] for r in result["runs"]])
    for key, values in result["params"].items():
        mark = "[yellow]*[/] " if key in result["differs"] else ""
        table.add_row(f"{mark}{key}", *[str(v) for v in values])
    for key, values in result["metrics"].items():
        table.add_row(f"[bold]{key}[/]", *["-" if v is None else f"{v:.4g}" for v in values])
    console.print(table)


def _resolve(tracker: Tracker, prefix: str) -> str:
    """A run id from a unique prefix of it (as printed by `runs list`)."""
    if len(prefix) == 32:
        return prefix
    matches = [r.id for r in tracker.list_runs(limit=10_000) if r.id.startswith(prefix)]
    if len(matches) == 1:
        return matches[0]
    from shipyard.core.errors import InvalidInput, NotFound

    if not matches:
        raise NotFound(f"no run starts with {prefix!r} (shipyard runs list)")
    raise InvalidInput(f"{prefix!r} matches {len(matches)} runs; give more of the id")

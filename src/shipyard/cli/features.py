"""`shipyard features ...`: apply feature definitions, build training sets, materialize the
online store and read from it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from shipyard.cli._common import console, emit_json, json_flag, open_registry, settings
from shipyard.core.errors import InvalidInput
from shipyard.features import FeatureStore, load_definitions

app = typer.Typer(
    help="Feature views: define, version, build training sets, serve online.",
    no_args_is_help=True,
)

_TIME_FORMATS = ["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"]


@contextmanager
def _store(ctx: typer.Context) -> Iterator[FeatureStore]:
    with open_registry(ctx) as registry, FeatureStore(registry, settings(ctx)) as store:
        yield store


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@app.command("apply")
def apply(
    ctx: typer.Context,
    path: Path = typer.Argument(..., help="a Python module (or shipyard.yaml) declaring views"),
    check: bool = typer.Option(
        True, "--check/--no-check", help="read each changed view's source before storing it"
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="show what would change, store nothing"),
    as_json: bool = json_flag("what changed per view"),
) -> None:
    """Store every new or changed view as its next version; the diff is shown first."""
    definitions = load_definitions(path)
    with _store(ctx) as store:
        changes = (
            store.plan(definitions) if dry_run else store.apply(definitions, check_sources=check)
        )
    if as_json:
        emit_json(changes)
        return
    for change in changes:
        colour = {"create": "green", "update": "yellow", "describe": "cyan", "unchanged": "dim"}[
            change["action"]
        ]
        verb = (
            "would " + change["action"]
            if dry_run and change["action"] != "unchanged"
            else change["action"]
        )
        console.print(
            f"[{colour}]{verb}[/] {change['view']} (version {change['version']})", highlight=False
        )
        for line in change["diff"] if change["action"] in ("update", "describe") else []:
            console.print(f"    {line}", highlight=False, markup=False)


@app.command("list")
def list_views(
    ctx: typer.Context, as_json: bool = json_flag("every view's latest version")
) -> None:
    """Feature views, their latest versions and freshness."""
    with _store(ctx) as store:
        views = store.views()
        runs = {v["name"]: store.runs(v["name"], 1) for v in views}
    if as_json:
        emit_json(views)
        return
    if not views:
        console.print("no feature views yet (shipyard features apply PATH)")
        return
    table = Table("view", "version", "entities", "features", "ttl", "owner", "materialized")
    for view in views:
        spec = view["spec"]
        features = [f["name"] for f in spec["features"]] + [a["name"] for a in spec["aggregations"]]
        last = runs[view["name"]][0] if runs[view["name"]] else None
        table.add_row(
            view["name"], str(view["version"]), ", ".join(e["name"] for e in spec["entities"]),
            ", ".join(features), f"{spec['ttl_seconds']}s" if spec["ttl_seconds"] else "-",
            spec["owner"] or "-",
            f"{last['finished_at']:%Y-%m-%d %H:%M} (v{last['version']})" if last and last["finished_at"] else "never",
        )  # fmt: skip
    console.print(table)


@app.command("show")
def show(
    ctx: typer.Context,
    name: str,
    version: int | None = typer.Option(None, "--version", "-v", help="default: the latest"),
    as_json: bool = json_flag("the view's spec and its versions"),
) -> None:
    """A view's definition, its versions, the model versions served from each, and its
    materialization runs."""
    with _store(ctx) as store:
        view = store.view(name, version)
        versions = store.versions(name)
        runs = store.runs(name, 5)
        served = store.served_versions().get(name, {})
    if as_json:
        emit_json({"view": view, "versions": [v["version"] for v in versions],
                   "served_to": {str(v): m for v, m in sorted(served.items())}, "runs": runs})  # fmt: skip
        return
    spec = view["spec"]
    console.print(
        f"[bold]{name}[/] version {view['version']} of {len(versions)}, applied "
        f"{view['created_at']:%Y-%m-%d %H:%M} by {view['created_by']}",
        highlight=False,
    )
    for number, models in sorted(served.items()):
        console.print(f"  v{number} is served to {', '.join(models)}", highlight=False)
    console.print(json.dumps(spec, indent=2, default=str), highlight=False, markup=False)
    for run in runs:
        console.print(
            f"  materialized v{run['version']} into {run['store']} ({run['mode']}): "
            f"{run['rows_read']:,} rows read, {run['entities_written']:,} entities written, "
            f"newest value {run['newest_event']}",
            highlight=False,
        )


@app.command("diff")
def diff(
    ctx: typer.Context,
    name: str,
    a: int = typer.Argument(..., help="the older version"),
    b: int | None = typer.Argument(None, help="the newer version (default: the latest)"),
    as_json: bool = json_flag("the changed fields"),
) -> None:
    """What changed in a view between two versions."""
    with _store(ctx) as store:
        lines = store.diff(name, a, b)
    if as_json:
        emit_json(lines)
        return
    for line in lines or ["no change"]:
        console.print(line, highlight=False, markup=False)


def _features(features: str) -> list[str]:
    found = [f.strip() for f in features.split(",") if f.strip()]
    if not found:
        raise InvalidInput("--features names no feature; write view:feature,view:feature")
    return found


@app.command("training-set")
def training_set(
    ctx: typer.Context,
    entities: Path = typer.Argument(
        ..., help="Parquet or CSV: join keys and an event time per row"
    ),
    features: str = typer.Option(..., "--features", "-f", help="view:feature,... (view:* for all)"),
    out: Path = typer.Option(..., "--out", "-o", help="where to write the Parquet result"),
    timestamp_column: str = typer.Option("event_timestamp", "--timestamp-column"),
    full_names: bool = typer.Option(False, "--full-names", help="name columns view__feature"),
    memory_limit: str | None = typer.Option(
        None, "--memory-limit", help="cap DuckDB's memory (e.g. 2GB); past it, it spills to disk"
    ),
    as_json: bool = json_flag("rows, nulls per view and lineage"),
) -> None:
    """Point-in-time correct features for every entity row: none dropped, nulls counted."""
    if not entities.is_file():
        raise InvalidInput(f"{entities} is not a file; give a Parquet or CSV file of entity rows")
    with _store(ctx) as store:
        result = store.training_set(
            entities, _features(features), timestamp_column=timestamp_column,
            full_names=full_names, out=out, memory_limit=memory_limit,
        )  # fmt: skip
    summary = {"rows": result.rows, "nulls": result.nulls, "columns": result.columns,
               "lineage": result.lineage, "path": str(out), "seconds": round(result.seconds, 3)}  # fmt: skip
    if as_json:
        emit_json(summary)
        return
    console.print(
        f"[green]✓[/] {result.rows:,} rows x {len(result.columns)} columns -> {out} "
        f"({result.seconds:.2f} s)",
        highlight=False,
    )
    for view, count in result.nulls.items():
        console.print(
            f"  {view}: {count:,} rows without a value ({count / max(result.rows, 1):.1%})"
        )


@app.command("materialize")
def materialize(
    ctx: typer.Context,
    views: list[str] | None = typer.Argument(
        None,
        help="views, or view@VERSION for one version (default: every view; a view's latest "
        "version and each older one a served model was trained on)",
    ),
    start: datetime | None = typer.Option(
        None, "--start", formats=_TIME_FORMATS, help="backfill from (UTC)"
    ),
    end: datetime | None = typer.Option(
        None, "--end", formats=_TIME_FORMATS, help="up to (UTC; default now)"
    ),
    full: bool = typer.Option(False, "--full", help="read every source row again"),
    memory_limit: str | None = typer.Option(None, "--memory-limit", help="cap DuckDB's memory"),
    as_json: bool = json_flag("one record per view"),
) -> None:
    """Load the newest values into the online store (incremental: only what is new), for
    each view's latest version and the versions served models were trained on."""
    with _store(ctx) as store, Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
        console=console, disable=as_json or not console.is_terminal, transient=True,
    ) as bar:  # fmt: skip
        task = bar.add_task("materializing", total=None)

        def progress(view: str, written: int) -> None:
            bar.update(task, description=f"{view}: {written:,} entities written")

        runs = store.materialize(
            views or None, start=_utc(start), end=_utc(end), full=full,
            memory_limit=memory_limit, progress=progress,
        )  # fmt: skip
    if as_json:
        emit_json(runs)
        return
    for run in runs:
        seconds = (
            (run["finished_at"] - run["started_at"]).total_seconds()
            if run["finished_at"] and run["started_at"]
            else 0.0
        )
        console.print(
            f"[green]✓[/] {run['view']} v{run['version']} -> {run['store']} ({run['mode']}): "
            f"{run['rows_read']:,} rows read, {run['entities_written']:,} entities written "
            f"in {seconds:.2f} s; newest value {run['newest_event'] or '-'}",
            highlight=False,
        )
        late = (run["source_state"] or {}).get("late_rows")
        if late:
            console.print(
                f"  [yellow]{late:,} rows arrived older than the last watermark[/]: the source "
                "was read in full, so none was missed"
            )


@app.command("get")
def get(
    ctx: typer.Context,
    features: str = typer.Option(..., "--features", "-f", help="view:feature,... (view:* for all)"),
    entity: list[str] = typer.Option(..., "--entity", "-e", help="key=value (repeat per key)"),
    as_json: bool = json_flag("values, their times and status"),
) -> None:
    """Read one entity's features from the online store, as a prediction would."""
    row: dict[str, Any] = {}
    for item in entity:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInput(f"--entity {item!r} is not key=value")
        row[key.strip()] = value.strip()
    with _store(ctx) as store:
        result = store.get_online([row], _features(features))
    out = {
        "values": result.values[0],
        "status": result.status[0],
        "event_times": result.event_times[0],
    }
    if as_json:
        emit_json(out)
        return
    table = Table("feature", "value")
    for name, value in result.values[0].items():
        table.add_row(name, "null" if value is None else str(value))
    console.print(table)
    for view, state in result.status[0].items():
        at = result.event_times[0][view]
        console.print(
            f"  {view}: {state}" + (f" (value from {at:%Y-%m-%d %H:%M:%S} UTC)" if at else "")
        )

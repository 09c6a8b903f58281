"""`shipyard data ...`: the data versions registered models were trained and validated on."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from shipyard.cli._common import console, emit_json, json_flag, open_registry
from shipyard.core.errors import InvalidInput
from shipyard.lineage import data_uses, diff_data, resolve_data
from shipyard.registry import Registry
from shipyard.tracking import Tracker

app = typer.Typer(
    help="Data versions: the training and holdout sets of registered models, stored once per "
    "content.",
    no_args_is_help=True,
)

REF_HELP = (
    "a data version id (or its first 6+ characters); or NAME:VERSION for the training set a "
    "model version used, NAME:VERSION/holdout for its holdout"
)


def _open(ctx: typer.Context) -> tuple[Registry, Tracker]:
    registry = open_registry(ctx)
    return registry, Tracker(registry.database, registry.artifacts, actor=registry.actor)


def _size(size: int) -> str:
    amount = float(size)
    for unit in ("B", "KB", "MB"):
        if amount < 1024:
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} GB"


@app.command("list")
def list_data(
    ctx: typer.Context,
    model: str | None = typer.Option(None, "--model", "-m", help="only the data this model used"),
    as_json: bool = json_flag("the data versions and which model versions used them"),
) -> None:
    """Data versions, newest first, with the model versions that used each."""
    registry, tracker = _open(ctx)
    try:
        uses = data_uses(registry, tracker)
        versions = tracker.data.list_versions()
    finally:
        registry.close()
    if model is not None:
        versions = [v for v in versions if any(u.model == model for u in uses.get(v.sha256, []))]
    if as_json:
        emit_json(
            [
                {**v.to_dict(), "used_by": [u.to_dict() for u in uses.get(v.sha256, [])]}
                for v in versions
            ]
        )
        return
    if not versions:
        console.print(
            "no data versions yet; they are kept when a run logs its data "
            "(run.log_dataset, register inside a run, shipyard pipeline run)"
        )
        return
    table = Table("data version", "rows", "columns", "size", "created", "used by")
    for v in versions:
        used = ", ".join(f"{u.model}:{u.version} {u.role}" for u in uses.get(v.sha256, []))
        table.add_row(
            v.sha256[:12],
            f"{v.rows:,}",
            str(len(v.schema)),
            _size(v.size_bytes),
            f"{v.created_at:%Y-%m-%d %H:%M}",
            used or "-",
        )
    console.print(table)


@app.command("show")
def show(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help=REF_HELP),
    as_json: bool = json_flag("the data version with its profile and users"),
) -> None:
    """One data version: schema, rows, key, profile, and the model versions that used it."""
    registry, tracker = _open(ctx)
    try:
        version, said = resolve_data(registry, tracker, ref)
        uses = data_uses(registry, tracker).get(version.sha256, [])
    finally:
        registry.close()
    if as_json:
        emit_json({**version.to_dict(), "used_by": [u.to_dict() for u in uses]})
        return
    console.print(f"[bold]data version {version.sha256}[/]  ({said})")
    console.print(
        f"{version.rows:,} rows, {len(version.schema)} columns, {_size(version.size_bytes)} "
        f"as Parquet; key {', '.join(version.key) if version.key else '-'}; stored "
        f"{version.created_at:%Y-%m-%d %H:%M} by {version.created_by}"
    )
    table = Table("column", "type", "missing", "summary")
    for column in version.schema:
        entry = version.profile.get("columns", {}).get(column["name"], {})
        table.add_row(column["name"], column["type"], _missing(entry), _summary(entry))
    console.print(table)
    console.print(
        "used by: "
        + (", ".join(f"{u.model}:{u.version} ({u.role})" for u in uses) or "no model version")
    )


def _missing(entry: dict[str, object]) -> str:
    rate = entry.get("missing_rate")
    return f"{float(rate):.1%}" if isinstance(rate, int | float) else "-"


def _summary(entry: dict[str, object]) -> str:
    if entry.get("profiled") is False:
        return "not profiled"
    quantiles = entry.get("quantiles")
    if isinstance(quantiles, dict) and "mean" in entry:
        return (
            f"mean {float(entry['mean']):.4g}, min {quantiles['0']:.4g}, max {quantiles['1']:.4g}"  # type: ignore[arg-type]
        )
    frequencies = entry.get("frequencies")
    if isinstance(frequencies, dict) and frequencies:
        top = sorted(frequencies.items(), key=lambda kv: -float(kv[1]))[:3]
        return ", ".join(f"{k} {float(v):.0%}" for k, v in top)
    return "-"


@app.command("diff")
def diff(
    ctx: typer.Context,
    first: str = typer.Argument(..., help=REF_HELP),
    second: str = typer.Argument(..., help="the data version to compare with the first"),
    key: list[str] | None = typer.Option(
        None, "--key", "-k", help="column(s) that identify a row (default: the first's key)"
    ),
    as_json: bool = json_flag("the diff"),
) -> None:
    """What changed between two data versions: rows added, removed and changed (by key),
    schema changes, and per-column drift."""
    registry, tracker = _open(ctx)
    try:
        a, a_said = resolve_data(registry, tracker, first)
        b, b_said = resolve_data(registry, tracker, second)
        result = diff_data(
            a, b, tracker.data.load(a.sha256), tracker.data.load(b.sha256),
            key=list(key) if key else None, names=(a_said, b_said),
        )  # fmt: skip
    finally:
        registry.close()
    if as_json:
        emit_json(result.to_dict())
        return
    console.print(f"[bold]{result.a}[/] -> [bold]{result.b}[/]")
    if result.identical:
        console.print("identical: the same rows, columns and types")
        return
    console.print(f"rows: {result.rows[0]:,} -> {result.rows[1]:,}")
    by = f"by key {', '.join(result.key)}" if result.key else "as whole rows (no key declared)"
    changed = f", {result.changed:,} changed" if result.changed is not None else ""
    console.print(
        f"{by}: {result.added:,} added, {result.removed:,} removed{changed}, "
        f"{result.unchanged:,} unchanged"
    )
    if result.changed_columns:
        console.print(
            "changed values per column: "
            + ", ".join(f"{c} {n:,}" for c, n in result.changed_columns.items())
        )
    if result.changed_keys:
        console.print(f"e.g. changed rows: {', '.join(map(str, result.changed_keys))}")
    for label, items in (
        ("columns added", result.columns_added),
        ("columns removed", result.columns_removed),
        ("types changed", [f"{c} {t[0]} -> {t[1]}" for c, t in result.types_changed.items()]),
    ):
        if items:
            console.print(f"{label}: {', '.join(items)}")
    if result.drift:
        table = Table("column", "test", "statistic", "drift")
        for column, d in result.drift.items():
            table.add_row(
                column,
                str(d["method"]),
                f"{d['statistic']:.4g}",
                "[red]yes[/]" if d["drift"] else "no",
            )
        console.print(table)


@app.command("export")
def export(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help=REF_HELP),
    out: Path = typer.Option(..., "--out", "-o", help="the file to write (.parquet or .csv)"),
) -> None:
    """Write a data version's rows to a file, checked against the stored digest."""
    if out.suffix.lower() not in (".parquet", ".csv"):
        raise InvalidInput(f"write to a .parquet or .csv file, not {out.name!r}")
    registry, tracker = _open(ctx)
    try:
        version, said = resolve_data(registry, tracker, ref)
        table = tracker.data.load(version.sha256)
    finally:
        registry.close()
    if out.suffix.lower() == ".csv":
        table.to_pandas().to_csv(out, index=False)
    else:
        import pyarrow.parquet as pq

        pq.write_table(table, out, compression="zstd")
    console.print(f"wrote {table.num_rows:,} rows of {said} to {out}")

"""`shipyard optimize`: a smaller, faster version behind an accuracy gate."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from shipyard.cli._common import console, emit_json, err_console, json_flag, open_registry

REFUSED_EXIT = 10  # as a retraining pipeline whose candidate the gates refused


def optimize(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="NAME:VERSION or NAME:ALIAS of the version to optimise"),
    holdout: Path = typer.Option(
        ...,
        "--holdout",
        help="labelled rows (.parquet/.csv) the gate scores parent and child on; never trained on",
    ),
    label: str = typer.Option("label", "--label", help="the label column of --holdout and --train"),
    quantize: str | None = typer.Option(
        None, "--quantize", help="int8 (dynamic), int8-static (QDQ, calibrated) or fp16"
    ),
    calibration: Path | None = typer.Option(
        None,
        "--calibration",
        help="rows for int8-static's activation ranges (default: the version's reference sample)",
    ),
    prune: float | None = typer.Option(
        None, "--prune", help="share of trees or hidden units to remove, e.g. 0.5"
    ),
    distill: str | None = typer.Option(
        None,
        "--distill",
        help="student to train on the model's scores: mlp, mlp:64,32, gbm:trees=50,depth=3, "
        "tree:depth=8, linear, or estimator:module.Class(arg=value)",
    ),
    train: Path | None = typer.Option(
        None, "--train", help="labelled rows for a short fine-tune after pruning a network"
    ),
    data: Path | None = typer.Option(
        None,
        "--data",
        help="rows the student learns the scores on, unlabelled is fine (default: the version's "
        "reference sample)",
    ),
    max_loss: str = typer.Option(
        "1%",
        "--max-loss",
        help="most the child may lose: AUC (binary), accuracy (multiclass) or relative RMSE",
    ),
    compare_all: bool = typer.Option(
        False, "--all", help="try every method, print one table, register nothing"
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="report only; register nothing"),
    as_json: bool = json_flag("the report"),
) -> None:
    """Quantise, prune or distil a version; register the result only if it passes the gate.

    Exit 10 when the gate refuses the result (nothing is registered).
    """
    from shipyard.optimize import Optimizer

    status = err_console.status("optimising: training, scoring and timing parent and child")
    with open_registry(ctx) as registry, status:
        report = Optimizer(registry).run(
            ref, holdout=holdout, label=label, quantize=quantize, calibration=calibration,
            prune=prune, distill=distill, train=train, data=data, max_loss=max_loss,
            compare_all=compare_all, register=not dry_run,
        )  # fmt: skip
    if as_json:
        emit_json(report.to_dict())
    else:
        _table(report)
    if not compare_all and not report.outcomes[0].passed:
        raise typer.Exit(REFUSED_EXIT)


def _ms(value: float) -> str:
    return f"{value * 1e3:.1f} µs" if value < 1 else f"{value:.2f} ms"


def _size(value: int) -> str:
    return f"{value / 1e6:.2f} MB" if value >= 1e5 else f"{value / 1e3:.1f} kB"


def _table(report: object) -> None:
    from shipyard.optimize import OptimizationReport

    assert isinstance(report, OptimizationReport)
    metric = report.gate_metric
    table = Table(
        title=f"{report.model}:{report.parent_version} on {report.holdout_rows:,} holdout rows "
        f"(gate: {metric}, max loss {report.max_loss:.2%})"
    )
    for column in ("method", "size", "1 row", "per row @1000", "rows/s", metric, "Δ", "result"):
        table.add_column(column, justify="left" if column in ("method", "result") else "right")
    parent = report.parent
    table.add_row(
        "parent", _size(parent.size_bytes), _ms(parent.latency_ms_1_row),
        _ms(parent.latency_ms_per_row_1000), f"{parent.throughput_rows_per_s:,.0f}",
        f"{parent.metrics.get(metric, float('nan')):.4f}", "", "",
    )  # fmt: skip
    for outcome in report.outcomes:
        figures = outcome.figures
        if figures is None:
            table.add_row(outcome.method, "", "", "", "", "", "", "[yellow]not applicable[/]")
            continue
        speed = report.speedup(outcome, batch=True) or 0.0
        smaller = report.shrink(outcome) or 0.0
        if outcome.version is not None:
            result = f"[green]registered v{outcome.version}[/]"
        elif outcome.passed:
            result = "[green]passed[/]"
        else:
            result = "[red]refused[/]"
        table.add_row(
            outcome.method,
            f"{_size(figures.size_bytes)} ({smaller:.1f}x)",
            _ms(figures.latency_ms_1_row),
            f"{_ms(figures.latency_ms_per_row_1000)} ({speed:.1f}x)",
            f"{figures.throughput_rows_per_s:,.0f}",
            f"{figures.metrics.get(metric, float('nan')):.4f}",
            f"{outcome.delta.get(metric, float('nan')):+.4f}",
            result,
        )
    console.print(table)
    for outcome in report.outcomes:
        if outcome.reason:
            console.print(f"[bold]{outcome.method}[/]: {outcome.reason}", highlight=False)
    if report.outcomes and all(o.version is None for o in report.outcomes):
        passed = [o.method for o in report.outcomes if o.passed]
        if passed:
            console.print(
                f"nothing registered; to register one, run it alone: e.g. shipyard optimize "
                f"{report.model}:{report.parent_version} ... without --all ({', '.join(passed)} passed)",
                highlight=False,
            )


def export(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="NAME:VERSION or NAME:ALIAS of the version to export"),
    target: str = typer.Option("edge", "--target", help="what to export for: edge"),
    profile: str = typer.Option(
        ..., "--profile", help="the device class: phone (ORT format), iot or browser"
    ),
    out: Path = typer.Option(..., "--out", help="the folder to write the export into"),
    exact: bool = typer.Option(
        False, "--exact", help="export this version as it is, not its int8 child where one exists"
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace a non-empty --out folder"),
    as_json: bool = json_flag("what was exported"),
) -> None:
    """Export a version for devices: a folder that runs with onnxruntime alone."""
    from shipyard.core.errors import InvalidInput
    from shipyard.optimize import export_edge

    if target != "edge":
        raise InvalidInput(f"--target takes edge, not {target!r}")
    with open_registry(ctx) as registry:
        result = export_edge(
            registry, ref, profile=profile, out=out, exact=exact, overwrite=overwrite
        )
    if as_json:
        emit_json(result.to_dict())
        return
    note = (
        f" (the int8 child of v{result.requested_version})"
        if result.version != result.requested_version
        else ""
    )
    console.print(
        f"exported {result.name}:{result.version}{note} for {result.profile} to {result.folder}: "
        f"model {_size(result.size_bytes)} of the {_size(result.budget_bytes)} budget; "
        f"run it with: python {result.folder / 'run.py'} rows.json",
        highlight=False,
    )
    table = Table("file", "bytes", "sha256")
    for name, meta in result.files.items():
        table.add_row(name, f"{meta['bytes']:,}", meta["sha256"][:16])
    console.print(table)

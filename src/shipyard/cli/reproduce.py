"""`shipyard reproduce NAME:VERSION`: train a past version again from its run's record."""

from __future__ import annotations

import typer
from rich.table import Table

from shipyard.cli._common import console, emit_json, err_console, json_flag, open_registry
from shipyard.lineage import Reproduction
from shipyard.lineage import reproduce as run_reproduction
from shipyard.tracking import Tracker

EXIT_NOT_REPRODUCIBLE = 2


def reproduce(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="the version to make again: NAME:VERSION or NAME:ALIAS"),
    register: bool = typer.Option(
        False, "--register", help="register the reproduction as a new version of the model"
    ),
    strict: bool = typer.Option(
        False,
        "--strict",
        help="refuse (exit 4) when Python, an ML package or the code's git tree differs from "
        "the training run's",
    ),
    as_json: bool = json_flag("what was compared and the verdict"),
) -> None:
    """Train a registered version again: the same training function, params, data version,
    seed and (reported when they differ) package versions and code; then compare its
    predictions with the original's on the same holdout.

    Exit 2 when the version's record lacks what reproduction needs (it says what).
    """
    registry = open_registry(ctx)
    try:
        tracker = Tracker(registry.database, registry.artifacts, actor=registry.actor)
        result = run_reproduction(registry, tracker, ref, strict=strict, register=register)
    finally:
        registry.close()
    if as_json:
        emit_json(result.to_dict())
    else:
        _show(result)
    if result.missing:
        raise typer.Exit(EXIT_NOT_REPRODUCIBLE)


def _show(result: Reproduction) -> None:
    if result.missing:
        err_console.print(f"[bold red]{result.ref} cannot be reproduced:[/] its record lacks")
        for item in result.missing:
            err_console.print(f"  - {item}")
        return
    console.print(
        f"[bold]{result.ref}[/] made again with {result.entrypoint} from run {result.run_id}"
    )
    console.print(
        "data: "
        + ", ".join(f"{role} {sha[:12]}" for role, sha in result.data.items())
        + (f"; params {result.params}" if result.params else "")
    )
    for line in result.differences:
        console.print(f"[yellow]environment:[/] {line}")
    for line in result.notes:
        console.print(f"[yellow]features:[/] {line}")
    gap = result.max_score_difference
    if result.verdict == "identical":
        console.print(
            f"[green]identical[/]: the same predictions on all {result.rows:,} {result.compared_on} "
            "rows (a deterministic training, made again exactly)"
        )
    else:
        console.print(
            f"[yellow]different[/]: predictions on the {result.rows:,} {result.compared_on} rows "
            f"differ (largest score gap {gap:.3g}); the training is not deterministic, so judge "
            "it by the metrics"
            if gap is not None
            else f"[yellow]different[/]: predictions on the {result.compared_on} rows differ"
        )
    if result.original:
        table = Table("metric", "original", "reproduced", "delta")
        for metric, delta in result.deltas.items():
            table.add_row(
                metric,
                f"{result.original[metric]:.6g}",
                f"{result.reproduced[metric]:.6g}",
                f"{delta:+.3g}",
            )
        console.print(table)
    if result.registered:
        console.print(f"registered as {result.registered}")

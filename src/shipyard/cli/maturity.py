"""`shipyard maturity`: the MLOps maturity level (0-3) this installation has reached, with the
evidence for each criterion and what the next level needs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.table import Table

from shipyard.cli._common import console, emit_json, json_flag, open_registry, settings

if TYPE_CHECKING:
    from shipyard.assess import MaturityReport


def maturity(
    ctx: typer.Context,
    project: Path | None = typer.Option(
        None,
        "--project",
        "--config",
        "-c",
        help="the project's shipyard.yaml (default: $SHIPYARD_CONFIG, else ./shipyard.yaml or "
        "./pyproject.toml); its folder is where CI files are looked for",
    ),
    as_json: bool = json_flag("the level, each criterion with its evidence, and what is next"),
) -> None:
    """Place this installation on the MLOps maturity ladder, criterion by criterion.

    Level 1: models registered and tracked, training a declared pipeline; 2: gates, canary
    releases and CI (or the worker) acting on shipyard's exit codes; 3: monitoring, automatic
    retraining, promotion or rollback on live evidence, and managed features.
    """
    from shipyard.assess import inspect_maturity

    with open_registry(ctx) as registry:
        report = inspect_maturity(registry, project or settings(ctx).config)
    if as_json:
        emit_json(report.to_dict())
        return
    _render(report)


def _render(report: MaturityReport) -> None:
    table = Table(show_lines=True, expand=True)
    table.add_column("level", no_wrap=True)
    table.add_column("criterion", ratio=1)
    table.add_column("met", no_wrap=True)
    table.add_column("evidence / what to do", ratio=3)
    for c in report.criteria:
        said = escape(c.evidence) + ("" if c.met else f"\n[yellow]to do:[/] {escape(str(c.to_do))}")
        met = "[green]yes[/]" if c.met else "[red]no[/]"
        table.add_row(str(c.level), f"{c.title} [dim]({c.id})[/]", met, said)
    console.print(table)
    where = escape(report.project or f"no project file in {report.folder}")
    console.print(f"[bold]level {report.level}[/]: {report.name} (project: {where})")
    ahead = [c for c in report.criteria if c.level > report.level + 1 and c.met]
    if ahead:
        console.print(
            f"{len(ahead)} criteria of higher levels already hold; they count once the levels "
            "below them do"
        )
    needs = report.next_level_needs
    if not needs:
        console.print("every criterion of the ladder holds")
        return
    console.print(f"[bold]level {report.level + 1} needs[/]:")
    for c in needs:
        console.print(f"  - {c.title}: {escape(str(c.to_do))}", highlight=False)

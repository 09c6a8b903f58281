"""`shipyard assess`: the AI-readiness questionnaire and the use-case matrix."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from shipyard.assess import (
    AREAS,
    QUESTIONS,
    Assessment,
    Readiness,
    ScoredUseCase,
    answers_template,
    load_answers,
    load_use_cases,
    render_html,
    render_markdown,
    score_answers,
)
from shipyard.cli._common import console, emit_json, err_console, json_flag
from shipyard.core.errors import InvalidInput

__all__ = ["assess"]

_NOT_A_TERMINAL = (
    "stdin is not a terminal, so the questions cannot be asked: pass --answers FILE "
    "(`shipyard assess --template answers.yaml` writes one to fill in), --interactive to read "
    "y/n answers from stdin, or --use-cases FILE alone for the use-case matrix"
)


def assess(
    answers: Path | None = typer.Option(
        None,
        "--answers",
        "-a",
        help="YAML or JSON file answering the 15 questions (question id: yes or no); without "
        "it (and without --use-cases) the questions are asked in the terminal",
    ),
    use_cases: Path | None = typer.Option(
        None,
        "--use-cases",
        "-u",
        help="YAML or JSON file of candidate use cases to score and place on the "
        "impact-vs-feasibility matrix (alone: the matrix without the questionnaire)",
    ),
    report: Path | None = typer.Option(
        None,
        "--report",
        "-r",
        help="write the assessment as a standalone HTML page, or as Markdown when the name ends in .md",
    ),
    template: Path | None = typer.Option(
        None,
        "--template",
        help="write an answers file to fill in (every question id, its text as a comment) and stop",
    ),
    interactive: bool = typer.Option(
        False,
        "--interactive",
        "-i",
        help="ask the questions even when stdin is not a terminal (one y or n a line)",
    ),
    as_json: bool = json_flag("the assessment (score, band, gaps, scored use cases)"),
) -> None:
    """Score AI readiness (15 yes/no questions: data, technical, organisational) and rank
    candidate use cases by impact and feasibility, with build-vs-buy advice and pitfalls."""
    if template is not None:
        _write_template(template, answers, use_cases, report)
        return
    if answers is not None and interactive:
        raise InvalidInput("--answers and --interactive both give the answers; use one of them")
    if report is not None:
        _check_writable(report)
    result = Assessment(
        readiness=_readiness(answers, wanted=interactive or use_cases is None, ask=interactive),
        use_cases=None if use_cases is None else load_use_cases(use_cases),
    )
    if report is not None:
        _write_report(result, report, quiet=as_json)
    if as_json:
        emit_json(result.to_dict())
        return
    if result.readiness is not None:
        _print_readiness(result.readiness)
    if result.use_cases is not None:
        _print_use_cases(result.use_cases)
    if report is not None:
        console.print(f"[green]✓[/] wrote {escape(str(report))}")


def _readiness(answers: Path | None, wanted: bool, ask: bool) -> Readiness | None:
    """The questionnaire from the file, or asked in the terminal (on a terminal, or anywhere
    when `ask`); None when not wanted."""
    if answers is not None:
        return load_answers(answers)
    if not wanted:
        return None
    if not (ask or sys.stdin.isatty()):
        raise InvalidInput(_NOT_A_TERMINAL)
    return score_answers(_ask())


def _ask() -> dict[str, bool]:
    """Each question in turn, on stderr, so `--json` output stays clean."""
    given: dict[str, bool] = {}
    for area, name in AREAS.items():
        err_console.print(f"\n[bold]{name}[/]")
        for q in (q for q in QUESTIONS if q.area == area):
            number = f"[{len(given) + 1}/{len(QUESTIONS)}]"
            given[q.id] = typer.confirm(f"{number} {q.text}", default=None, err=True)
    return given


def _write_template(
    path: Path, answers: Path | None, use_cases: Path | None, report: Path | None
) -> None:
    if answers or use_cases or report:
        raise InvalidInput(
            "--template writes a blank answers file and does nothing else; run it alone, "
            "then `shipyard assess --answers FILE`"
        )
    if path.exists():
        raise InvalidInput(f"{path} already exists; name another file or remove it first")
    _write(path, answers_template())
    console.print(
        f"[green]✓[/] wrote {escape(str(path))}: answer each question yes or no, then run "
        f"`shipyard assess --answers {escape(str(path))}`"
    )


def _check_writable(report: Path) -> None:
    """Before any question is asked: a report that cannot be written would lose the answers."""
    if report.suffix.lower() not in (".html", ".htm", ".md"):
        raise InvalidInput(f"cannot write {report.name}: name the report .html or .md")
    if not report.parent.is_dir():
        raise InvalidInput(f"cannot write {report}: the folder {report.parent} does not exist")


def _write_report(result: Assessment, path: Path, quiet: bool) -> None:
    markdown = path.suffix.lower() == ".md"
    _write(path, render_markdown(result) if markdown else render_html(result))
    if quiet:
        err_console.print(f"wrote {escape(str(path))}")


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as error:
        raise InvalidInput(f"cannot write {path}: {error.strerror or error}") from None


def _print_readiness(r: Readiness) -> None:
    colour = ("green", "yellow", "red")[r.level]
    console.print(f"[bold]AI readiness: {r.score}/{r.out_of}[/], [{colour}]{r.band}[/]")
    console.print(
        "  "
        + ", ".join(
            f"{a.name} {a.score}/{a.out_of}" + (" (weakest)" if a.name == r.weakest else "")
            for a in r.areas
        )
    )
    if not r.gaps:
        console.print("  no gaps: every question was answered yes")
        return
    table = Table("area", "question", "gap", "what to do", title=f"gaps ({len(r.gaps)})")
    for g in r.gaps:
        table.add_row(g.area, g.id, g.gap, g.remedy)
    console.print(table)


def _print_use_cases(use_cases: list[ScoredUseCase]) -> None:
    table = Table(
        "#", "use case", "impact", "feasibility", "quadrant", "build or buy", "pitfalls",
        title="use cases, in the order to work on them",
    )  # fmt: skip
    for u in use_cases:
        table.add_row(
            str(u.priority), escape(u.name), f"{u.impact:g}", f"{u.feasibility:g}", u.quadrant_label,
            u.sourcing.decision, str(len(u.pitfalls)),
        )  # fmt: skip
    console.print(table)
    for u in use_cases:
        # a name from the file is text, never Rich markup
        console.print(f"\n[bold]{u.priority}. {escape(u.name)}[/]: {u.quadrant_label}")
        console.print(f"  {u.sourcing.decision}: {'; '.join(u.sourcing.reasons)}")
        for p in u.pitfalls:
            console.print(f"  [yellow]![/] {p.problem}\n    [dim]fix:[/] {p.fix}")

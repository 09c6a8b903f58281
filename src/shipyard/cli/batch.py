"""`shipyard batch`: score a whole file, folder or SQL source with a registered version."""

from __future__ import annotations

import time
from typing import Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from shipyard.batch import DEFAULT_CHUNK_ROWS, BatchResult
from shipyard.batch import score as score_batch
from shipyard.cli._common import emit_json, err_console, json_flag, open_registry, settings

PLAIN_EVERY_SECONDS = 10.0


def batch(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="NAME (serving alias), NAME:VERSION or NAME:ALIAS"),
    input_path: str | None = typer.Option(
        None,
        "--input",
        "-i",
        help="rows to score: a .parquet/.csv file or a folder of them (a path or any fsspec "
        "URL), or with --db the name of a table",
    ),
    query: str | None = typer.Option(
        None, "--query", "-q", help="a SQL query whose rows are scored (with --db)"
    ),
    db: str | None = typer.Option(
        None, "--db", help="SQLAlchemy URL of the database --query or the input table is in"
    ),
    key: str | None = typer.Option(
        None,
        "--key",
        help="a unique column that orders a query's rows, so a stopped job resumes where it "
        "stopped (a table uses its primary key; a query with ORDER BY its own order)",
    ),
    output: str = typer.Option(
        ...,
        "--output",
        "-o",
        help="where the scores go: a .parquet/.csv path or fsspec URL, or with --db (or "
        "--output-db) a table the job creates",
    ),
    output_db: str | None = typer.Option(
        None, "--output-db", help="SQLAlchemy URL of the database the output table goes to"
    ),
    keep: list[str] | None = typer.Option(
        None,
        "--keep",
        help="an input column to write beside the scores (repeat it; '*' for all); default: "
        "every column the model does not take (ids and other passthrough columns)",
    ),
    chunk_rows: int = typer.Option(
        DEFAULT_CHUNK_ROWS,
        "--chunk-rows",
        min=1,
        help="rows scored and staged together: memory holds a few chunks, and a stopped job "
        "resumes from its last whole chunk",
    ),
    overwrite: bool = typer.Option(
        False,
        "--overwrite",
        help="replace an existing output (once the job is done), or discard another job "
        "staged there",
    ),
    no_log: bool = typer.Option(
        False,
        "--no-log",
        help="do not log the predictions (by default they are, so `shipyard monitor` covers them)",
    ),
    engine: str = typer.Option(
        "local",
        "--engine",
        help="local (a streaming loop here), spark or ray (the chunks run on those engines' "
        "workers, same results; Parquet input)",
    ),
    workers: int | None = typer.Option(
        None,
        "--workers",
        min=1,
        help="local: chunks scored at once (onnxruntime models; default: one per CPU, at most "
        "4); spark: local cores; ray: actors (default: every CPU)",
    ),
    cpus_per_worker: float | None = typer.Option(
        None, "--cpus-per-worker", min=0.01, help="ray: CPUs each actor takes (fractions allowed)"
    ),
    as_json: bool = json_flag("what the job did"),
) -> None:
    """Score every row of a file, folder, table or query and write the scores.

    The output appears only when every row is scored; run the same command again after a
    crash and the job goes on from its last whole chunk.
    """
    config = settings(ctx)
    reporter = _Reporter(quiet=as_json)
    with open_registry(ctx) as registry, reporter:
        result = score_batch(
            ref,
            input_path,
            output,
            query=query,
            db=db,
            output_db=output_db,
            key=key,
            keep=keep,
            chunk_rows=chunk_rows,
            overwrite=overwrite,
            log=not no_log,
            settings=config,
            registry=registry,
            progress=reporter.update,
            engine=engine,
            workers=workers,
            cpus_per_worker=cpus_per_worker,
        )
    if as_json:
        emit_json(result.to_dict())
    else:
        _summary(result)


def _summary(result: BatchResult) -> None:
    resumed = f", {result.resumed_rows:,} staged by an earlier run" if result.resumed_rows else ""
    err_console.print(
        f"scored {result.scored:,} rows with {result.model}:{result.version} on "
        f"{result.runtime}{'' if result.engine == 'local' else ' (' + result.engine + ')'} in {result.seconds:.1f} s ({result.rows_per_second:,.0f} rows/s)"
        f"{resumed}; wrote {result.rows:,} rows to {result.output}",
        highlight=False,
    )
    if result.invalid:
        err_console.print(
            f"[yellow]warning:[/] the model answered NaN or infinity for {result.invalid:,} "
            "rows; their scores and labels are empty (their inputs are probably far outside "
            "what the model was trained on)",
            highlight=False,
        )
    logged = "logged for `shipyard monitor`" if result.logged else "not logged (--no-log)"
    err_console.print(f"job {result.job_id}: predictions {logged}", highlight=False)


class _Reporter:
    """A Rich progress bar with rows/s and the time left on a terminal; a plain line every
    few seconds otherwise (CI logs, cron mail)."""

    def __init__(self, *, quiet: bool) -> None:
        self.quiet = quiet
        self.bar: Progress | None = None
        self.task: Any = None
        self.started = time.monotonic()
        self.last_line = 0.0
        self.first: int | None = None

    def __enter__(self) -> _Reporter:
        if not self.quiet and err_console.is_terminal:
            self.bar = Progress(
                TextColumn("scoring"),
                BarColumn(),
                MofNCompleteColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[speed]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=err_console,
                transient=True,
            )
            self.bar.start()
            self.task = self.bar.add_task("rows", total=None, speed="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def update(self, rows: int, total: int | None) -> None:
        if self.first is None:
            self.first = rows  # rows an earlier run staged do not count for the speed
        now = time.monotonic()
        speed = (rows - self.first) / max(now - self.started, 1e-9)
        if self.bar is not None:
            self.bar.update(self.task, completed=rows, total=total, speed=f"{speed:,.0f} rows/s")
        elif not self.quiet and (now - self.last_line >= PLAIN_EVERY_SECONDS or rows == total):
            self.last_line = now
            of = f" of {total:,}" if total is not None else ""
            left = ""
            if total is not None and speed > 0:
                left = f", about {(total - rows) / speed:,.0f} s left"
            err_console.print(
                f"scored {rows:,}{of} rows ({speed:,.0f} rows/s{left})", highlight=False
            )

"""The `shipyard` command: one module per command group, errors mapped to exit codes here."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import typer
import typer.core
from rich.logging import RichHandler

from shipyard.cli import (
    batch,
    db,
    demo,
    deploy,
    features,
    keys,
    loop,
    models,
    monitor,
    predict,
    runs,
    server,
    stream,
)
from shipyard.cli._common import err_console
from shipyard.core import Settings
from shipyard.core import errors as e
from shipyard.core.version import __version__

__all__ = ["EXIT_CODES", "app", "exit_code_for", "main"]

# Exit codes that mean something to scripts, one per class of the error tree (a test walks
# the tree, so a new class cannot silently become exit 1)
EXIT_CODES: dict[type[e.ShipyardError], int] = {
    e.ShipyardError: 1,
    e.InvalidInput: 2,
    e.InvalidName: 2,
    e.MalformedRequest: 2,
    e.SchemaViolation: 2,
    e.InvalidLabels: 2,
    e.ModelOutputInvalid: 2,
    e.UnsupportedModel: 2,
    e.UserCodeFailed: 2,
    e.UnsupportedMediaType: 2,
    e.PayloadTooLarge: 2,
    e.MethodNotAllowed: 2,
    e.NotFound: 3,
    e.ModelNotFound: 3,
    e.VersionNotFound: 3,
    e.AliasNotFound: 3,
    e.Conflict: 4,
    e.VersionArchived: 4,
    e.ArtifactCorrupted: 5,
    e.ModelUnavailable: 5,
    e.MissingDependency: 6,
    e.SchemaOutdated: 7,
    e.ConfigurationError: 7,
    e.AddressInUse: 11,
    e.Unauthenticated: 8,
    e.Forbidden: 8,
    e.RateLimited: 9,
    e.Overloaded: 9,
    e.DeadlineExceeded: 9,
    e.ServiceUnavailable: 9,
    e.BackendUnavailable: 9,
    e.DatabaseUnavailable: 9,
    e.LogUnavailable: 9,
    e.RedisUnavailable: 9,
}


def _flag_types_hidden() -> None:
    """Help lists each option's type (`<int>`, `<float>`, `<path>`) but none for flags.

    Typer writes `<bool>` beside every flag (`--json`, `--debug`), which says nothing a user can
    act on; flags take no value, so their type column stays empty.
    """
    shown = typer.core.TyperOption.display_type_rich

    def display_type_rich(self: typer.core.TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag else shown(self, ctx)

    typer.core.TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flag_types_hidden()

app = typer.Typer(
    name="shipyard",
    help="Take a trained model from the lab to production and keep it healthy there.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"shipyard {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    home: Path | None = typer.Option(
        None, "--home", help="state folder (default $SHIPYARD_HOME or ./.shipyard)"
    ),
    version: bool = typer.Option(
        False,
        "--version",
        help="print shipyard's version and exit",
        callback=_print_version,
        is_eager=True,
    ),
) -> None:
    if home is not None:
        # exported so server workers and subprocesses see the same home
        os.environ["SHIPYARD_HOME"] = str(home)
    # warnings from the library (an alert that fired, a webhook that failed) reach the terminal
    # once, in Rich's format; `shipyard server` replaces this with its own JSON logging
    handler = RichHandler(console=err_console, show_time=False, show_path=False)
    handler.setFormatter(logging.Formatter("%(message)s"))  # Rich shows the level itself
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    ctx.obj = Settings()


app.add_typer(models.app, name="models")
app.add_typer(db.app, name="db")
app.add_typer(keys.app, name="keys")
app.add_typer(monitor.app, name="monitor")
app.add_typer(features.app, name="features")
app.add_typer(stream.app, name="stream")
app.add_typer(runs.app, name="runs")
app.add_typer(loop.pipeline_app, name="pipeline")
app.add_typer(loop.jobs_app, name="jobs")
app.command("worker")(loop.worker)
app.command("approve")(loop.approve)
app.command("history")(loop.history)
app.command("deploy")(deploy.deploy)
app.command("predict")(predict.predict)
app.command("batch")(batch.batch)
app.command("server")(server.server)
app.command("demo")(demo.demo)


def exit_code_for(error: e.ShipyardError) -> int:
    for cls in type(error).__mro__:
        code = EXIT_CODES.get(cls)
        if code is not None:
            return code
    return 1


def main() -> None:
    try:
        app()
    except e.ShipyardError as error:
        err_console.print(f"[bold red]error:[/] {error.message}", highlight=False)
        sys.exit(exit_code_for(error))

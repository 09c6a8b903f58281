"""The `shipyard` command: one module per command group, errors mapped to exit codes here."""

from __future__ import annotations

import importlib
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
import typer.core
import typer.main
from rich.logging import RichHandler
from rich.markup import escape

from shipyard.cli._common import err_console
from shipyard.core import Settings
from shipyard.core import errors as e
from shipyard.core.version import __version__

if TYPE_CHECKING:  # the Click that this Typer builds on (Typer 0.2x ships its own copy)
    from typer._click.core import Command, Context

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

# Each command and group, in the order help lists them: (module in shipyard.cli, attribute,
# whether the attribute is a group of commands). A module is imported when its command runs
# (or help lists it): `shipyard batch` does not import the feature store, monitoring and the
# server, which alone took 1.4 s of a 2.6 s start-up when every module was imported first.
COMMANDS: dict[str, tuple[str, str, bool]] = {
    "worker": ("loop", "worker", False),
    "approve": ("loop", "approve", False),
    "reject": ("loop", "reject", False),
    "history": ("loop", "history", False),
    "deploy": ("deploy", "deploy", False),
    "predict": ("predict", "predict", False),
    "batch": ("batch", "batch", False),
    "optimize": ("optimize", "optimize", False),
    "export": ("optimize", "export", False),
    "server": ("server", "server", False),
    "demo": ("demo", "demo", False),
    "models": ("models", "app", True),
    "db": ("db", "app", True),
    "keys": ("keys", "app", True),
    "monitor": ("monitor", "app", True),
    "features": ("features", "app", True),
    "stream": ("stream", "app", True),
    "federated": ("federated", "app", True),
    "runs": ("runs", "app", True),
    "data": ("data", "app", True),
    "reproduce": ("reproduce", "reproduce", False),
    "assess": ("assess", "assess", False),
    "maturity": ("maturity", "maturity", False),
    "pipeline": ("loop", "pipeline_app", True),
    "jobs": ("loop", "jobs_app", True),
}


class _Commands(typer.core.TyperGroup):
    """The root group: commands from `COMMANDS`, each module imported when first needed."""

    def list_commands(self, ctx: Context) -> list[str]:
        return [*COMMANDS, *(name for name in super().list_commands(ctx) if name not in COMMANDS)]

    def resolve_command(
        self, ctx: Context, args: list[str]
    ) -> tuple[str | None, Command | None, list[str]]:
        if args and args[0] not in COMMANDS and args[0] not in self.commands:
            # a mistyped name: every command loaded, so "Did you mean ...?" has them to suggest
            for name in COMMANDS:
                self.get_command(ctx, name)
        return super().resolve_command(ctx, args)

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module, attribute, is_group = COMMANDS[cmd_name]
            target = getattr(importlib.import_module(f"shipyard.cli.{module}"), attribute)
            if is_group:
                command: Command = typer.main.get_group(target)
            else:
                single = typer.Typer()
                single.command(cmd_name)(target)
                command = typer.main.get_group(single).commands[cmd_name]
            command.name = cmd_name
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)


app = typer.Typer(
    name="shipyard",
    cls=_Commands,
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
        err_console.print(f"[bold red]error:[/] {escape(error.message)}", highlight=False)
        sys.exit(exit_code_for(error))

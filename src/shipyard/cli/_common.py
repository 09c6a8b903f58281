"""What every command group shares: the console, settings, output in Rich or JSON, file reading."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from shipyard.core import Settings
from shipyard.core.errors import InvalidInput

if TYPE_CHECKING:
    from shipyard.registry import Registry

__all__ = [
    "TABLE_SUFFIXES",
    "console",
    "emit_json",
    "err_console",
    "json_flag",
    "open_registry",
    "parse_pairs",
    "read_records",
    "read_table",
    "settings",
]

TABLE_SUFFIXES = (".csv", ".parquet", ".pq")

console = Console()
err_console = Console(stderr=True)


def settings(ctx: typer.Context) -> Settings:
    """The settings built once by the root command."""
    value: Settings = ctx.find_root().obj
    return value


def open_registry(ctx: typer.Context) -> Registry:
    from shipyard.registry import Registry

    return Registry.from_settings(settings(ctx))


def json_flag(what: str) -> Any:
    """The `--json` option of a command whose JSON output is `what`."""
    return typer.Option(
        False, "--json", help=f"print {what} as JSON on stdout (for scripts) instead of a table"
    )


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def parse_pairs(items: list[str] | None, what: str, numeric: bool = False) -> dict[str, Any]:
    """`key=value` options into a dict; values become numbers where they parse as numbers."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInput(f"{what} {item!r} must look like key=value")
        try:
            out[key] = float(value) if numeric or _looks_numeric(value) else value
        except ValueError:
            raise InvalidInput(f"{what} {key!r} must be a number, got {value!r}") from None
    return out


def _looks_numeric(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def read_table(path: Path) -> Any:
    """A pandas DataFrame from a CSV, Parquet or JSON (records) file."""
    import pandas as pd

    from shipyard.core.tables import read_table_file

    if not path.exists():
        raise InvalidInput(f"file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".json", ".jsonl"):
        return pd.DataFrame.from_records(read_records(str(path)))
    if suffix not in TABLE_SUFFIXES:
        raise InvalidInput(f"cannot read {path.name}: use a .csv, .parquet or .json file")
    return read_table_file(path, "csv" if suffix == ".csv" else "parquet")


def read_records(source: str) -> list[dict[str, Any]]:
    """Records from a JSON file (or `-` for stdin): `{"instances": [...]}`, a list, or one object."""
    text = sys.stdin.read() if source == "-" else _read_text(source)
    try:
        data = (
            json.loads(text)
            if not source.endswith(".jsonl")
            else [json.loads(line) for line in text.splitlines() if line.strip()]
        )
    except json.JSONDecodeError as error:
        raise InvalidInput(
            f"{'stdin' if source == '-' else source} is not valid JSON: {error}"
        ) from None
    if isinstance(data, dict) and "instances" in data:
        data = data["instances"]
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise InvalidInput('input must be a record, a list of records, or {"instances": [...]}')
    return data


def _read_text(source: str) -> str:
    path = Path(source)
    if not path.exists():
        raise InvalidInput(f"input file {source!r} does not exist")
    return path.read_text()

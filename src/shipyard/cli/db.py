"""`shipyard db ...`: the metadata database's schema."""

from __future__ import annotations

import typer

from shipyard.cli._common import console, emit_json, json_flag, settings
from shipyard.store import Database

app = typer.Typer(help="Manage the metadata database schema.", no_args_is_help=True)


@app.command("upgrade")
def upgrade(
    ctx: typer.Context,
    revision: str = typer.Argument("head"),
    as_json: bool = json_flag("the revisions before and after (from, to)"),
) -> None:
    """Apply pending migrations (safe to run on every deploy)."""
    database = Database(settings(ctx).resolved_database_url)
    try:
        before = database.current_revision()
        after = database.upgrade(revision)
    finally:
        database.close()
    if as_json:
        emit_json({"from": before, "to": after})
        return
    console.print(
        f"database at revision [bold]{after}[/]"
        + (f" (was {before or 'empty'})" if before != after else " (already current)")
    )


@app.command("current")
def current(
    ctx: typer.Context,
    as_json: bool = json_flag("the current and the newest revision (current, head)"),
) -> None:
    """Show the schema revision the database is at, and the one this shipyard needs."""
    database = Database(settings(ctx).resolved_database_url)
    try:
        now, head = database.current_revision(), database.head_revision()
    finally:
        database.close()
    if as_json:
        emit_json({"current": now, "head": head})
        return
    console.print(
        f"current {now or 'none'}, head {head}"
        + ("" if now == head else " (run `shipyard db upgrade`)")
    )

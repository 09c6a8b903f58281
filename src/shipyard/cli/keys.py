"""`shipyard keys ...`: API keys for the prediction server."""

from __future__ import annotations

import typer
from rich.table import Table

from shipyard.access import KeyStore, parse_rate
from shipyard.cli._common import console, emit_json, err_console, json_flag, open_registry, settings

app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)


def _keys(ctx: typer.Context) -> KeyStore:
    registry = open_registry(ctx)
    return KeyStore(registry.database, actor=settings(ctx).actor)


@app.command("create")
def create(
    ctx: typer.Context,
    scope: str = typer.Option(..., "--scope", help="predict, read, write or admin"),
    model: str | None = typer.Option(None, "--model", help="bind the key to one model"),
    rate: str | None = typer.Option(None, "--rate", help="sustained rate, e.g. 100/s or 6000/min"),
    burst: int | None = typer.Option(
        None, "--burst", help="requests allowed at once (default: 1 s of rate)"
    ),
    name: str = typer.Option("", "--name", help="what the key is for, e.g. checkout-service"),
    features: str | None = typer.Option(
        None, "--features", help="limit the key to these feature views (comma-separated)"
    ),
    as_json: bool = json_flag("the key's record and its token (shown once)"),
) -> None:
    """Create a key. It is printed once and never stored: keep it somewhere safe."""
    keys = _keys(ctx)
    try:
        key, token = keys.create(
            scope,
            model=model,
            rate_per_second=parse_rate(rate) if rate else None,
            burst=burst,
            name=name,
            feature_views=features.split(",") if features is not None else None,
        )
    finally:
        keys.database.close()
    if as_json:
        emit_json({"key": key.to_dict(), "token": token})
        return
    limits = f", {key.rate_per_second:g}/s burst {key.burst}" if key.rate_per_second else ""
    bound = f" for model {key.model}" if key.model else ""
    if key.feature_views is not None:
        bound += f", feature views {', '.join(key.feature_views)}"
    console.print(f"[green]created[/] key [bold]{key.id}[/] ({key.scope}{bound}{limits})")
    console.print(token, highlight=False, soft_wrap=True)
    err_console.print(
        "[yellow]this is the only time the key is shown; store it in your secret manager[/]"
    )


@app.command("list")
def list_keys(
    ctx: typer.Context,
    include_revoked: bool = typer.Option(False, "--all", help="include revoked keys"),
    as_json: bool = json_flag("the keys' records (never their tokens)"),
) -> None:
    """List keys (never their secrets)."""
    keys = _keys(ctx)
    try:
        found = keys.list_keys(include_revoked=include_revoked)
    finally:
        keys.database.close()
    if as_json:
        emit_json([k.to_dict() for k in found])
        return
    if not found:
        console.print("no API keys yet; create one with `shipyard keys create --scope predict`")
        return
    table = Table("id", "name", "scope", "model", "rate", "created", "by", "revoked")
    for k in found:
        rate = f"{k.rate_per_second:g}/s (burst {k.burst})" if k.rate_per_second else "-"
        revoked = f"{k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else ""
        table.add_row(
            k.id,
            k.name,
            k.scope,
            k.model or "*",
            rate,
            f"{k.created_at:%Y-%m-%d %H:%M}",
            k.created_by,
            revoked,
        )
    console.print(table)


@app.command("revoke")
def revoke(
    ctx: typer.Context, key_id: str, as_json: bool = json_flag("the revoked key's record")
) -> None:
    """Revoke a key; servers refuse it within their refresh interval (2 s by default)."""
    keys = _keys(ctx)
    try:
        key = keys.revoke(key_id)
    finally:
        keys.database.close()
    if as_json:
        emit_json(key.to_dict())
        return
    console.print(f"[yellow]revoked[/] key {key.id}")

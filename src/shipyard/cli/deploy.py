"""`shipyard deploy NAME ...`: traffic splits (all, canary, A/B, shadow) and rollback."""

from __future__ import annotations

import typer
from rich.table import Table

from shipyard.cli._common import console, emit_json, json_flag, open_registry
from shipyard.core.errors import InvalidInput
from shipyard.registry import Deployment


def deploy(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="model name"),
    version: int | None = typer.Option(None, "--version", "-v", help="version to deploy"),
    canary: float | None = typer.Option(
        None, "--canary", help="percent of traffic for VERSION as a canary"
    ),
    ab: float | None = typer.Option(
        None, "--ab", help="percent of traffic for VERSION as an A/B arm"
    ),
    shadow: bool = typer.Option(
        False, "--shadow", help="VERSION gets a copy of every request, never answers"
    ),
    rollback: bool = typer.Option(False, "--rollback", help="return to the previous deployment"),
    stop: bool = typer.Option(
        False, "--stop", help="stop serving NAME (--rollback brings it back)"
    ),
    routing_field: str | None = typer.Option(
        None, "--routing-field", help="request field whose value keeps a caller on one variant"
    ),
    reason: str = typer.Option("", "--reason", help="why, for the audit trail"),
    status: bool = typer.Option(
        False, "--status", help="show the live deployment (what serves NAME now)"
    ),
    history: bool = typer.Option(
        False,
        "--history",
        help="list every deployment of NAME, newest first (what --rollback returns to)",
    ),
    as_json: bool = json_flag(
        "the new deployment (with --status or --history: current and history)"
    ),
) -> None:
    """Decide which versions of NAME serve, with what share of traffic.

    `--version 3` sends all traffic to 3 (and moves the production alias); `--version 4
    --canary 5` sends 5% to 4 beside the primary; `--ab 50` splits for a comparison;
    `--shadow` mirrors requests to 4; `--rollback` undoes the last change; `--stop` stops
    serving NAME. Running servers pick the change up within seconds.
    """
    if status or history:
        if status and history:
            raise InvalidInput("use --status or --history, not both")
        acting = version is not None or canary is not None or ab is not None
        if acting or shadow or rollback or stop:
            raise InvalidInput(
                f"--{'status' if status else 'history'} only reads; it takes no --version,"
                " --canary, --ab, --shadow, --rollback or --stop"
            )
    with open_registry(ctx) as registry:
        if status or history:
            _show(name, registry.deployment_history(name), as_json, everything=history)
            return
        if stop:
            if version is not None or canary is not None or ab is not None or shadow or rollback:
                raise InvalidInput(
                    "--stop takes no --version, --canary, --ab, --shadow or --rollback"
                )
            result = registry.stop(name, reason=reason)
        elif rollback:
            if version is not None or canary is not None or ab is not None or shadow:
                raise InvalidInput("--rollback takes no --version, --canary, --ab or --shadow")
            result = registry.rollback(name, reason=reason)
        elif version is None:
            raise InvalidInput(
                f"say which version to deploy (shipyard deploy {name} --version N), or --rollback,"
                " --stop, --status or --history"
            )
        else:
            result = registry.deploy(
                name,
                version,
                canary=canary,
                ab=ab,
                shadow=shadow,
                routing_field=routing_field,
                reason=reason,
            )
    if as_json:
        emit_json(result.to_dict())
        return
    console.print(
        f"[green]deployed[/] {name} revision {result.revision}: [bold]{result.describe()}[/]"
    )


def _show(name: str, revisions: list[Deployment], as_json: bool, everything: bool) -> None:
    if as_json:
        emit_json(
            {
                "current": revisions[0].to_dict() if revisions else None,
                "history": [d.to_dict() for d in revisions],
            }
        )
        return
    if not revisions:
        console.print(
            f"{name} was never deployed; it serves its production alias (shipyard deploy {name} --version N)"
        )
        return
    shown = revisions if everything else revisions[:1]
    title = f"{name} deployments, newest first" if everything else f"{name} now"
    table = Table("revision", "variants", "routing field", "when", "by", "reason", title=title)
    for d in shown:
        when = f"{d.created_at:%Y-%m-%d %H:%M:%S}" if d.created_at else ""
        table.add_row(
            str(d.revision), d.describe(), d.routing_field or "-", when, d.created_by, d.reason
        )
    console.print(table)
    if not everything and len(revisions) > 1:
        console.print(
            f"{len(revisions) - 1} earlier deployment(s): shipyard deploy {name} --history"
        )

"""`shipyard demo`: the fraud model's lifecycle on embedded defaults."""

from __future__ import annotations

from pathlib import Path

import typer

from shipyard.cli._common import console


def demo(
    home: Path = typer.Option(
        Path(".shipyard-demo"), "--demo-home", help="fresh state folder for the demo (wiped first)"
    ),
    rows: int = typer.Option(60_000, min=1_000, help="transactions to generate"),
    requests: int = typer.Option(500, min=1, help="single-record HTTP requests to send"),
    serve: bool = typer.Option(
        False, "--serve", help="afterwards, keep a server up on the demo's state (Ctrl-C stops it)"
    ),
    port: int = typer.Option(8000, min=1, max=65535, help="the --serve server's port"),
) -> None:
    """Train, register, serve and call a fraud model, end to end; then print how to open the
    dashboard (or, with --serve, keep a server up to explore it)."""
    from shipyard.demo import run_demo  # pandas and scikit-learn load only for the demo

    result = run_demo(home.resolve(), rows=rows, requests=requests, console=console)
    if serve:
        from shipyard.demo import serve as serve_forever

        console.print(
            f"[bold green]dashboard[/]: http://127.0.0.1:{port}/ui (sign in with "
            f"{result.dashboard_key}); Ctrl-C stops the server"
        )
        serve_forever(home.resolve(), port)

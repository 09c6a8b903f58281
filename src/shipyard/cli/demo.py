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
) -> None:
    """Train, register, serve and call a fraud model, end to end."""
    from shipyard.demo import run_demo  # pandas and scikit-learn load only for the demo

    run_demo(home.resolve(), rows=rows, requests=requests, console=console)

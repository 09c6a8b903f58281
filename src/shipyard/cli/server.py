"""`shipyard server`: the prediction server under uvicorn."""

from __future__ import annotations

import typer


def server(
    host: str = typer.Option("127.0.0.1", help="interface to bind"),
    port: int = typer.Option(8000, help="port to listen on"),
    workers: int = typer.Option(1, min=1, help="worker processes"),
    log_level: str = typer.Option("info", help="uvicorn log level"),
) -> None:
    """Serve predictions over HTTP (/v1, the V2 inference protocol, /docs)."""
    import uvicorn

    uvicorn.run(
        "shipyard.app:factory",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        access_log=False,
    )

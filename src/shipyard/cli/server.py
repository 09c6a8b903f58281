"""`shipyard server`: the prediction server under uvicorn."""

from __future__ import annotations

import os
import shutil

import typer

from shipyard.cli._common import settings


def server(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", help="interface to bind"),
    port: int = typer.Option(8000, help="port to listen on"),
    workers: int = typer.Option(1, min=1, help="worker processes (one per core is a good start)"),
    log_level: str = typer.Option("info", help="log level"),
) -> None:
    """Serve predictions over HTTP (/v1, the V2 inference protocol, /metrics, /docs)."""
    import uvicorn

    from shipyard.core.logs import configure_logging

    config = settings(ctx)
    os.environ["SHIPYARD_WORKERS"] = str(workers)
    os.environ["SHIPYARD_LOG_LEVEL"] = log_level
    if workers > 1:
        # every worker writes its metrics here and /metrics sums them; stale files would add
        # the counts of a previous run, so the folder starts empty
        metrics_dir = (config.home / "run" / f"metrics-{port}").resolve()
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    configure_logging(config.log_format, log_level)
    uvicorn.run(
        "shipyard.app:factory",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        log_config=None,
        access_log=False,
    )

"""`shipyard server`: the prediction server under uvicorn."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
from typing import Any

import typer

from shipyard.cli._common import settings

log = logging.getLogger("shipyard.server")


def server(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", help="interface to bind"),
    port: int = typer.Option(8000, help="port to listen on"),
    workers: int = typer.Option(
        1, min=1, help="worker processes, each with its own socket on Linux (one per core)"
    ),
    log_level: str = typer.Option("info", help="log level"),
    grpc_port: int | None = typer.Option(
        None,
        "--grpc-port",
        min=1,
        max=65535,
        help="also serve the V2 inference protocol over gRPC on this port (shipyard[grpc])",
    ),
) -> None:
    """Serve predictions over HTTP (/v1, the V2 inference protocol, /metrics, /docs), and over
    gRPC with --grpc-port."""
    import uvicorn

    from shipyard.core.logs import configure_logging

    config = settings(ctx)
    os.environ["SHIPYARD_WORKERS"] = str(workers)
    if grpc_port is not None:
        os.environ["SHIPYARD_GRPC_PORT"] = str(grpc_port)
        os.environ["SHIPYARD_GRPC_HOST"] = host
    os.environ["SHIPYARD_LOG_LEVEL"] = log_level
    # With a core to spare, a helper process per worker turns the log spool into Parquet off
    # the request path's GIL (measured, 1 worker on 2 cores: +7-11% single-record and +30-44%
    # 100-record throughput, 100-record p99 200 -> 66 ms). With every core serving, the
    # helpers only add processes and memory (2 workers on 2 cores: -22% single-record).
    spare_core = workers < (os.cpu_count() or 1)
    os.environ.setdefault("SHIPYARD_LOG_FLUSH_IN", "process" if spare_core else "thread")
    if workers > 1:
        # every worker writes its metrics here and /metrics sums them; stale files would add
        # the counts of a previous run, so the folder starts empty
        metrics_dir = (config.home / "run" / f"metrics-{port}").resolve()
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    configure_logging(config.log_format, log_level)
    options: dict[str, Any] = {
        "factory": True,
        "host": host,
        "port": port,
        "workers": workers,
        "log_level": log_level,
        "log_config": None,
        "access_log": False,
    }
    if workers > 1 and REUSE_PORT:
        serve_workers(uvicorn.Config("shipyard.app:factory", **options))
    else:
        uvicorn.run("shipyard.app:factory", **options)


# -- several workers, one listening socket each ---------------------------------------------
#
# uvicorn's workers share one listening socket, and asyncio accepts every waiting connection
# in one go: the worker that wakes first takes them all. With a few keep-alive clients (a load
# balancer's pool, 16 benchmark connections) one worker can end up with every connection and
# the other cores idle (seen: 2 workers, 16 clients, 1.04 cores busy). With SO_REUSEPORT each
# worker listens on a socket of its own and the kernel spreads new connections over them.

REUSE_PORT = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def _reuseport_socket(
    family: int, address: tuple[Any, ...], kind: type[socket.socket] = socket.socket
) -> socket.socket:
    sock = kind(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


class WorkerSocket(socket.socket):
    """Bound in the supervisor to hold the port; each worker that unpickles it binds its own.

    The supervisor's socket never listens, so the kernel gives connections only to the
    workers' sockets (bound to the same address with SO_REUSEPORT), spread over them.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        return _reuseport_socket, (self.family, self.getsockname())


def reserve(host: str, port: int) -> socket.socket:
    """The supervisor's socket: fails at once, naming the address, when the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return _reuseport_socket(family, (host, port), WorkerSocket)
    except OSError as error:
        raise SystemExit(f"cannot listen on {host}:{port}: {error.strerror}") from None


def serve_workers(config: Any) -> None:
    """uvicorn's supervisor (restarts, health checks, signals) over per-worker sockets."""
    from uvicorn.supervisors import Multiprocess

    sock = reserve(config.host, config.port)
    # each worker leaves (draining, as on SIGTERM) if this supervisor dies, even by kill -9:
    # otherwise orphaned workers would keep serving on the port beside a restarted server
    os.environ["SHIPYARD_SUPERVISOR_PID"] = str(os.getpid())
    host, port = sock.getsockname()[:2]
    log.info(
        "listening on http://%s:%d with %d workers (one socket each)",
        host if sock.family == socket.AF_INET else f"[{host}]", port, config.workers,
    )  # fmt: skip
    try:
        Multiprocess(config, sockets=[sock]).run()
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()

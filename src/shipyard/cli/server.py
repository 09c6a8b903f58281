"""`shipyard server`: the prediction server under uvicorn."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
from enum import StrEnum
from typing import Any

import typer

from shipyard.cli._common import settings
from shipyard.core.errors import AddressInUse, InvalidInput

log = logging.getLogger("shipyard.server")


class LogFormat(StrEnum):
    auto = "auto"
    rich = "rich"
    json = "json"
    text = "text"


def server(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", help="interface to bind"),
    port: int = typer.Option(8000, help="port to listen on"),
    workers: int = typer.Option(
        1, min=1, help="worker processes, each with its own socket on Linux (one per core)"
    ),
    log_level: str = typer.Option("info", help="log level"),
    log_format: LogFormat | None = typer.Option(
        None,
        "--log-format",
        help="rich (for a terminal), json (one object per line, for a log collector) or text; "
        "default $SHIPYARD_LOG_FORMAT or auto: rich on a terminal, JSON otherwise",
    ),
    grpc_port: int | None = typer.Option(
        None,
        "--grpc-port",
        min=1,
        max=65535,
        help="also serve the V2 inference protocol over gRPC on this port (shipyard[grpc])",
    ),
) -> None:
    """Serve predictions over HTTP (/v1, the V2 inference protocol, /metrics, /docs), and over
    gRPC with --grpc-port.

    Exits 11 at once, before loading any model, when the port (or the gRPC port) is taken.
    """
    import uvicorn

    from shipyard.core.logs import configure_logging

    config = settings(ctx)
    if grpc_port is not None and grpc_port == port:
        raise InvalidInput(f"--grpc-port {grpc_port} is --port too; give gRPC a port of its own")
    # the ports are checked (one worker's bound) before anything loads: a taken port must not
    # cost a minute of model loading, then a traceback
    sock = listening_socket(host, port) if workers == 1 else None
    if sock is None:
        ensure_free(host, port)
    if grpc_port is not None:
        ensure_free(host, grpc_port)
    fmt = log_format.value if log_format is not None else config.log_format
    os.environ["SHIPYARD_LOG_FORMAT"] = fmt  # the workers log the same way
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
    configure_logging(fmt, log_level)
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
    elif sock is not None:
        log.info("listening on http://%s", _shown(sock))
        served = uvicorn.Server(uvicorn.Config("shipyard.app:factory", **options))
        try:
            served.run(sockets=[sock])
        except KeyboardInterrupt:
            pass
        finally:
            sock.close()
        if not served.started:
            sys.exit(STARTUP_FAILED)
    else:
        uvicorn.run("shipyard.app:factory", **options)


STARTUP_FAILED = 3  # uvicorn's own exit code when the app does not start


def _shown(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}" if sock.family == socket.AF_INET else f"[{host}]:{port}"


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _taken(host: str, port: int, error: OSError) -> AddressInUse:
    return AddressInUse(
        f"cannot listen on {host}:{port}: {error.strerror or error}; another process holds it "
        "(find it with `ss -ltnp`) or choose another port"
    )


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to host:port for the one worker, without SO_REUSEPORT: no other process
    can bind the port beside it."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise _taken(host, port, error) from None
    return sock


def ensure_free(host: str, port: int) -> None:
    """Refuse host:port when anything is bound to it, even with SO_REUSEPORT.

    A bind without SO_REUSEPORT fails beside any socket on the port, so a second server
    started on the port of a running one (whose workers use SO_REUSEPORT) is refused instead
    of quietly sharing its traffic.
    """
    listening_socket(host, port).close()


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
    try:
        return _reuseport_socket(_family(host), (host, port), WorkerSocket)
    except OSError as error:
        raise _taken(host, port, error) from None


def serve_workers(config: Any) -> None:
    """uvicorn's supervisor (restarts, health checks, signals) over per-worker sockets."""
    from uvicorn.supervisors import Multiprocess

    sock = reserve(config.host, config.port)
    # each worker leaves (draining, as on SIGTERM) if this supervisor dies, even by kill -9:
    # otherwise orphaned workers would keep serving on the port beside a restarted server
    os.environ["SHIPYARD_SUPERVISOR_PID"] = str(os.getpid())
    log.info(
        "listening on http://%s with %d workers (one socket each)", _shown(sock), config.workers
    )
    try:
        Multiprocess(config, sockets=[sock]).run()
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()

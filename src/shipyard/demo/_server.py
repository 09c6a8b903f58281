"""Running the demo's prediction server as a real process on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

__all__ = ["running_server", "serve"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def embedded_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment with only the demo's home: no database or artifact root from outside."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    return {**env, "SHIPYARD_HOME": str(home), **extra}


@contextmanager
def running_server(home: Path, *, timeout: float = 60.0, **env: str) -> Iterator[str]:
    """Start `shipyard server` on a free port, wait until ready, yield its URL, stop it."""
    port = _free_port()
    log = home / "server.log"
    with log.open("ab") as sink:  # the child keeps its own handle
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "shipyard",
                "server",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            env=embedded_env(home, **env),
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"the server exited during start-up:\n{log.read_text()[-4000:]}")
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server was not ready within {timeout:.0f} s; see {log}")
            time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def serve(home: Path, port: int) -> None:
    """Replace this process with `shipyard server` on the demo's state (until Ctrl-C)."""
    env = embedded_env(home, SHIPYARD_CONFIG=str(home / "shipyard.yaml"))
    command = [sys.executable, "-m", "shipyard", "server", "--port", str(port)]
    os.execvpe(command[0], command, env)

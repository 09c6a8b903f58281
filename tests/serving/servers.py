"""Real `shipyard server` processes on loopback, for tests that need real HTTP and real crashes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx

from shipyard.core import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """`python -m shipyard server` over `settings`' home and database, stopped on exit.

    Args:
        settings: whose home and database the server uses.
        workers: worker processes.
        env: extra SHIPYARD_* variables (e.g. {"SHIPYARD_REDIS_URL": ...}).
        log_name: file under the home that receives the server's stderr.
        args: more `shipyard server` options (e.g. `--log-format`, `--grpc-port`).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        workers: int = 1,
        env: dict[str, str] | None = None,
        log_name: str = "server.log",
        args: tuple[str, ...] = (),
    ) -> None:
        self.settings = settings
        self.workers = workers
        self.env = env or {}
        self.args = args
        self.log = Path(settings.home) / log_name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> ServerProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
        env.update(
            SHIPYARD_HOME=str(self.settings.home),
            SHIPYARD_DATABASE_URL=self.settings.resolved_database_url,
            SHIPYARD_AUTO_MIGRATE="true",
            **self.env,
        )
        command = [
            sys.executable,
            "-m",
            "shipyard",
            "server",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            *self.args,
        ]
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                command, env=env, stdout=subprocess.DEVNULL, stderr=sink, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"the server exited during start-up:\n{self.log.read_text()[-3000:]}"
                )
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the server was not ready in {timeout} s:\n{self.log.read_text()[-3000:]}"
                )
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL the whole server (all workers): nothing gets to clean up."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

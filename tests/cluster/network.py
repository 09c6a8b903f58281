"""Several hosts on one machine: network namespaces on a bridge, HAProxy in front.

    lab = Lab.create()                       # a bridge 10.77.N.1/24 in the root namespace
    replica = lab.host("r1")                 # a namespace with 10.77.N.11 on the bridge
    replica.spawn([...], env)                # a process that lives in it
    lab.balancer(port, [replica], 8000, forwards=[5432])   # HAProxy on 10.77.N.1:port

The machine's PostgreSQL, Redis and the tests' S3 (SeaweedFS) listen on 127.0.0.1 only;
HAProxy forwards the same ports on the bridge address to them (`forwards`), so every host
reaches the same database, Redis and bucket the way it would across a real network.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Host", "Lab", "netns_unavailable"]

HAPROXY = shutil.which("haproxy")


def netns_unavailable() -> str | None:
    """Why namespaced hosts cannot be made here (None when they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    if HAPROXY is None:
        return "HAProxy is not installed (apt-get install haproxy)"
    probe = f"syprobe{os.getpid() % 100000}"
    made = _run("ip", "netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` is not permitted here: {made.stderr.strip()}"
    _run("ip", "netns", "del", probe, check=False)
    return None


def _run(*command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()}")
    return done


@dataclass
class Process:
    """A process started in a host; its whole process group is signalled."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 20) -> None:
        stop_all([self], timeout)

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


@dataclass
class Host:
    """A network namespace with one address on the lab's bridge."""

    name: str
    namespace: str
    address: str
    lab: Lab
    processes: list[Process] = field(default_factory=list)

    def spawn(self, name: str, command: Sequence[str], env: dict[str, str], log: Path) -> Process:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as sink:
            popen = subprocess.Popen(
                ["ip", "netns", "exec", self.namespace, *command],
                env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        process = Process(f"{self.name}/{name}", popen, log)
        self.processes.append(process)
        return process

    def run(
        self, command: Sequence[str], env: dict[str, str], timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """A command run to its end in this host (e.g. the CLI on an operator's machine)."""
        return subprocess.run(
            ["ip", "netns", "exec", self.namespace, *command],
            env=env, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip


@dataclass
class Lab:
    """A bridge in the root namespace and the hosts on it, all removed by `close()`."""

    subnet: int
    bridge: str
    folder: Path
    hosts: list[Host] = field(default_factory=list)
    haproxy: subprocess.Popen[bytes] | None = None

    @property
    def gateway(self) -> str:
        return f"10.77.{self.subnet}.1"

    @property
    def postgres_port(self) -> int:
        return 5432

    @classmethod
    def create(cls, folder: Path) -> Lab:
        subnet = 100 + os.getpid() % 150
        bridge = f"sybr{os.getpid() % 100000}"
        _run("ip", "link", "add", bridge, "type", "bridge")
        lab = cls(subnet, bridge, folder)
        try:
            _run("ip", "addr", "add", f"{lab.gateway}/24", "dev", bridge)
            _run("ip", "link", "set", bridge, "up")
        except BaseException:
            lab.close()
            raise
        return lab

    def host(self, name: str) -> Host:
        index = len(self.hosts) + 11
        namespace = f"sy{os.getpid() % 100000}{name}"[:15]
        outside, inside = f"{namespace}o"[:15], f"{namespace}i"[:15]
        address = f"10.77.{self.subnet}.{index}"
        _run("ip", "netns", "add", namespace)
        host = Host(name, namespace, address, self)
        self.hosts.append(host)  # from here on, close() removes it
        _run("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
        _run("ip", "link", "set", outside, "master", self.bridge)
        _run("ip", "link", "set", outside, "up")
        _run("ip", "link", "set", inside, "netns", namespace)
        inns = ("ip", "netns", "exec", namespace)
        _run(*inns, "ip", "addr", "add", f"{address}/24", "dev", inside)
        _run(*inns, "ip", "link", "set", inside, "up")
        _run(*inns, "ip", "link", "set", "lo", "up")
        _run(*inns, "ip", "route", "add", "default", "via", self.gateway)
        return host

    def balancer(
        self,
        port: int,
        replicas: Sequence[Host],
        replica_port: int,
        *,
        forwards: Sequence[int] = (),
        check_ms: int = 300,
    ) -> str:
        """HAProxy on the gateway: round-robin over the replicas that answer their readiness
        check, plus a TCP forward of each port in `forwards` to the same port on 127.0.0.1 (the
        machine's PostgreSQL, Redis, S3). Returns the balancer's URL."""
        assert HAPROXY is not None
        servers = "\n".join(f"  server {h.name} {h.address}:{replica_port} check" for h in replicas)
        tcp = "".join(
            f"listen forward{forward}\n  mode tcp\n  bind {self.gateway}:{forward}\n"
            f"  timeout client 1h\n  timeout server 1h\n  server local 127.0.0.1:{forward}\n"
            for forward in forwards
        )
        config = self.folder / "haproxy.cfg"
        config.write_text(
            f"""global
  maxconn 4096
defaults
  mode http
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  retries 2
  option redispatch
  # a request that reached a replica killed before it answered (nothing came back) goes to
  # another: a prediction is safe to repeat, and its unanswered copy is only ever logged
  retry-on conn-failure empty-response
frontend api
  bind {self.gateway}:{port}
  default_backend replicas
backend replicas
  balance roundrobin
  option httpchk GET /v2/health/ready
  http-check expect status 200
  default-server inter {check_ms}ms fastinter {check_ms}ms fall 2 rise 2
{servers}
{tcp}"""
        )
        log = (self.folder / "haproxy.log").open("ab")
        try:
            self.haproxy = subprocess.Popen(
                [HAPROXY, "-db", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        finally:
            log.close()
        wait_for_port(self.gateway, port, timeout=15)
        return f"http://{self.gateway}:{port}"

    def close(self) -> None:
        """Stop every process, remove every namespace and the bridge (their veths go with them)."""
        # all at once: each replica drains for its drain time, so one by one they add up
        stop_all([process for host in self.hosts for process in host.processes], timeout=10)
        if self.haproxy is not None and self.haproxy.poll() is None:
            self.haproxy.terminate()
            self.haproxy.wait(timeout=10)
        for host in self.hosts:
            _run("ip", "netns", "del", host.namespace, check=False)
        _run("ip", "link", "del", self.bridge, check=False)


def stop_all(processes: list[Process], timeout: float) -> None:
    """SIGTERM every process still alive, then wait for them together; what is still alive
    at `timeout` is killed."""
    running = [p for p in processes if p.alive()]
    for process in running:
        process.signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in running:
        try:
            process.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.signal(signal.SIGKILL)
            process.popen.wait(timeout=10)


def wait_for_port(host: str, port: int, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"nothing listened on {host}:{port} within {timeout} s"
                ) from None
            time.sleep(0.05)

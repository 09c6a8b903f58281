"""`shipyard server` as a real process on loopback: several workers, metrics summed across them."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from tests.conftest import records
from tests.serving.conftest import make_key
from tests.serving.servers import ServerProcess

from shipyard.cli.server import REUSE_PORT
from shipyard.core import Settings

pytestmark = pytest.mark.slow


def test_two_worker_server_answers_v1_and_v2_over_tcp(
    served_settings: Settings, admin_token: str, fraud_model: Any, fraud_sample: pd.DataFrame
) -> None:
    rows = fraud_sample.iloc[:20]
    headers = {"Authorization": f"Bearer {admin_token}"}
    with (
        ServerProcess(served_settings, workers=2) as server,
        httpx.Client(base_url=server.url, timeout=10, headers=headers) as client,
    ):
        answers = [
            client.post("/v1/models/fraud-detector/predict", json={"instances": [record]})
            for record in records(rows)
        ]
        assert all(a.status_code == 200 for a in answers)
        scores = [a.json()["predictions"][0]["score"] for a in answers]
        assert scores == pytest.approx(fraud_model.predict_proba(rows)[:, 1].tolist(), abs=1e-5)
        assert client.get("/v2/models/fraud-detector/ready").json()["ready"] is True
        bad = client.post(
            "/v1/models/fraud-detector/predict",
            content=b"{",
            headers={"content-type": "application/json"},
        )
        assert bad.status_code == 400
        assert "not valid JSON" in bad.json()["error"]["message"]
        # each worker counted its own requests; /metrics adds them up, whichever worker answers
        metrics = client.get("/metrics").text
        line = next(
            line
            for line in metrics.splitlines()
            if line.startswith("shipyard_predictions_total{") and 'status="200"' in line
        )
        assert float(line.rsplit(" ", 1)[1]) == 20


def _server_sockets(port: int) -> dict[str, list[str]]:
    """TCP states ('0A' listening, '01' established) of each socket with local `port`, by pid."""
    states = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    states[f"socket:[{fields[9]}]"] = fields[3]
    owners: dict[str, list[str]] = {}
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            links = [os.readlink(fd) for fd in fd_dir.iterdir()]
        except OSError:  # a process that ended, or one that is not ours
            continue
        found = [states[link] for link in links if link in states]
        if found:
            owners[fd_dir.parent.name] = found
    return owners


@pytest.mark.skipif(not REUSE_PORT, reason="per-worker sockets need Linux's SO_REUSEPORT")
def test_keep_alive_connections_are_spread_over_the_workers(served_settings: Settings) -> None:
    # with one shared socket the first worker to wake accepts every waiting connection; with a
    # socket per worker the kernel spreads them (all 16 on one worker: p = 2 / 2**16)
    with ServerProcess(served_settings, workers=2) as server:
        deadline = time.monotonic() + 30
        while sum(s.count("0A") for s in _server_sockets(server.port).values()) < 2:
            assert time.monotonic() < deadline, "both workers should listen within 30 s"
            time.sleep(0.1)
        # connect all 16 before any is accepted, as a client pool does at start
        clients = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(16)]
        try:
            for client in clients:
                client.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: test\r\n\r\n")
            assert all(client.recv(1024).startswith(b"HTTP/1.1 200") for client in clients)
            held = {
                pid: states.count("01")
                for pid, states in _server_sockets(server.port).items()
                if "01" in states
            }
        finally:
            for client in clients:
                client.close()
    assert sum(held.values()) == 16
    assert len(held) == 2, f"connections per worker process: {held}"


def test_a_taken_port_is_refused_at_once_naming_the_address(served_settings: Settings) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = ServerProcess(served_settings, workers=2)
        server.port = port
        with pytest.raises(AssertionError, match=f"cannot listen on 127.0.0.1:{port}"):
            server.start(timeout=30)


@pytest.mark.skipif(not REUSE_PORT, reason="per-worker sockets need Linux's SO_REUSEPORT")
def test_a_killed_worker_is_replaced_and_listens_on_its_own_socket_again(
    served_settings: Settings,
) -> None:
    def listeners(port: int) -> set[str]:
        return {pid for pid, states in _server_sockets(port).items() if "0A" in states}

    with ServerProcess(served_settings, workers=2) as server:
        deadline = time.monotonic() + 30
        while len(first := listeners(server.port)) < 2:
            assert time.monotonic() < deadline, "both workers should listen within 30 s"
            time.sleep(0.1)
        victim = sorted(first)[0]
        os.kill(int(victim), signal.SIGKILL)
        # the other worker keeps answering while the supervisor starts a new one
        assert httpx.get(f"{server.url}/v2/health/live", timeout=10).status_code == 200
        deadline = time.monotonic() + 60
        while len(now := listeners(server.port)) < 2 or victim in now:
            assert time.monotonic() < deadline, f"no replacement worker listening: {now}"
            time.sleep(0.2)
        answers = [httpx.get(f"{server.url}/v2/health/ready", timeout=10) for _ in range(20)]
        assert {a.status_code for a in answers} == {200}


def _descendants(pid: int) -> set[int]:
    """Every process below `pid` (children, their children, ...), from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def test_kill_9_of_the_server_takes_its_log_flush_helper_and_resource_tracker_along(
    served_sqlite: Settings, fraud_sample: pd.DataFrame
) -> None:
    env = {"SHIPYARD_LOG_FLUSH_IN": "process", "SHIPYARD_LOG_FLUSH_SECONDS": "0.2"}
    headers = {"Authorization": f"Bearer {make_key(served_sqlite, 'predict')}"}
    body = {"instances": records(fraud_sample.iloc[:2])}
    with ServerProcess(served_sqlite, env=env) as server:
        assert server.process is not None
        pid = server.process.pid
        with httpx.Client(base_url=server.url, timeout=10, headers=headers) as client:
            deadline = time.monotonic() + 60
            while len(helpers := _descendants(pid)) < 2:  # the flush helper and the tracker
                assert (
                    client.post("/v1/models/fraud-detector/predict", json=body).status_code == 200
                )
                assert time.monotonic() < deadline, f"no helper process appeared: {helpers}"
                time.sleep(0.2)
        os.kill(pid, signal.SIGKILL)
        server.process.wait()
        deadline = time.monotonic() + 15
        while left := _alive(helpers):
            assert time.monotonic() < deadline, f"still running after the server died: {left}"
            time.sleep(0.1)


def test_kill_9_of_the_supervisor_stops_its_workers(served_sqlite: Settings) -> None:
    with ServerProcess(served_sqlite, workers=2) as server:
        assert server.process is not None
        supervisor = server.process.pid
        deadline = time.monotonic() + 30
        while len(workers := _descendants(supervisor)) < 2:
            assert time.monotonic() < deadline, "both workers should start"
            time.sleep(0.1)
        os.kill(supervisor, signal.SIGKILL)
        server.process.wait()
        deadline = time.monotonic() + 30
        while left := _alive(workers):
            assert time.monotonic() < deadline, f"workers still running: {left}"
            time.sleep(0.1)
        assert server.port not in _listening_ports()


def _listening_ports() -> set[int]:
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_two_workers_with_a_fast_flush_answer_thousands_of_requests_without_an_error(
    served_sqlite: Settings, fraud_sample: pd.DataFrame
) -> None:
    """The spool race: a worker's replay of orphans took the spool file its sibling had just
    created (4 in ~8,000 requests answered 500, and the next request on the connection was
    reset). Now: 4 clients x 1,000 requests, flushing every 50 ms, and not one error."""
    env = {"SHIPYARD_LOG_FLUSH_SECONDS": "0.05"}
    headers = {"Authorization": f"Bearer {make_key(served_sqlite, 'predict')}"}
    body = {"instances": records(fraud_sample.iloc[:1])}
    failures: list[str] = []
    answered = 0
    lock = threading.Lock()
    with ServerProcess(served_sqlite, workers=2, env=env) as server:

        def client_thread() -> None:
            nonlocal answered
            with httpx.Client(base_url=server.url, timeout=30, headers=headers) as client:
                for _ in range(1_000):
                    try:
                        status = client.post(
                            "/v1/models/fraud-detector/predict", json=body
                        ).status_code
                    except httpx.HTTPError as error:
                        failures.append(f"{type(error).__name__}: {error}")
                        continue
                    with lock:
                        if status == 200:
                            answered += 1
                        else:
                            failures.append(str(status))

        threads = [threading.Thread(target=client_thread) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        log = server.log.read_text()
    assert failures == []
    assert answered == 4_000
    assert "cannot lock new spool file" not in log
    assert "this is a bug in shipyard" not in log

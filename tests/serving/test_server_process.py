"""`shipyard server` as a real process on loopback: several workers, metrics summed across them."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from tests.conftest import records
from tests.serving.conftest import make_key
from tests.serving.servers import ServerProcess, free_port

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


def _listening(port: int) -> list[str]:
    """The sockets listening on local `port`, as the kernel lists them (`socket:[INODE]`)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                    found.append(f"socket:[{fields[9]}]")
    return found


def _socket_links(pid: int) -> set[str]:
    """What the file descriptors of `pid` point at (`socket:[INODE]` for a socket)."""
    folder = Path(f"/proc/{pid}/fd")
    return {os.readlink(fd) for fd in folder.iterdir()}


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


def _shipyard_server(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    env.update(
        SHIPYARD_HOME=str(settings.home), SHIPYARD_DATABASE_URL=settings.resolved_database_url
    )
    return subprocess.run(
        [sys.executable, "-m", "shipyard", "server", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_a_taken_port_is_refused_at_once_before_loading_models(
    served_sqlite: Settings, workers: int
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refused = _shipyard_server(
            served_sqlite, "--port", str(port), "--workers", str(workers), "--log-format", "json"
        )
    assert refused.returncode == 11, refused.stderr
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert "loaded" not in refused.stderr  # refused before any model was opened


def test_a_second_server_on_a_running_servers_ports_is_refused(served_sqlite: Settings) -> None:
    """The workers' sockets use SO_REUSEPORT; a second server must not quietly share them."""
    pytest.importorskip("grpc")
    grpc_port = free_port()
    with ServerProcess(served_sqlite, workers=2, args=("--grpc-port", str(grpc_port))) as first:
        again = _shipyard_server(served_sqlite, "--port", str(first.port), "--workers", "2")
        assert again.returncode == 11, again.stderr
        assert f"cannot listen on 127.0.0.1:{first.port}" in again.stderr
        other = free_port()
        grpc_taken = _shipyard_server(
            served_sqlite, "--port", str(other), "--grpc-port", str(grpc_port)
        )
        assert grpc_taken.returncode == 11, grpc_taken.stderr
        assert f"cannot listen on 127.0.0.1:{grpc_port}" in grpc_taken.stderr
        same = _shipyard_server(served_sqlite, "--port", str(other), "--grpc-port", str(other))
        assert same.returncode == 2
        assert "give gRPC a port of its own" in same.stderr
        assert httpx.get(f"{first.url}/v2/health/ready").status_code == 200


def _logged_lines(server: ServerProcess) -> list[str]:
    server.stop()
    return [line for line in server.log.read_text().splitlines() if line.strip()]


def test_server_logs_are_json_lines_for_collectors_and_rich_for_people(
    served_sqlite: Settings, tmp_path: Path
) -> None:
    with ServerProcess(served_sqlite, log_name="json.log", args=("--log-format", "json")) as s:
        pass
    entries = [json.loads(line) for line in _logged_lines(s)]  # every line is one JSON object
    assert any(e["logger"] == "shipyard.app" and "serving" in e["msg"] for e in entries)
    assert all({"ts", "level", "logger", "msg"} <= e.keys() for e in entries)
    assert not any("color_message" in e for e in entries)
    with ServerProcess(served_sqlite, log_name="rich.log", args=("--log-format", "rich")) as s:
        pass
    lines = _logged_lines(s)
    assert any("INFO" in line and "shipyard.app: serving fraud-detector" in line for line in lines)
    assert not any(line.lstrip().startswith("{") for line in lines)
    # unset (auto): stderr is a file here, so JSON; on a terminal, Rich
    with ServerProcess(served_sqlite, log_name="auto.log") as s:
        pass
    assert all(line.startswith("{") for line in _logged_lines(s))


def test_auto_logs_are_rich_on_a_terminal(served_sqlite: Settings) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    env.update(
        SHIPYARD_HOME=str(served_sqlite.home),
        SHIPYARD_DATABASE_URL=served_sqlite.resolved_database_url,
        COLUMNS="200",
    )
    controller, terminal = pty.openpty()
    server = subprocess.Popen(
        [sys.executable, "-m", "shipyard", "server", "--port", str(port)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=terminal,
        start_new_session=True,
    )
    os.close(terminal)
    seen = b""
    try:
        deadline = time.monotonic() + 60
        while b"startup complete" not in seen:
            assert time.monotonic() < deadline, seen.decode(errors="replace")
            ready, _, _ = select.select([controller], [], [], 1.0)
            if ready:
                seen += os.read(controller, 65536)
    finally:
        server.terminate()
        server.wait(timeout=20)
        os.close(controller)
    text = seen.decode(errors="replace")
    assert "shipyard.app: serving fraud-detector" in text
    assert '"logger"' not in text
    assert "\x1b[" in text  # Rich colours a terminal


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
        sockets = _socket_links(int(victim)) & set(_listening(server.port))
        assert len(sockets) == 1, sockets
        os.kill(int(victim), signal.SIGKILL)
        # until the kernel has closed the killed worker's listening socket, a connection can
        # still be queued on it and is reset when it closes (SO_REUSEPORT hashes connections
        # over the workers' sockets): wait for that, not a fixed time. The kernel's own table
        # says so; the worker's /proc/PID/fd empties before the socket is closed.
        deadline = time.monotonic() + 10
        while sockets & set(_listening(server.port)):
            assert time.monotonic() < deadline, "the killed worker's socket should close"
            time.sleep(0.05)
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


def test_a_server_that_cannot_start_says_why_without_a_traceback(tmp_path: Path) -> None:
    """The metadata database does not answer: the log says what is wrong and what to do, once,
    and the server exits with uvicorn's start-up failure code."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    env.update(
        SHIPYARD_HOME=str(tmp_path / "home"),
        SHIPYARD_DATABASE_URL=f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nowhere",
    )
    done = subprocess.run(
        [sys.executable, "-m", "shipyard", "server", "--port", str(free_port()),
         "--log-format", "json"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr[-2000:]
    errors = [json.loads(line) for line in done.stderr.splitlines() if '"level": "error"' in line]
    assert errors[0]["msg"].startswith("cannot start: cannot reach the metadata database at ")
    assert "check SHIPYARD_DATABASE_URL" in errors[0]["msg"]
    assert "Traceback" not in done.stderr

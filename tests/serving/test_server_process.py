"""`shipyard server` as a real process on loopback, with several workers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pandas as pd
import pytest
from tests.conftest import records

from shipyard.core import Settings

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server(served_settings: Settings) -> Iterator[str]:
    port = _free_port()
    env = {
        **os.environ,
        "SHIPYARD_HOME": str(served_settings.home),
        "SHIPYARD_DATABASE_URL": served_settings.resolved_database_url,
    }
    log = served_settings.home / "server.log"
    command = [sys.executable, "-m", "shipyard", "server", "--port", str(port), "--workers", "2"]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [*command, "--log-level", "warning"], env=env, stdout=subprocess.DEVNULL, stderr=sink
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server not ready within 60 s"
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_two_worker_server_answers_v1_and_v2_over_tcp(
    server: str, admin_token: str, fraud_model: Any, fraud_sample: pd.DataFrame
) -> None:
    rows = fraud_sample.iloc[:20]
    headers = {"Authorization": f"Bearer {admin_token}"}
    with httpx.Client(base_url=server, timeout=10, headers=headers) as client:
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

"""The log spool's disk fills up (a real 1 MB tmpfs, filled to the last byte): predictions that
cannot be logged are refused with 503 and Retry-After (not 500 with tracebacks), readiness is
false while it lasts, the failures are counted, the log says so once, and once space returns
the server serves again and every answered prediction is in the log."""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from tests.conftest import records
from tests.serving.conftest import make_key

from shipyard.app import create_app
from shipyard.core import Settings
from shipyard.logstore import LogReader
from shipyard.registry import Registry


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "small-disk"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _fill(folder: Path) -> Path:
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    assert os.statvfs(folder).f_bavail == 0
    return filler


def _metric(client: TestClient, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def _wait(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {seconds} s"
        time.sleep(0.05)


def test_a_full_spool_disk_is_503_and_not_ready_until_space_returns(
    sqlite_settings: Settings,
    small_disk: Path,
    fraud_model: Any,
    fraud_sample: pd.DataFrame,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = sqlite_settings.model_copy(
        update={"spool_dir": small_disk, "log_flush_seconds": 0.2, "log_fsync_seconds": 0.0}
    )
    with Registry.from_settings(settings) as registry:
        registry.register(
            fraud_model, name="fraud-detector", sample=fraud_sample, aliases=["production"]
        )
    token = make_key(settings, "predict")
    reader = make_key(settings, "read")
    body = {"instances": records(fraud_sample.iloc[:3])}
    headers = {"Authorization": f"Bearer {token}"}
    with (
        caplog.at_level(logging.WARNING, logger="shipyard"),
        TestClient(create_app(settings), raise_server_exceptions=False) as client,
    ):

        def predict() -> Any:
            return client.post("/v1/models/fraud-detector/predict", json=body, headers=headers)

        answered: set[str] = set(predict().json()["prediction_ids"])
        filler = _fill(small_disk)
        # what still fits in the spool file's last page is taken; then the disk is full
        for _ in range(100):
            answer = predict()
            if answer.status_code != 200:
                break
            answered |= set(answer.json()["prediction_ids"])
        refused = [answer] + [predict() for _ in range(4)]
        assert {r.status_code for r in refused} == {503}
        assert refused[0].json()["error"]["type"] == "LogUnavailable"
        assert "nothing unlogged is ever answered" in refused[0].json()["error"]["message"]
        assert refused[0].headers["retry-after"] == "5"
        assert client.get("/v2/health/ready").json() == {"ready": False}
        why = client.get("/v1/serving", headers={"Authorization": f"Bearer {reader}"}).json()
        assert any("cannot be written" in p for p in why["problems"])
        assert not any(str(small_disk) in p for p in why["problems"])  # no paths for non-admins
        _wait(
            lambda: _metric(client, "shipyard_log_write_failures_total") >= 5,
            5,
            "the failures counted in /metrics",
        )
        assert caplog.text.count("cannot write the log spool") == 1  # once per episode
        filler.unlink()
        _wait(lambda: client.get("/v2/health/ready").status_code == 200, 10, "ready again")
        after = predict()
        assert after.status_code == 200
        answered |= set(after.json()["prediction_ids"])
        client.app.state.services.writer.flush()  # type: ignore[attr-defined]
        reader = LogReader(client.app.state.services.registry.artifacts)  # type: ignore[attr-defined]
        logged = set(reader.predictions("fraud-detector").column("prediction_id").to_pylist())
    assert logged == answered  # all answered, none of the refused, no torn entry in between
    assert "this is a bug in shipyard" not in caplog.text
    assert "can be written again" in caplog.text

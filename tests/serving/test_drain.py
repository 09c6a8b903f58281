"""A server told to stop (SIGTERM) with a drain period leaves rotation first: readiness answers
503 while requests are still answered, then it stops; a second SIGTERM does not wait."""

from __future__ import annotations

import signal
import time

import httpx
import pandas as pd
import pytest
from tests.conftest import records
from tests.serving.conftest import make_key
from tests.serving.servers import ServerProcess

from shipyard.core import Settings

pytestmark = pytest.mark.slow

DRAIN = 2.0


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_turns_readiness_false_then_stops_after_the_drain(
    served_sqlite: Settings, fraud_sample: pd.DataFrame, workers: int
) -> None:
    token = make_key(served_sqlite, "predict", name="drain")
    server = ServerProcess(
        served_sqlite, workers=workers, env={"SHIPYARD_DRAIN_SECONDS": str(DRAIN)}
    ).start()
    record = records(fraud_sample.iloc[:1])[0]
    try:
        assert server.process is not None
        with httpx.Client(base_url=server.url, timeout=10) as client:
            assert client.get("/v2/health/ready").status_code == 200
            told = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            deadline = told + DRAIN
            while client.get("/v2/health/ready").status_code != 503:
                assert time.monotonic() < deadline, "readiness never turned false"
            answered = client.post(
                "/v1/models/fraud-detector/predict",
                json={"instances": [record]},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert answered.status_code == 200, answered.text
            assert time.monotonic() - told < DRAIN
        server.process.wait(timeout=DRAIN + 30)
        assert time.monotonic() - told >= DRAIN
    finally:
        server.stop()


def test_a_second_sigterm_stops_at_once(served_sqlite: Settings) -> None:
    server = ServerProcess(served_sqlite, env={"SHIPYARD_DRAIN_SECONDS": "60"}).start()
    try:
        assert server.process is not None
        with httpx.Client(base_url=server.url, timeout=10) as client:
            told = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            while client.get("/v2/health/ready").status_code != 503:
                assert time.monotonic() - told < 10, "readiness never turned false"
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=30)
        assert time.monotonic() - told < 30  # not the 60 s drain
    finally:
        server.stop()

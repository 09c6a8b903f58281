"""What survives: predictions answered before a `kill -9`, rate limits shared by two replicas
through Redis, serving on when Redis is gone, and logs that carry request ids."""

from __future__ import annotations

import json
import os
import time

import httpx
import pandas as pd
import pytest
from tests.conftest import records
from tests.serving.conftest import make_key
from tests.serving.servers import ServerProcess

from shipyard.core import Settings
from shipyard.logstore import LogReader
from shipyard.registry import Registry

pytestmark = pytest.mark.slow

REDIS_URL = os.environ.get("SHIPYARD_TEST_REDIS_URL")


def test_every_prediction_answered_before_kill_9_is_in_the_log_after_restart(
    served_settings: Settings, fraud_sample: pd.DataFrame
) -> None:
    token = make_key(served_settings, "predict")
    headers = {"Authorization": f"Bearer {token}"}
    # flushes far apart: everything answered sits only in the spool when the server dies
    env = {"SHIPYARD_LOG_FLUSH_SECONDS": "3600", "SHIPYARD_LOG_FSYNC_SECONDS": "0"}
    answered: list[str] = []
    server = ServerProcess(served_settings, workers=2, env=env).start()
    try:
        with httpx.Client(base_url=server.url, headers=headers, timeout=10) as client:
            for start in range(0, 200, 10):
                batch = records(fraud_sample.iloc[start : start + 10])
                response = client.post(
                    "/v1/models/fraud-detector/predict", json={"instances": batch}
                )
                assert response.status_code == 200
                answered += response.json()["prediction_ids"]
    finally:
        server.kill()
    with Registry.from_settings(served_settings) as registry:
        assert LogReader(registry.artifacts).predictions().num_rows == 0  # nothing was flushed

    with ServerProcess(served_settings, env={"SHIPYARD_LOG_FLUSH_SECONDS": "0.2"}) as restarted:
        with Registry.from_settings(served_settings) as registry:
            logged = LogReader(registry.artifacts).predictions("fraud-detector")
        assert sorted(logged.column("prediction_id").to_pylist()) == sorted(answered)
        # and the labels that arrive later find them
        labels = [{"prediction_id": pid, "label": 1} for pid in answered[:50]]
        result = httpx.post(
            f"{restarted.url}/v1/feedback", json=labels, headers=headers, timeout=10
        ).json()
        assert result["accepted"] == 50
        assert result["pending"] == []
        assert result["unknown"] == []


@pytest.mark.redis
def test_two_replicas_share_one_rate_limit_through_redis(
    served_settings: Settings, fraud_sample: pd.DataFrame
) -> None:
    if not REDIS_URL:
        pytest.skip("SHIPYARD_TEST_REDIS_URL is not set; Redis tests need a server")
    # 1 request/s sustained, burst 10: across both replicas, 10 calls go through at once
    token = make_key(served_settings, "predict", rate_per_second=1.0, burst=10)
    headers = {"Authorization": f"Bearer {token}"}
    body = {"instances": records(fraud_sample.iloc[:1])}
    env = {"SHIPYARD_REDIS_URL": REDIS_URL}
    with (
        ServerProcess(served_settings, env=env, log_name="a.log") as a,
        ServerProcess(served_settings, env=env, log_name="b.log") as b,
    ):
        started = time.monotonic()
        statuses = [
            httpx.post(
                f"{server.url}/v1/models/fraud-detector/predict",
                json=body,
                headers=headers,
                timeout=10,
            )
            for _ in range(15)
            for server in (a, b)
        ]
        elapsed = time.monotonic() - started
        ok = sum(r.status_code == 200 for r in statuses)
        limited = [r for r in statuses if r.status_code == 429]
        # the burst of 10, plus at most one token per second that passed meanwhile
        assert 10 <= ok <= 10 + int(elapsed) + 1
        assert len(limited) == 30 - ok
        assert {r.headers["retry-after"] for r in limited} == {"1"}
        served_by_each = [sum(r.status_code == 200 for r in statuses[i::2]) for i in (0, 1)]
        assert all(n > 0 for n in served_by_each)  # both replicas took from the same bucket
        metrics = httpx.get(f"{a.url}/metrics").text
        assert "shipyard_ratelimit_shared_up 1.0" in metrics


def _metrics_showing(url: str, line: str, timeout: float = 10.0) -> str:
    """The server's /metrics once they show `line` (the gauges update every second), or as
    they are when `timeout` runs out: a deadline to fail by, not a sleep to hope over."""
    deadline = time.monotonic() + timeout
    while True:
        metrics = httpx.get(f"{url}/metrics", timeout=5).text
        if line in metrics or time.monotonic() > deadline:
            return metrics
        time.sleep(0.05)


def test_when_redis_is_down_the_server_keeps_serving_and_says_so(
    served_settings: Settings, fraud_sample: pd.DataFrame
) -> None:
    token = make_key(served_settings, "predict", rate_per_second=100.0)
    headers = {"Authorization": f"Bearer {token}", "X-Request-ID": "req-redis-down"}
    body = {"instances": records(fraud_sample.iloc[:1])}
    with ServerProcess(
        served_settings, env={"SHIPYARD_REDIS_URL": "redis://127.0.0.1:1/0"}
    ) as server:
        # before any call has tried Redis, the server takes it to be up
        assert "shipyard_ratelimit_shared_up 1.0" in _metrics_showing(
            server.url, "shipyard_ratelimit_shared_up 1.0"
        )
        responses = [
            httpx.post(
                f"{server.url}/v1/models/fraud-detector/predict",
                json=body,
                headers=headers,
                timeout=10,
            )
            for _ in range(5)
        ]
        assert [r.status_code for r in responses] == [200] * 5
        assert responses[0].headers["x-request-id"] == "req-redis-down"
        metrics = _metrics_showing(server.url, "shipyard_ratelimit_shared_up 0.0")
    assert "shipyard_ratelimit_shared_up 0.0" in metrics
    lines = [
        json.loads(line) for line in server.log.read_text().splitlines() if line.startswith("{")
    ]
    warning = next(line for line in lines if "Redis is unreachable" in line["msg"])
    assert warning["level"] == "warning"
    assert warning["request_id"] == "req-redis-down"  # logged while serving that request

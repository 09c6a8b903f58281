"""Micro-batching, the bounded queue and deadlines: in the batcher and over HTTP."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from tests.serving.slow_model import SlowClassifier

from shipyard.app import create_app
from shipyard.core import Columns, Settings
from shipyard.core import errors as e
from shipyard.registry import Registry
from shipyard.serving._batcher import Batcher


class CountingModel:
    """Stands in for a model (not for the batcher under test): sums its inputs, counts calls."""

    runtime = "test"

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.delay = delay
        self.fail = fail
        self.calls: list[int] = []
        self.threads: set[str] = set()

    def predict(self, columns: Columns) -> np.ndarray:
        self.threads.add(threading.current_thread().name)
        if self.delay:
            time.sleep(self.delay)
        if self.fail:
            raise ValueError("broken model")
        x = columns["x"]
        self.calls.append(len(x))
        return x * 2


def _submit(batcher: Batcher, sizes: list[int], deadline_s: float = 5.0) -> list[Any]:
    async def go() -> list[Any]:
        deadline = time.monotonic() + deadline_s
        jobs = [
            batcher.predict({"x": np.arange(start, start + n, dtype=float)}, n, deadline)
            for start, n in zip(np.cumsum([0, *sizes[:-1]]).tolist(), sizes, strict=True)
        ]
        return await asyncio.gather(*jobs, return_exceptions=True)

    result: list[Any] = asyncio.run(go())
    return result


def test_requests_that_wait_together_share_one_model_call() -> None:
    model = CountingModel(delay=0.02)
    batcher = Batcher(model, max_rows=1000)
    results = _submit(batcher, [1] * 50)
    # the first call starts alone; the other 49 queue behind it and go in one more call
    assert sum(model.calls) == 50
    assert len(model.calls) <= 3
    assert [r.tolist() for r in results] == [[2.0 * i] for i in range(50)]
    batcher.close()


def test_batches_never_exceed_max_rows_and_keep_each_answer_with_its_request() -> None:
    model = CountingModel(delay=0.01)
    batcher = Batcher(model, max_rows=10)
    sizes = [3, 4, 5, 2, 7, 1, 9]
    results = _submit(batcher, sizes)
    assert max(model.calls) <= 10
    assert sum(model.calls) == sum(sizes)
    start = 0
    for size, answer in zip(sizes, results, strict=True):
        assert answer.tolist() == [2.0 * v for v in range(start, start + size)]
        start += size
    batcher.close()


def test_a_full_queue_refuses_at_once_with_overloaded() -> None:
    model = CountingModel(delay=0.05)
    batcher = Batcher(model, max_rows=4, max_queue_rows=8)
    results = _submit(batcher, [4] * 6)
    refused = [r for r in results if isinstance(r, e.Overloaded)]
    assert refused
    assert all(r.retry_after == 1.0 for r in refused)
    assert sum(isinstance(r, np.ndarray) for r in results) == 6 - len(refused)
    assert batcher.stats.refused == len(refused)
    batcher.close()


def test_a_request_past_its_deadline_gets_deadline_exceeded_and_is_not_scored() -> None:
    model = CountingModel(delay=0.2)
    batcher = Batcher(model, max_rows=1)
    results = _submit(batcher, [1, 1, 1], deadline_s=0.1)
    assert all(isinstance(r, e.DeadlineExceeded) for r in results)
    # the first call was already running; the queued ones were dropped before scoring
    assert len(model.calls) <= 1
    batcher.close()


def test_a_failing_model_fails_every_request_of_its_batch() -> None:
    batcher = Batcher(CountingModel(delay=0.01, fail=True))
    results = _submit(batcher, [1, 2, 3])
    assert all(isinstance(r, e.ModelUnavailable) for r in results)
    assert all("failed on this request (ValueError: broken model)" in r.message for r in results)
    batcher.close()


def test_fast_models_are_called_on_the_event_loop_and_slow_ones_on_their_thread() -> None:
    fast, slow = CountingModel(), CountingModel(delay=0.002)
    fast_batcher, slow_batcher = Batcher(fast, name="fast"), Batcher(slow, name="slow")

    async def go() -> None:
        for _ in range(5):
            await fast_batcher.predict({"x": np.ones(1)}, 1, time.monotonic() + 5)
            await slow_batcher.predict({"x": np.ones(1)}, 1, time.monotonic() + 5)

    asyncio.run(go())
    assert any(
        name.startswith("shipyard-model-fast") for name in fast.threads
    )  # the first, measured call
    assert "MainThread" in fast.threads
    assert slow.threads == {"shipyard-model-slow_0"}
    fast_batcher.close()
    slow_batcher.close()


@pytest.fixture
def slow_settings(sqlite_settings: Settings) -> Settings:
    """fraud-slow serves a model that takes 50 ms per call; auth off to keep the focus."""
    X = pd.DataFrame({"x0": [0.1, -0.2, 0.3], "x1": [1.0, 2.0, 3.0]})
    with Registry.from_settings(sqlite_settings) as registry:
        version = registry.register(
            SlowClassifier(delay=0.05).fit(X, [0, 1, 1]), name="fraud-slow", sample=X
        )
        registry.deploy("fraud-slow", version.version)
    return sqlite_settings.model_copy(
        update={"auth": "off", "queue_max_rows": 4, "batch_max_rows": 2}
    )


def test_overload_answers_503_with_retry_after_at_once(slow_settings: Settings) -> None:
    body = {"instances": [{"x0": 0.5, "x1": 1.0}]}
    with TestClient(create_app(slow_settings)) as client, ThreadPoolExecutor(16) as pool:
        started = time.monotonic()
        responses = list(
            pool.map(lambda _: client.post("/v1/models/fraud-slow/predict", json=body), range(16))
        )
        elapsed = time.monotonic() - started
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) >= 4
    refused = [r for r in responses if r.status_code == 503]
    assert refused
    assert all(r.headers["retry-after"] == "1" for r in refused)
    assert "rows waiting" in refused[0].json()["error"]["message"]
    assert elapsed < 5  # refused at once, not queued


def test_a_request_that_cannot_meet_its_deadline_is_504(slow_settings: Settings) -> None:
    body = {"instances": [{"x0": 0.5, "x1": 1.0}]}
    with TestClient(create_app(slow_settings)) as client:
        assert client.post("/v1/models/fraud-slow/predict", json=body).status_code == 200
        late = client.post(
            "/v1/models/fraud-slow/predict", json=body, headers={"X-Deadline-Ms": "10"}
        )
        assert late.status_code == 504
        assert "deadline" in late.json()["error"]["message"]
        bad = client.post(
            "/v1/models/fraud-slow/predict", json=body, headers={"X-Deadline-Ms": "soon"}
        )
        assert bad.status_code == 400


def test_a_model_that_raises_is_a_503_not_a_crash(sqlite_settings: Settings) -> None:
    X = pd.DataFrame({"x0": [0.1, -0.2], "x1": [1.0, 2.0]})
    with Registry.from_settings(sqlite_settings) as registry:
        version = registry.register(
            SlowClassifier(delay=0.0).fit(X, [0, 1]), name="fraud-flaky", sample=X
        )
        bundle_model = registry.open("fraud-flaky", version.version)
        registry.deploy("fraud-flaky", version.version)
    assert bundle_model.predictor is not None
    settings = sqlite_settings.model_copy(update={"auth": "off"})
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        served = client.app.state.services.predictions.cached("fraud-flaky", version.version)  # type: ignore[attr-defined]
        served.predictor._model.fail = True  # the model starts failing at run time
        response = client.post(
            "/v1/models/fraud-flaky/predict", json={"instances": [{"x0": 1.0, "x1": 1.0}]}
        )
    assert response.status_code == 503
    assert "failed" in response.json()["error"]["message"]

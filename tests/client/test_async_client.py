"""`AsyncClient`: the same contract as `Client`, awaited. The fake server's handler may be a
coroutine, so a slow answer can be cancelled like a real one."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import anyio
import httpx
import pytest

from shipyard.client import AsyncClient
from shipyard.core import errors as e
from tests.client._fakes import FakeServer, answer, error, refused

pytestmark = pytest.mark.anyio

RECORD = {"transaction_amount": 42.5}
SAFE = {"score": 0.0, "label": 0}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def client_for(server: FakeServer, **options: Any) -> AsyncClient:
    options = {"backoff": 0.0, **options}
    return AsyncClient("http://fraud-api:8000", "sk-test", transport=server.transport, **options)


async def test_answer_becomes_a_prediction_with_headers_sent() -> None:
    server = FakeServer(answer())
    async with client_for(server) as client:
        result = await client.predict("fraud-detector", RECORD, version=3, routing_key="cust-9")
    assert (result.model, result.version, result.variant) == ("fraud-detector", 3, "candidate")
    assert len(result.prediction_ids) == 1
    (request,) = server.requests
    assert request.url.path == "/v1/models/fraud-detector/versions/3/predict"
    assert json.loads(request.content) == {"instances": [RECORD]}
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.headers["x-routing-key"] == "cust-9"
    assert 0 < int(request.headers["x-deadline-ms"]) <= 500


@pytest.mark.parametrize("status", [429, 502, 503, 504])
async def test_transient_status_is_retried(status: int) -> None:
    server = FakeServer(error(status, "Whatever", headers={"Retry-After": "0"}), answer())
    async with client_for(server, retries=1) as client:
        result = await client.predict("fraud-detector", RECORD)
    assert server.count == 2
    assert result.fallback is False


async def test_connection_error_is_retried() -> None:
    server = FakeServer(refused, answer())
    async with client_for(server, retries=1) as client:
        assert (await client.predict("fraud-detector", RECORD)).version == 3
    assert server.count == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 413, 422])
async def test_client_errors_are_not_retried(status: int) -> None:
    server = FakeServer(error(status, "Whatever", "refused by the fake"), answer())
    async with client_for(server, retries=3, fallback=SAFE) as client:
        with pytest.raises(e.ShipyardError, match="refused by the fake"):
            await client.predict("fraud-detector", RECORD)
    assert server.count == 1


async def test_schema_violation_raises_with_details_despite_a_fallback() -> None:
    details = [{"loc": ["instances", 0, "transaction_amount"], "msg": "must be a number"}]
    server = FakeServer(error(422, "SchemaViolation", "1 record does not match", details))
    async with client_for(server, fallback=SAFE) as client:
        with pytest.raises(e.SchemaViolation) as caught:
            await client.predict("fraud-detector", RECORD)
    assert caught.value.errors == details


async def test_retry_after_is_waited_before_the_next_attempt() -> None:
    server = FakeServer(error(503, "Overloaded", headers={"Retry-After": "0.3"}), answer())
    async with client_for(server, retries=1, timeout=3.0) as client:
        await client.predict("fraud-detector", RECORD)
    (gap,) = server.gaps()
    assert gap >= 0.3


async def test_retries_stop_when_the_time_budget_is_spent() -> None:
    server = FakeServer(error(503, "Overloaded"))
    async with client_for(server, retries=1000, backoff=0.02, timeout=0.5, seed=1) as client:
        started = time.monotonic()
        with pytest.raises(e.ServiceUnavailable, match=r"within 0\.5 s"):
            await client.predict("fraud-detector", RECORD)
        elapsed = time.monotonic() - started
    assert elapsed < 0.5 + 0.2
    assert 3 <= server.count < 1000


async def test_fallback_is_marked_and_an_open_circuit_does_not_reach_the_server() -> None:
    server = FakeServer(error(503, "Overloaded", "queue is full"))
    options = {"retries": 0, "breaker_threshold": 2, "breaker_reset": 60, "fallback": SAFE}
    async with client_for(server, **options) as client:
        first = await client.predict("fraud-detector", [RECORD, RECORD])
        await client.predict("fraud-detector", RECORD)
        fast = await client.predict("fraud-detector", RECORD)
    assert first.fallback is True
    assert first.predictions == [SAFE, SAFE]
    assert first.reason is not None
    assert "queue is full" in first.reason
    assert fast.fallback is True
    assert fast.reason is not None
    assert "circuit" in fast.reason
    assert server.count == 2


async def test_a_cancelled_trial_call_does_not_wedge_the_circuit() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200, json={})

    server = FakeServer(error(503, "Overloaded"), slow, answer())
    async with client_for(server, retries=0, breaker_threshold=1, breaker_reset=0.1) as client:
        with pytest.raises(e.ServiceUnavailable):
            await client.predict("fraud-detector", RECORD)
        await anyio.sleep(0.15)
        with anyio.move_on_after(0.05):  # the caller gives up on the trial call
            await client.predict("fraud-detector", RECORD)
        await anyio.sleep(0.15)
        result = await client.predict("fraud-detector", RECORD)
    assert result.version == 3
    assert client.breaker.state == "closed"


async def test_feedback_posts_to_v1_feedback() -> None:
    server = FakeServer(answer(200, {"accepted": 1, "pending": [], "unknown": []}))
    async with client_for(server) as client:
        summary = await client.feedback({"prediction_id": "a" * 32, "label": True})
    assert summary["accepted"] == 1
    (request,) = server.requests
    assert request.url.path == "/v1/feedback"
    assert json.loads(request.content) == [{"prediction_id": "a" * 32, "label": True}]

"""The client's circuit breaker: failed calls in a row open it, it fails fast while open, one
trial call after `breaker_reset` closes or re-opens it. The fake server counts what got through."""

from __future__ import annotations

import time
from typing import Any

import pytest

from shipyard.client import CircuitBreaker, Client
from shipyard.core import errors as e
from tests.client._fakes import FakeServer, answer, error, refused

RECORD = {"transaction_amount": 42.5}
RESET = 0.2


def client_for(server: FakeServer, **options: Any) -> Client:
    options = {
        "retries": 0,
        "backoff": 0.0,
        "breaker_threshold": 3,
        "breaker_reset": RESET,
        **options,
    }
    return Client("http://fraud-api:8000", transport=server.transport, **options)


def fail_times(client: Client, n: int) -> None:
    for _ in range(n):
        with pytest.raises(e.ServiceUnavailable):
            client.predict("fraud-detector", RECORD)


def test_circuit_opens_after_threshold_failed_calls_and_then_fails_fast() -> None:
    server = FakeServer(error(503, "ModelUnavailable"))
    with client_for(server) as client:
        fail_times(client, 2)
        assert client.breaker.state == "closed"
        fail_times(client, 1)
        assert client.breaker.state == "open"
        started = time.monotonic()
        with pytest.raises(e.ServiceUnavailable, match=r"circuit .* is open"):
            client.predict("fraud-detector", RECORD)
        assert time.monotonic() - started < RESET / 2
    assert server.count == 3  # the fourth call never reached the server


def test_a_call_counts_once_however_many_attempts_it_made() -> None:
    server = FakeServer(refused)
    with client_for(server, retries=4, breaker_threshold=2, timeout=2.0) as client:
        fail_times(client, 1)
        assert server.count == 5
        assert client.breaker.state == "closed"
        fail_times(client, 1)
        assert client.breaker.state == "open"


def test_circuit_half_opens_after_reset_and_a_successful_trial_closes_it() -> None:
    server = FakeServer(*[error(503, "Overloaded")] * 3, answer())
    with client_for(server) as client:
        fail_times(client, 3)
        time.sleep(RESET + 0.05)
        assert client.breaker.state == "half-open"
        assert client.predict("fraud-detector", RECORD).version == 3
        assert client.breaker.state == "closed"
        client.predict("fraud-detector", RECORD)
    assert server.count == 5


def test_a_failed_trial_reopens_the_circuit_at_once() -> None:
    server = FakeServer(error(503, "Overloaded"))
    with client_for(server) as client:
        fail_times(client, 3)
        time.sleep(RESET + 0.05)
        fail_times(client, 1)  # the trial: one failure is enough in half-open
        assert client.breaker.state == "open"
        with pytest.raises(e.ServiceUnavailable, match="circuit"):
            client.predict("fraud-detector", RECORD)
    assert server.count == 4


def test_half_open_lets_one_trial_through_at_a_time() -> None:
    breaker = CircuitBreaker(threshold=1, reset_after=RESET)
    breaker.failure()
    assert not breaker.allow()
    time.sleep(RESET + 0.05)
    assert breaker.allow()
    assert not breaker.allow()  # a second caller while the trial is out fails fast


def test_a_trial_that_never_reports_frees_its_slot_after_another_reset() -> None:
    breaker = CircuitBreaker(threshold=1, reset_after=RESET)
    breaker.failure()
    time.sleep(RESET + 0.05)
    assert breaker.allow()  # this trial is then cancelled: neither success nor failure
    time.sleep(RESET + 0.05)
    assert breaker.allow()


def test_a_rate_limited_trial_does_not_wedge_the_circuit() -> None:
    server = FakeServer(
        error(503, "Overloaded"), error(429, "RateLimited", headers={"Retry-After": "0"}), answer()
    )
    with client_for(server, breaker_threshold=1) as client:
        fail_times(client, 1)  # the 503 opens the circuit
        time.sleep(RESET + 0.05)
        fail_times(client, 1)  # the trial gets a 429: no verdict on the server
        time.sleep(RESET + 0.05)
        assert client.predict("fraud-detector", RECORD).fallback is False
        assert client.breaker.state == "closed"
    assert server.count == 3


def test_client_errors_do_not_count_as_failures_and_break_a_run_of_them() -> None:
    server = FakeServer(
        error(503, "Overloaded"),
        error(503, "Overloaded"),
        error(422, "SchemaViolation"),
        error(503, "Overloaded"),
        error(503, "Overloaded"),
        error(422, "SchemaViolation"),
    )
    with client_for(server) as client:
        for _ in range(2):
            fail_times(client, 2)
            with pytest.raises(e.SchemaViolation):
                client.predict("fraud-detector", RECORD)
        for _ in range(5):
            with pytest.raises(e.SchemaViolation):
                client.predict("fraud-detector", RECORD)
        assert client.breaker.state == "closed"
    assert server.count == 11


def test_rate_limits_do_not_open_the_circuit() -> None:
    server = FakeServer(error(429, "RateLimited", headers={"Retry-After": "0"}))
    with client_for(server, breaker_threshold=2) as client:
        fail_times(client, 4)
        assert client.breaker.state == "closed"
    assert server.count == 4


def test_server_errors_that_are_not_retried_still_count_as_failures() -> None:
    server = FakeServer(error(500, "InternalError"))
    with client_for(server, breaker_threshold=2) as client:
        fail_times(client, 2)
        assert client.breaker.state == "open"
        fail_times(client, 1)
    assert server.count == 2

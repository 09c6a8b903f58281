"""`Client.predict`: the answer, the headers it sends, and which failures it retries within the
call's time budget. A scripted `httpx.MockTransport` plays the server."""

from __future__ import annotations

import json
import random
import time
from typing import Any

import httpx
import pytest

from shipyard.client import Client, Prediction, RetryPolicy
from shipyard.core import errors as e
from tests.client._fakes import PREDICTED, FakeServer, answer, error, read_timeout, refused

URL = "http://fraud-api:8000"
RECORD = {"transaction_amount": 42.5, "merchant_category": "grocery"}


def client_for(server: FakeServer, **options: Any) -> Client:
    options = {"backoff": 0.0, **options}
    return Client(URL, "sk-test", transport=server.transport, **options)


def test_answer_becomes_a_prediction_with_model_version_variant_and_ids() -> None:
    server = FakeServer(answer())
    with client_for(server) as client:
        result = client.predict("fraud-detector", RECORD)
    assert result == Prediction(
        model="fraud-detector",
        version=3,
        predictions=PREDICTED["predictions"],
        prediction_ids=PREDICTED["prediction_ids"],
        variant="candidate",
        answered_by=["server"] * len(PREDICTED["predictions"]),
    )
    assert result.first["score"] == 0.91
    assert result.fallback is False
    assert result.reason is None


def test_one_record_or_many_are_posted_as_instances_to_the_alias_or_version_path() -> None:
    server = FakeServer(answer())
    with client_for(server) as client:
        client.predict("fraud-detector", RECORD)
        client.predict("fraud-detector", [RECORD, RECORD], version=2)
    first, second = server.requests
    assert (first.method, first.url.path) == ("POST", "/v1/models/fraud-detector/predict")
    assert json.loads(first.content) == {"instances": [RECORD]}
    assert second.url.path == "/v1/models/fraud-detector/versions/2/predict"
    assert json.loads(second.content) == {"instances": [RECORD, RECORD]}


def test_api_key_goes_in_the_authorization_header_and_is_left_out_without_one() -> None:
    server = FakeServer(answer())
    with client_for(server) as client:
        client.predict("fraud-detector", RECORD)
    with Client(URL, transport=server.transport) as anonymous:
        anonymous.predict("fraud-detector", RECORD)
    assert server.header("authorization") == ["Bearer sk-test", None]
    assert all(ua and ua.startswith("shipyard-client/") for ua in server.header("user-agent"))


def test_routing_key_is_sent_only_when_given() -> None:
    server = FakeServer(answer())
    with client_for(server) as client:
        client.predict("fraud-detector", RECORD, routing_key="customer-17")
        client.predict("fraud-detector", RECORD)
    assert server.header("x-routing-key") == ["customer-17", None]


@pytest.mark.parametrize(
    "failure",
    [
        error(429, "RateLimited", headers={"Retry-After": "0"}),
        error(502, "BadGateway"),
        error(503, "Overloaded"),
        error(504, "DeadlineExceeded"),
        refused,
        read_timeout,
    ],
    ids=["429", "502", "503", "504", "connection-refused", "read-timeout"],
)
def test_transient_failure_is_retried_and_the_retry_answers(failure: object) -> None:
    server = FakeServer(failure, answer())
    with client_for(server, retries=2) as client:
        result = client.predict("fraud-detector", RECORD)
    assert server.count == 2
    assert result.version == 3
    assert result.fallback is False


@pytest.mark.parametrize(
    ("status", "kind", "raised"),
    [
        (400, "MalformedRequest", e.MalformedRequest),
        (401, "Unauthenticated", e.Unauthenticated),
        (403, "Forbidden", e.Forbidden),
        (404, "ModelNotFound", e.ModelNotFound),
        (409, "VersionArchived", e.VersionArchived),
        (413, "PayloadTooLarge", e.PayloadTooLarge),
        (422, "SchemaViolation", e.SchemaViolation),
    ],
)
def test_client_errors_are_never_retried_and_raise_the_servers_error(
    status: int, kind: str, raised: type[e.ShipyardError]
) -> None:
    server = FakeServer(error(status, kind, f"the fake says {kind}"), answer())
    with client_for(server, retries=3) as client, pytest.raises(raised) as caught:
        client.predict("fraud-detector", RECORD)
    assert server.count == 1
    assert caught.value.message == f"the fake says {kind}"


def test_client_error_without_a_shipyard_body_maps_by_status() -> None:
    server = FakeServer(lambda request: httpx.Response(403, text="forbidden by the proxy"))
    with client_for(server) as client, pytest.raises(e.Forbidden, match="forbidden by the proxy"):
        client.predict("fraud-detector", RECORD)
    assert server.count == 1


def test_after_all_retries_fail_service_unavailable_says_how_many_attempts() -> None:
    server = FakeServer(error(503, "ModelUnavailable", "model is loading"))
    with (
        client_for(server, retries=2, timeout=5.0) as client,
        pytest.raises(e.ServiceUnavailable) as caught,
    ):
        client.predict("fraud-detector", RECORD)
    assert server.count == 3
    assert caught.value.status == 503
    assert "3 attempt(s)" in caught.value.message
    assert "model is loading" in caught.value.message


def test_retry_after_is_waited_before_the_next_attempt() -> None:
    server = FakeServer(error(503, "Overloaded", headers={"Retry-After": "0.3"}), answer())
    with client_for(server, retries=1, timeout=3.0) as client:
        result = client.predict("fraud-detector", RECORD)
    assert result.fallback is False
    (gap,) = server.gaps()
    assert gap >= 0.3


def test_retry_after_beyond_the_budget_gives_up_at_once_instead_of_waiting() -> None:
    server = FakeServer(error(429, "RateLimited", headers={"Retry-After": "30"}), answer())
    with client_for(server, retries=3, timeout=1.0) as client:
        started = time.monotonic()
        with pytest.raises(e.ServiceUnavailable) as caught:
            client.predict("fraud-detector", RECORD)
    assert time.monotonic() - started < 0.5
    assert server.count == 1
    assert caught.value.status == 429


def test_backoff_doubles_per_attempt_with_full_jitter_up_to_the_cap() -> None:
    policy = RetryPolicy(retries=8, backoff=0.05, max_backoff=0.3)
    rng = random.Random(7)
    for attempt, cap in enumerate([0.05, 0.1, 0.2, 0.3, 0.3]):
        waits = [policy.wait(attempt, None, rng) for _ in range(200)]
        assert all(0 <= w <= cap for w in waits)
        assert max(waits) > 0.8 * cap  # spread over the whole range: jitter, not a fixed wait
        assert min(waits) < 0.2 * cap
    assert policy.wait(0, 1.5, rng) == 1.5  # Retry-After wins over the backoff


def test_retries_stop_when_the_time_budget_is_spent() -> None:
    server = FakeServer(error(503, "Overloaded"))
    with client_for(server, retries=1000, backoff=0.02, timeout=0.5, seed=1) as client:
        started = time.monotonic()
        with pytest.raises(e.ServiceUnavailable, match=r"within 0\.5 s"):
            client.predict("fraud-detector", RECORD)
        elapsed = time.monotonic() - started
    assert elapsed < 0.5 + 0.2
    assert 3 <= server.count < 1000


def test_deadline_header_and_attempt_timeout_shrink_as_the_budget_is_spent() -> None:
    server = FakeServer(error(503, "Overloaded"), error(502, "BadGateway"), answer())
    with client_for(server, retries=2, backoff=0.1, timeout=2.0, seed=3) as client:
        client.predict("fraud-detector", RECORD)
    deadlines = [int(d or 0) for d in server.header("x-deadline-ms")]
    read_timeouts = [r.extensions["timeout"]["read"] for r in server.requests]
    assert 1800 <= deadlines[0] <= 2000
    assert deadlines == sorted(deadlines, reverse=True)
    assert len(set(deadlines)) == 3
    assert read_timeouts == sorted(read_timeouts, reverse=True)
    for deadline_ms, read_timeout_s in zip(deadlines, read_timeouts, strict=True):
        assert read_timeout_s <= 2.0
        assert abs(deadline_ms / 1e3 - read_timeout_s) < 0.1  # both are what is left


def test_deadline_header_stays_within_the_servers_sixty_second_limit() -> None:
    server = FakeServer(answer())
    with client_for(server, timeout=120.0) as client:
        client.predict("fraud-detector", RECORD)
    (deadline,) = server.header("x-deadline-ms")
    assert deadline == "60000"
    assert server.requests[0].extensions["timeout"]["read"] > 100  # the budget itself is kept

"""The fallback: a safe default, marked as such, when the service cannot answer; never a cover
for a request the server rejected. And `feedback()`."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shipyard.client import Client
from shipyard.core import errors as e
from tests.client._fakes import FakeServer, answer, error, read_timeout, refused

RECORDS = [{"transaction_amount": 42.5}, {"transaction_amount": 9000.0}]
SAFE = {"score": 0.0, "label": 0}


def client_for(server: FakeServer, **options: Any) -> Client:
    options = {"retries": 1, "backoff": 0.0, "fallback": SAFE, **options}
    return Client("http://fraud-api:8000", "sk-test", transport=server.transport, **options)


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (error(503, "Overloaded", "queue is full"), "queue is full"),
        (error(503, "ModelUnavailable", "model is loading"), "model is loading"),
        (error(504, "DeadlineExceeded", "deadline passed"), "deadline passed"),
        (error(500, "InternalError", "a bug"), "a bug"),
        (refused, "ConnectError"),
        (read_timeout, "ReadTimeout"),
    ],
    ids=["503-overloaded", "503-model-unavailable", "504", "500", "refused", "timeout"],
)
def test_fallback_dict_is_returned_per_record_marked_with_the_reason(
    failure: Any, reason: str
) -> None:
    server = FakeServer(failure)
    with client_for(server) as client:
        result = client.predict("fraud-detector", RECORDS)
    assert result.fallback is True
    assert result.reason is not None
    assert reason in result.reason
    assert result.model == "fraud-detector"
    assert result.version is None
    assert result.prediction_ids == []
    assert result.predictions == [SAFE, SAFE]
    result.predictions[0]["score"] = 1.0
    assert result.predictions[1] == SAFE  # each record gets its own copy


def test_fallback_function_gets_the_records_and_its_answers_are_returned() -> None:
    seen: list[list[dict[str, Any]]] = []

    def rule(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        seen.append(records)
        return [{"label": int(r["transaction_amount"] > 1000)} for r in records]

    server = FakeServer(error(503, "Overloaded"))
    with client_for(server, fallback=rule) as client:
        result = client.predict("fraud-detector", RECORDS)
    assert seen == [RECORDS]
    assert result.predictions == [{"label": 0}, {"label": 1}]
    assert result.fallback is True


def test_fallback_is_returned_without_calling_while_the_circuit_is_open() -> None:
    server = FakeServer(error(503, "Overloaded"))
    with client_for(server, retries=0, breaker_threshold=1, breaker_reset=60) as client:
        client.predict("fraud-detector", RECORDS)
        result = client.predict("fraud-detector", RECORDS)
    assert server.count == 1
    assert result.fallback is True
    assert result.reason is not None
    assert "circuit" in result.reason


def test_schema_violation_still_raises_with_the_servers_message_and_details() -> None:
    details = [{"loc": ["instances", 0, "transaction_amount"], "msg": "must be a number"}]
    server = FakeServer(error(422, "SchemaViolation", "1 record does not match", details))
    with client_for(server) as client, pytest.raises(e.SchemaViolation) as caught:
        client.predict("fraud-detector", RECORDS)
    assert caught.value.message == "1 record does not match"
    assert caught.value.errors == details
    assert server.count == 1


@pytest.mark.parametrize(
    ("status", "kind", "raised"),
    [
        (401, "Unauthenticated", e.Unauthenticated),
        (403, "Forbidden", e.Forbidden),
        (404, "VersionNotFound", e.VersionNotFound),
        (400, "MalformedRequest", e.MalformedRequest),
    ],
)
def test_rejected_requests_raise_even_with_a_fallback(
    status: int, kind: str, raised: type[e.ShipyardError]
) -> None:
    server = FakeServer(error(status, kind))
    with client_for(server) as client, pytest.raises(raised):
        client.predict("fraud-detector", RECORDS)


def test_without_a_fallback_service_unavailable_is_raised_with_the_last_status() -> None:
    server = FakeServer(error(429, "RateLimited", headers={"Retry-After": "0"}))
    with client_for(server, fallback=None) as client, pytest.raises(e.ServiceUnavailable) as caught:
        client.predict("fraud-detector", RECORDS)
    assert caught.value.status == 429
    assert isinstance(caught.value, ConnectionError)


def test_feedback_posts_the_labels_to_v1_feedback_and_returns_the_servers_answer() -> None:
    summary = {"accepted": 2, "pending": [], "unknown": []}
    server = FakeServer(answer(200, summary))
    labels = [{"prediction_id": "a" * 32, "label": 1}, {"prediction_id": "b" * 32, "label": 0}]
    with client_for(server) as client:
        assert client.feedback(labels) == summary
        client.feedback(labels[0])
    many, one = server.requests
    assert (many.method, many.url.path) == ("POST", "/v1/feedback")
    assert json.loads(many.content) == labels
    assert json.loads(one.content) == [labels[0]]
    assert many.headers["authorization"] == "Bearer sk-test"


def test_feedback_errors_raise_instead_of_falling_back() -> None:
    server = FakeServer(error(400, "MalformedRequest", "feedback[0] needs both"))
    with client_for(server) as client, pytest.raises(e.MalformedRequest, match="needs both"):
        client.feedback({"prediction_id": "a" * 32})

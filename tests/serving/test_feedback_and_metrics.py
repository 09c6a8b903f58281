"""`POST /v1/feedback` over HTTP, and what `/metrics` shows after traffic."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from tests.conftest import records


def _predict(client: TestClient, sample: pd.DataFrame, n: int) -> list[str]:
    body = client.post(
        "/v1/models/fraud-detector/predict", json={"instances": records(sample.iloc[:n])}
    ).json()
    ids: list[str] = body["prediction_ids"]
    return ids


def test_labels_for_answered_predictions_are_accepted_one_or_many(
    client: TestClient, fraud_sample: pd.DataFrame
) -> None:
    ids = _predict(client, fraud_sample, 5)
    one = client.post("/v1/feedback", json={"prediction_id": ids[0], "label": 1})
    assert one.status_code == 200
    assert one.json() == {"accepted": 1, "pending": [], "unknown": []}
    many = client.post(
        "/v1/feedback", json={"feedback": [{"prediction_id": i, "label": 0} for i in ids[1:]]}
    )
    assert many.json()["accepted"] == 4


def test_unknown_ids_are_reported_back_with_the_reason(
    client: TestClient, fraud_sample: pd.DataFrame
) -> None:
    ids = _predict(client, fraud_sample, 1)
    result = client.post(
        "/v1/feedback",
        json=[
            {"prediction_id": ids[0], "label": True},
            {"prediction_id": "not-an-id", "label": 1},
            {"prediction_id": "0" * 32, "label": 0},
        ],
    ).json()
    assert result["accepted"] == 1
    assert result["unknown"] == [
        {
            "prediction_id": "not-an-id",
            "reason": "not a shipyard prediction id (32 hex digits), nor one a device uploaded",
        },
        {"prediction_id": "0" * 32, "reason": "no logged prediction has this id"},
    ]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"[]", 'send {"prediction_id"'),
        (b'{"prediction_id": "x"}', "needs both 'prediction_id' and 'label'"),
        (b'[{"prediction_id": 7, "label": 1}]', "prediction_id must be a string"),
        (b'[{"prediction_id": "x", "label": [1]}]', "label must be a number, string or boolean"),
        (b"nope", "not valid JSON"),
    ],
)
def test_malformed_feedback_is_400_with_the_shape_to_send(
    client: TestClient, body: bytes, fragment: str
) -> None:
    response = client.post(
        "/v1/feedback", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert fragment in response.json()["error"]["message"]


def _sample(metrics: str, name: str, **labels: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_requests_per_model_version_variant_and_status(
    client: TestClient, fraud_sample: pd.DataFrame
) -> None:
    before = client.get("/metrics").text
    labels = {"model": "fraud-detector", "version": "1", "variant": "primary"}
    ok_before = _sample(before, "shipyard_predictions_total", status="200", **labels)
    bad_before = _sample(before, "shipyard_predictions_total", status="422", **labels)
    _predict(client, fraud_sample, 3)
    _predict(client, fraud_sample, 1)
    client.post(
        "/v1/models/fraud-detector/predict", json={"instances": [{"transaction_amount": "x"}]}
    )
    after = client.get("/metrics").text
    assert _sample(after, "shipyard_predictions_total", status="200", **labels) == ok_before + 2
    assert _sample(after, "shipyard_predictions_total", status="422", **labels) == bad_before + 1
    assert _sample(after, "shipyard_prediction_duration_seconds_count", **labels) >= 2
    assert (
        _sample(
            after, "shipyard_http_requests_total", route="/v1/models/{name}/predict", status="422"
        )
        >= 1
    )
    for gauge in (
        "shipyard_log_writer_lag_seconds",
        "shipyard_models_loaded",
        "shipyard_ratelimit_shared_up",
    ):
        assert re.search(rf"^{gauge} ", after, re.MULTILINE), gauge


def test_every_response_carries_a_request_id(client: TestClient) -> None:
    mine = client.get("/v2/health/live", headers={"X-Request-ID": "abc-123"})
    assert mine.headers["x-request-id"] == "abc-123"
    generated = client.get("/v2/health/live").headers["x-request-id"]
    assert len(generated) == 32

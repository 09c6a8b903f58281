"""`POST /v1/models/{name}/predict`: answers, version resolution, and every bad input as a 4xx."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from tests.conftest import records

from shipyard.app import create_app
from shipyard.core import Settings
from shipyard.registry import Registry


def test_one_record_gets_score_label_threshold_version_and_id(
    client: TestClient, fraud_model: Any, fraud_sample: pd.DataFrame
) -> None:
    record = records(fraud_sample.iloc[:1])[0]
    response = client.post("/v1/models/fraud-detector/predict", json={"instances": [record]})
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == "fraud-detector"
    assert body["version"] == 1
    assert len(body["prediction_ids"]) == 1
    assert len(body["prediction_ids"][0]) == 32
    (prediction,) = body["predictions"]
    expected = fraud_model.predict_proba(fraud_sample.iloc[:1])[0, 1]
    assert prediction["score"] == pytest.approx(expected, abs=1e-5)
    assert prediction["threshold"] == 0.3
    assert prediction["label"] == int(expected >= 0.3)


def test_many_records_answer_in_order(
    client: TestClient, fraud_model: Any, fraud_sample: pd.DataFrame
) -> None:
    rows = fraud_sample.iloc[:200]
    response = client.post("/v1/models/fraud-detector/predict", json={"instances": records(rows)})
    assert response.status_code == 200
    body = response.json()
    scores = np.array([p["score"] for p in body["predictions"]])
    np.testing.assert_allclose(scores, fraud_model.predict_proba(rows)[:, 1], atol=1e-5)
    assert len(set(body["prediction_ids"])) == 200


def test_pinned_version_uses_that_versions_threshold(
    client: TestClient, fraud_sample: pd.DataFrame
) -> None:
    record = records(fraud_sample.iloc[:1])[0]
    response = client.post(
        "/v1/models/fraud-detector/versions/2/predict", json={"instances": [record]}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["version"] == 2
    assert body["predictions"][0]["threshold"] == 0.6


def test_an_alias_move_reaches_the_running_server(
    served_settings: Settings, fraud_sample: pd.DataFrame
) -> None:
    settings = served_settings.model_copy(update={"refresh_seconds": 0.05, "auth": "off"})
    body = {"instances": records(fraud_sample.iloc[:1])}
    with TestClient(create_app(settings)) as client:
        assert client.post("/v1/models/fraud-detector/predict", json=body).json()["version"] == 1
        with Registry.from_settings(settings) as registry:
            registry.set_alias("fraud-detector", 2, "production")
        deadline = time.monotonic() + 5
        answered = []
        while time.monotonic() < deadline and answered[-1:] != [2]:
            answered.append(
                client.post("/v1/models/fraud-detector/predict", json=body).json()["version"]
            )
            time.sleep(0.02)
        # no request failed during the switch, and the new version answers within the refresh time
        assert answered[-1] == 2
        assert set(answered) <= {1, 2}


def test_missing_values_are_accepted_where_the_training_data_had_them(
    client: TestClient, fraud_sample: pd.DataFrame
) -> None:
    record = dict(records(fraud_sample.iloc[:1])[0], distance_from_home_km=None)
    response = client.post("/v1/models/fraud-detector/predict", json={"instances": [record]})
    assert response.status_code == 200


def _error(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    return error


@pytest.mark.parametrize(
    ("change", "field", "fragment"),
    [
        ({"hour_of_day": "__drop__"}, "hour_of_day", "is missing"),
        (
            {"transaction_amount": "a lot"},
            "transaction_amount",
            "must be a number, got string 'a lot'",
        ),
        ({"hour_of_day": 3.5}, "hour_of_day", "must be an integer"),
        ({"merchant_category": 7}, "merchant_category", "must be a string"),
        ({"customer_age": None}, "customer_age", "is null"),
        ({"is_foreign": [1]}, "is_foreign", "must be an integer, got array"),
    ],
)
def test_bad_fields_are_422_naming_the_field(
    client: TestClient,
    fraud_sample: pd.DataFrame,
    change: dict[str, Any],
    field: str,
    fragment: str,
) -> None:
    record = records(fraud_sample.iloc[:1])[0]
    for key, value in change.items():
        if value == "__drop__":
            record.pop(key)
        else:
            record[key] = value
    response = client.post("/v1/models/fraud-detector/predict", json={"instances": [record]})
    assert response.status_code == 422
    error = _error(response)
    assert error["type"] == "SchemaViolation"
    assert field in error["message"]
    assert fragment in error["message"]
    assert error["details"][0]["loc"] == ["instances", 0, field]


def test_nan_is_not_json_and_is_refused_as_such(
    client: TestClient, fraud_sample: pd.DataFrame
) -> None:
    record = records(fraud_sample.iloc[:1])[0]
    raw = orjson.dumps({"instances": [record]}).replace(
        f'"customer_age":{record["customer_age"]}'.encode(), b'"customer_age":NaN'
    )
    assert b"NaN" in raw
    response = client.post(
        "/v1/models/fraud-detector/predict",
        content=raw,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert "not valid JSON" in _error(response)["message"]


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"", 400, "body is empty"),
        (b'{"rows": []}', 400, '{"instances"'),
        (b"[1, 2]", 400, '{"instances"'),
        (b'{"instances": []}', 400, "at least one record"),
        (b'{"instances": {"a": 1}}', 422, "must be a list of records"),
        (b'{"instances": [1]}', 422, "must be an object"),
    ],
)
def test_malformed_bodies_are_4xx_with_what_to_send(
    client: TestClient, body: bytes, status: int, fragment: str
) -> None:
    response = client.post(
        "/v1/models/fraud-detector/predict",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == status
    assert fragment in _error(response)["message"]


@pytest.mark.parametrize(
    ("path", "status", "fragment"),
    [
        (
            "/v1/models/nope/predict",
            404,
            "no model named 'nope'; registered models: fraud-detector",
        ),
        ("/v1/models/fraud-detector/versions/9/predict", 404, "no version 9; versions are 1-2"),
        ("/v1/models/fraud-detector/versions/zero/predict", 400, "must be a whole number from 1"),
        ("/v1/models/bad name/predict", 400, "not allowed"),
    ],
)
def test_unknown_models_and_versions_are_named(
    client: TestClient, fraud_sample: pd.DataFrame, path: str, status: int, fragment: str
) -> None:
    response = client.post(path, json={"instances": records(fraud_sample.iloc[:1])})
    assert response.status_code == status
    assert fragment in _error(response)["message"]


def test_a_model_without_a_production_alias_says_how_to_set_one(
    client: TestClient, served_settings: Settings, fraud_model: Any, fraud_sample: pd.DataFrame
) -> None:
    with Registry.from_settings(served_settings) as registry:
        registry.register(fraud_model, name="churn", sample=fraud_sample)
    response = client.post(
        "/v1/models/churn/predict", json={"instances": records(fraud_sample.iloc[:1])}
    )
    assert response.status_code == 404
    assert "shipyard models alias churn VERSION production" in _error(response)["message"]


def test_oversize_bodies_and_batches_are_413_with_the_limit(
    served_settings: Settings, fraud_sample: pd.DataFrame
) -> None:
    settings = served_settings.model_copy(
        update={"max_body_bytes": 20_000, "max_batch_records": 50, "auth": "off"}
    )
    with TestClient(create_app(settings)) as client:
        big = {"instances": records(fraud_sample.iloc[:200])}
        response = client.post("/v1/models/fraud-detector/predict", json=big)
        assert response.status_code == 413
        assert "limit of 20000 bytes" in _error(response)["message"]

        many = {"instances": [{}] * 60}
        response = client.post("/v1/models/fraud-detector/predict", json=many)
        assert response.status_code == 413
        assert "60 records in one request is over the limit of 50" in _error(response)["message"]


def test_a_chunked_body_over_the_limit_is_refused_without_content_length(
    served_settings: Settings, fraud_sample: pd.DataFrame
) -> None:
    settings = served_settings.model_copy(update={"max_body_bytes": 5_000, "auth": "off"})
    payload = orjson.dumps({"instances": records(fraud_sample.iloc[:100])})

    def chunks() -> Any:
        for i in range(0, len(payload), 1000):
            yield payload[i : i + 1000]

    with TestClient(create_app(settings)) as client:
        response = client.post(
            "/v1/models/fraud-detector/predict",
            content=chunks(),
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 413
    assert "over the limit of 5000 bytes" in _error(response)["message"]


def test_registry_reads_over_http(client: TestClient) -> None:
    models = client.get("/v1/models").json()["models"]
    assert [(m["name"], m["latest_version"], m["aliases"]) for m in models] == [
        ("fraud-detector", 2, {"production": 1})
    ]
    detail = client.get("/v1/models/fraud-detector").json()
    assert [v["version"] for v in detail["versions"]] == [1, 2]
    version = client.get("/v1/models/fraud-detector/versions/2").json()
    assert version["threshold"] == 0.6
    assert version["signature"]["columns"][0]["name"] == "transaction_amount"
    events = client.get("/v1/models/fraud-detector/history").json()["events"]
    assert events[0]["action"] == "version.registered"
    assert events[0]["version"] == 2
    assert client.get("/v1/models/nope").status_code == 404


def test_openapi_docs_describe_the_predict_body(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/v1/models/{name}/predict"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"]["required"] == ["instances"]
    assert "/v2/models/{name}/infer" in spec["paths"]

"""Who may call what: the scope matrix over every route, 401 vs 403, bindings, revocation."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from tests.conftest import records
from tests.serving.conftest import make_key

from shipyard.access import KeyStore
from shipyard.app import create_app
from shipyard.core import Settings
from shipyard.registry import Registry

SCOPES = ("predict", "read", "write", "admin")


@pytest.fixture
def tokens(served_settings: Settings) -> dict[str, str]:
    return {scope: make_key(served_settings, scope) for scope in SCOPES}


@pytest.fixture
def anonymous(served_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(served_settings), raise_server_exceptions=False) as client:
        yield client


def _routes(sample: pd.DataFrame) -> list[tuple[str, str, Any, set[str]]]:
    record = records(sample.iloc[:1])[0]
    tensor = [
        {
            "name": k,
            "shape": [1],
            "datatype": "BYTES" if isinstance(v, str) else "FP64",
            "data": [v],
        }
        for k, v in record.items()
    ]
    return [
        (
            "POST",
            "/v1/models/fraud-detector/predict",
            {"instances": [record]},
            {"predict", "admin"},
        ),
        (
            "POST",
            "/v1/models/fraud-detector/versions/2/predict",
            {"instances": [record]},
            {"predict", "admin"},
        ),
        ("POST", "/v2/models/fraud-detector/infer", {"inputs": tensor}, {"predict", "admin"}),
        ("GET", "/v2/models/fraud-detector", None, {"predict", "read", "write", "admin"}),
        ("GET", "/v2/models/fraud-detector/ready", None, {"predict", "read", "write", "admin"}),
        (
            "POST",
            "/v1/feedback",
            {"prediction_id": "0" * 32, "label": 1},
            {"predict", "write", "admin"},
        ),
        ("GET", "/v1/models", None, {"read", "write", "admin"}),
        ("GET", "/v1/models/fraud-detector/versions/1", None, {"read", "write", "admin"}),
        ("GET", "/v1/models/fraud-detector/deployment", None, {"read", "write", "admin"}),
        ("GET", "/v1/serving", None, {"read", "write", "admin"}),
        ("PUT", "/v1/models/fraud-detector/aliases/staging", {"version": 2}, {"write", "admin"}),
        ("POST", "/v1/models/fraud-detector/deployment", {"version": 1}, {"write", "admin"}),
        ("GET", "/v1/keys", None, {"admin"}),
        ("POST", "/v1/keys", {"scope": "read"}, {"admin"}),
    ]


def test_every_route_admits_exactly_its_scopes(
    anonymous: TestClient, tokens: dict[str, str], fraud_sample: pd.DataFrame
) -> None:
    failures = []
    for method, path, body, allowed in _routes(fraud_sample):
        for scope in SCOPES:
            headers = {"Authorization": f"Bearer {tokens[scope]}"}
            status = anonymous.request(method, path, json=body, headers=headers).status_code
            ok = status < 400
            if ok != (scope in allowed) or (not ok and status != 403):
                failures.append(f"{method} {path} with {scope}: {status}")
        status = anonymous.request(method, path, json=body).status_code
        if status != 401:
            failures.append(f"{method} {path} without a key: {status}")
    assert failures == []


@pytest.mark.parametrize(
    "path", ["/v2/health/live", "/v2/health/ready", "/v2", "/metrics", "/docs", "/openapi.json"]
)
def test_health_metrics_and_docs_need_no_key(anonymous: TestClient, path: str) -> None:
    assert anonymous.get(path).status_code == 200


def test_401_says_how_to_send_a_key_and_403_which_scope_is_missing(
    anonymous: TestClient, tokens: dict[str, str]
) -> None:
    missing = anonymous.get("/v1/models")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="shipyard"'
    assert "Authorization: Bearer <key>" in missing.json()["error"]["message"]
    assert anonymous.get("/v1/models", headers={"Authorization": "Basic abc"}).status_code == 401
    assert (
        anonymous.get("/v1/models", headers={"Authorization": "Bearer sy_nope"}).status_code == 401
    )
    forbidden = anonymous.get("/v1/keys", headers={"Authorization": f"Bearer {tokens['read']}"})
    assert forbidden.status_code == 403
    assert "this call needs admin" in forbidden.json()["error"]["message"]


def test_x_api_key_header_works_too(anonymous: TestClient, tokens: dict[str, str]) -> None:
    assert anonymous.get("/v1/models", headers={"X-API-Key": tokens["read"]}).status_code == 200


def test_a_key_bound_to_a_model_cannot_score_another(
    served_settings: Settings, anonymous: TestClient, fraud_model: Any, fraud_sample: pd.DataFrame
) -> None:
    with Registry.from_settings(served_settings) as registry:
        registry.register(fraud_model, name="churn", sample=fraud_sample, aliases=["production"])
    token = make_key(served_settings, "predict", model="fraud-detector")
    headers = {"Authorization": f"Bearer {token}"}
    body = {"instances": records(fraud_sample.iloc[:1])}
    assert (
        anonymous.post("/v1/models/fraud-detector/predict", json=body, headers=headers).status_code
        == 200
    )
    refused = anonymous.post("/v1/models/churn/predict", json=body, headers=headers)
    assert refused.status_code == 403
    assert "bound to model 'fraud-detector'" in refused.json()["error"]["message"]


def test_a_revoked_key_is_refused_once_the_keys_are_next_read(
    served_settings: Settings, fraud_sample: pd.DataFrame
) -> None:
    settings = served_settings.model_copy(update={"refresh_seconds": 0.2})
    token = make_key(settings, "predict")
    headers = {"Authorization": f"Bearer {token}"}
    body = {"instances": records(fraud_sample.iloc[:1])}
    with TestClient(create_app(settings)) as client:
        assert (
            client.post("/v1/models/fraud-detector/predict", json=body, headers=headers).status_code
            == 200
        )
        with Registry.from_settings(settings) as registry:
            KeyStore(registry.database).revoke(token.split("_")[1])
        # the server re-reads keys every 0.2 s: ask until it refuses, by a deadline far beyond
        # that (no sleep long enough to hope the refresh came)
        deadline = time.monotonic() + 10
        while True:
            answer = client.post("/v1/models/fraud-detector/predict", json=body, headers=headers)
            if answer.status_code != 200 or time.monotonic() > deadline:
                break
            time.sleep(0.02)
    assert answer.status_code == 401, answer.text
    assert "was revoked" in answer.json()["error"]["message"]


def test_admins_manage_keys_over_http(client: TestClient, fraud_sample: pd.DataFrame) -> None:
    created = client.post(
        "/v1/keys",
        json={"scope": "predict", "model": "fraud-detector", "rate": "50/s", "name": "pos"},
    )
    assert created.status_code == 201
    token, key = created.json()["token"], created.json()["key"]
    assert key["rate_per_second"] == 50
    assert key["burst"] == 50
    listed = client.get("/v1/keys").json()["keys"]
    assert key["id"] in {k["id"] for k in listed}
    assert all("token" not in k and "secret" not in str(k) for k in listed)
    body = {"instances": records(fraud_sample.iloc[:1])}
    assert (
        client.post(
            "/v1/models/fraud-detector/predict",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        ).status_code
        == 200
    )
    assert client.delete(f"/v1/keys/{key['id']}").json()["key"]["revoked_at"] is not None
    bad = client.post("/v1/keys", json={"scope": "root"})
    assert bad.status_code == 400
    assert (
        "body.scope: Input should be 'predict', 'read', 'write' or 'admin'"
        in (bad.json()["error"]["message"])
    )


def test_auth_off_lets_everyone_in_and_says_so_loudly(
    served_settings: Settings, fraud_sample: pd.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    settings = served_settings.model_copy(update={"auth": "off"})
    with (
        caplog.at_level(logging.WARNING, logger="shipyard"),
        TestClient(create_app(settings)) as client,
    ):
        assert client.get("/v1/keys").status_code == 200
        body = {"instances": records(fraud_sample.iloc[:1])}
        assert client.post("/v1/models/fraud-detector/predict", json=body).status_code == 200
    assert "AUTHENTICATION IS OFF" in caplog.text

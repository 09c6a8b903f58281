"""Bad input, as a fuzzer and an attacker sent it: each of these answered 500 before. Now each
is a 4xx in the one error shape, naming what was wrong."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from tests.conftest import records

from shipyard.app import create_app
from shipyard.core import Settings

BIG = 2**70
HUGE_PATH = 2**63


@pytest.fixture
def client(
    sqlite_settings: Settings, fraud_model: Any, fraud_sample: pd.DataFrame
) -> Iterator[TestClient]:
    """An admin-keyed client on SQLite (these are about the HTTP layer, not the database)."""
    from tests.serving.conftest import make_key

    from shipyard.registry import Registry

    with Registry.from_settings(sqlite_settings) as registry:
        registry.register(
            fraud_model, name="fraud-detector", sample=fraud_sample, aliases=["production"]
        )
        rule_model = registry.get_model("fraud-detector").name
    assert rule_model == "fraud-detector"
    token = make_key(sqlite_settings, "admin")
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(
        create_app(sqlite_settings), raise_server_exceptions=False, headers=headers
    ) as c:
        yield c


JSON = {"Content-Type": "application/json"}
DEEP = b"[" * 10_000 + b"]" * 10_000

# (method, path, raw body, statuses it may answer)
RAW_CASES = [
    ("POST", "/v1/keys", b"{bad", {400}),
    ("POST", "/v1/keys", b'{"scope": "read", "rate": NaN}', {400}),
    ("POST", "/v1/keys", b'{"scope": "read", "rate": Infinity}', {400}),
    ("POST", "/v1/keys", b'{"scope": "read", "burst": -Infinity}', {400}),
    ("POST", "/v1/keys", b'{"scope": "read", "rate": 1e308}', {400}),
    ("POST", "/v1/keys", b'{"scope": "read", "rate": 1e20}', {400}),
    ("POST", "/v1/keys", b'{"scope": "read", "rate": "abc"}', {400}),
    ("POST", "/v1/keys", b'{"scope": "read", "rate": [1]}', {400}),
    ("POST", "/v1/keys", b'{"scope": "read", "burst": 1e308}', {400}),
    ("POST", "/v1/keys", b'{"scope": "read", "rate": "1/s", "burst": "x"}', {400}),
    ("POST", "/v1/keys", b'{"scope": "read", "name": "\xff\xfe"}', {400}),
    ("POST", "/v1/keys", b'{"scope": "read", "name": "a\\u0000b"}', {400}),
    ("POST", "/v1/keys", b'{"scope": "read", "name": "\\ud800"}', {400}),
    ("POST", "/v1/keys", b'{"scope": "read", "scope": "admin"}', {400}),
    ("POST", "/v1/keys", b'{"scope": "read", "burst": ' + b"9" * 5000 + b"}", {400}),
    ("POST", "/v1/keys", DEEP, {400}),
    ("POST", "/v1/models/fraud-detector/deployment", DEEP, {400}),
    ("PUT", "/v1/models/fraud-detector/aliases/staging", DEEP, {400}),
    ("POST", "/v1/models/fraud-detector/rollback", DEEP, {400}),
    ("POST", "/v1/models/fraud-detector/alert-rules", DEEP, {400}),
    ("POST", "/v1/feedback", DEEP, {400}),
    ("POST", "/v1/models/fraud-detector/predict", DEEP, {400}),
    ("POST", "/v2/models/fraud-detector/infer", DEEP, {400}),
    ("POST", "/v1/models/fraud-detector/deployment", f'{{"version": {BIG}}}'.encode(), {400}),
    ("PUT", "/v1/models/fraud-detector/aliases/staging", f'{{"version": {BIG}}}'.encode(), {400}),
    ("POST", "/v1/models/fraud-detector/deployment", b'{"version": 1, "canary": 1e400}', {400}),
    ("POST", "/v1/models/fraud-detector/deployment", b'{"version": true}', {400}),
]


@pytest.mark.parametrize(("method", "path", "body", "statuses"), RAW_CASES)
def test_malformed_bodies_are_refused_with_the_error_shape(
    client: TestClient, method: str, path: str, body: bytes, statuses: set[int]
) -> None:
    answer = client.request(method, path, content=body, headers=JSON)
    assert answer.status_code in statuses, answer.text[:500]
    error = answer.json()["error"]
    message = error if path.startswith("/v2") else error["message"]
    assert message


@pytest.mark.parametrize(
    "path",
    [
        f"/v1/models/fraud-detector/versions/{HUGE_PATH}/predict",
        f"/v2/models/fraud-detector/versions/{HUGE_PATH}/infer",
        f"/v2/models/fraud-detector/versions/{HUGE_PATH}/ready",
        f"/v2/models/fraud-detector/versions/{HUGE_PATH}",
        f"/v1/models/fraud-detector/versions/{HUGE_PATH}",
        f"/v1/alert-rules/{HUGE_PATH}",
        "/v1/models/fraud-detector/versions/" + "9" * 5000,
        "/v1/models/fraud-detector/monitoring?window=99999999999d",
        "/v1/models/fraud-detector/monitoring?periods=" + "9" * 40,
        "/v1/models/fraud-detector/history?limit=" + "9" * 40,
        "/v1/runs?experiment=%00",
        "/v1/alerts?model=%00",
        "/v1/models/%00",
    ],
)
def test_out_of_range_numbers_and_control_characters_in_paths_and_queries_are_4xx(
    client: TestClient, path: str
) -> None:
    method = "POST" if path.endswith(("predict", "infer")) else "GET"
    if path.startswith("/v1/alert-rules"):
        method = "DELETE"
    answer = client.request(method, path, json={"instances": [{}]} if method == "POST" else None)
    assert 400 <= answer.status_code < 500, answer.text[:300]
    assert "error" in answer.json()


def test_a_rule_over_an_absurd_window_is_refused(client: TestClient) -> None:
    answer = client.post(
        "/v1/models/fraud-detector/alert-rules",
        json={"expression": "accuracy < 0.9 over 99999999999d"},
    )
    assert answer.status_code == 422
    assert "longer than ten years" in answer.json()["error"]["message"]


@pytest.mark.parametrize("datatype", [{"x": 1}, ["FP64"], 7, None])
def test_a_v2_datatype_that_is_not_a_string_is_a_400(client: TestClient, datatype: Any) -> None:
    body = {
        "inputs": [
            {"name": "transaction_amount", "shape": [1], "datatype": datatype, "data": [1.0]}
        ]
    }
    answer = client.post("/v2/models/fraud-detector/infer", json=body)
    assert answer.status_code == 400
    assert "is not a V2 datatype" in answer.json()["error"]


def test_every_route_has_a_body_limit(client: TestClient) -> None:
    big = b'{"scope": "read", "name": "' + b"x" * 100_000 + b'"}'
    answer = client.post("/v1/keys", content=big, headers=JSON)
    assert answer.status_code == 413
    assert "over the limit of 65536 bytes" in answer.json()["error"]["message"]


@pytest.mark.parametrize(
    ("content_type", "status"),
    [("text/plain", 415), ("application/x-www-form-urlencoded", 415), ("application/json", 201)],
)
def test_bodies_must_be_sent_as_json(client: TestClient, content_type: str, status: int) -> None:
    answer = client.post(
        "/v1/keys", content=b'{"scope": "read"}', headers={"Content-Type": content_type}
    )
    assert answer.status_code == status
    if status == 415:
        assert answer.json()["error"]["type"] == "UnsupportedMediaType"
        assert "application/json" in answer.json()["error"]["message"]


def test_the_routers_own_404_and_405_use_the_error_shape_and_a_true_allow(
    client: TestClient,
) -> None:
    missing = client.get("/v1/nothing-here")
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "NotFound"
    wrong = client.patch("/v1/models/fraud-detector/deployment")
    assert wrong.status_code == 405
    assert wrong.json()["error"]["type"] == "MethodNotAllowed"
    assert set(wrong.headers["allow"].split(", ")) == {"GET", "POST", "DELETE"}
    keys = client.put("/v1/keys")
    assert set(keys.headers["allow"].split(", ")) == {"GET", "POST"}


def test_records_the_model_answers_with_nan_or_infinity_get_no_label(
    client: TestClient, fraud_sample: pd.DataFrame
) -> None:
    rows = records(fraud_sample.iloc[:3])
    extreme = {k: (-1e308 if isinstance(v, float) else v) for k, v in rows[1].items()}
    answer = client.post(
        "/v1/models/fraud-detector/predict", json={"instances": [rows[0], extreme, rows[2]]}
    )
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["type"] == "ModelOutputInvalid"
    assert "record(s) 1" in error["message"]
    assert error["details"] == [
        {"loc": ["instances", 1], "msg": "the model's output is not a finite number"}
    ]
    alone = client.post("/v1/models/fraud-detector/predict", json={"instances": [rows[0]]})
    assert alone.status_code == 200


@pytest.mark.parametrize("body", [b"[1, 2]", b'"abc"', b"5", b"null", b"true"])
@pytest.mark.parametrize(
    "path", ["/v2/models/fraud-detector/infer", "/v1/models/fraud-detector/predict"]
)
def test_a_scoring_body_that_is_not_an_object_is_a_400(
    client: TestClient, path: str, body: bytes
) -> None:
    answer = client.post(path, content=body, headers=JSON)
    assert answer.status_code == 400, answer.text


def test_labels_and_ids_out_of_any_range_are_refused_or_reported_not_a_500(
    client: TestClient, fraud_sample: pd.DataFrame
) -> None:
    answer = client.post(
        "/v1/models/fraud-detector/predict", json={"instances": records(fraud_sample.iloc[:1])}
    )
    pid = answer.json()["prediction_ids"][0]
    huge = client.post(
        "/v1/feedback", content=f'{{"prediction_id": "{pid}", "label": {2**70}}}', headers=JSON
    )
    assert huge.status_code == 400
    assert "64-bit range" in huge.json()["error"]["message"]
    odd_ids = ["f" * 32, "0x" + "0" * 30, "-" + "1" * 31, "0_" + "1" * 30, "\uff11" * 32, "A" * 32]
    reported = client.post("/v1/feedback", json=[{"prediction_id": i, "label": 1} for i in odd_ids])
    assert reported.status_code == 200
    assert {u["reason"] for u in reported.json()["unknown"]} == {
        "not a shipyard prediction id (32 hex digits), nor one a device uploaded"
    }


def test_v2_outputs_that_do_not_exist_are_refused_before_anything_is_scored_or_logged(
    client: TestClient, fraud_sample: pd.DataFrame
) -> None:
    writer = client.app.state.services.writer  # type: ignore[attr-defined]
    record = records(fraud_sample.iloc[:1])[0]
    inputs = [
        {
            "name": k,
            "shape": [1],
            "datatype": "BYTES" if isinstance(v, str) else "FP64",
            "data": [v],
        }
        for k, v in record.items()
    ]
    before = writer.pending_ids()
    for outputs in ([{"name": "nope"}], "x", [{"nom": "score"}]):
        answer = client.post(
            "/v2/models/fraud-detector/infer", json={"inputs": inputs, "outputs": outputs}
        )
        assert answer.status_code == 400, answer.text
    assert writer.pending_ids() == before
    wanted = client.post(
        "/v2/models/fraud-detector/infer", json={"inputs": inputs, "outputs": [{"name": "score"}]}
    )
    assert [o["name"] for o in wanted.json()["outputs"]] == ["score"]

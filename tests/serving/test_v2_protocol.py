"""The Open Inference Protocol (KServe V2) REST shapes, as V2 clients send and expect them."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from tests.conftest import records

from shipyard.serving._oip import DATATYPES


def _v2_type(series: pd.Series) -> str:
    if pd.api.types.is_float_dtype(series.dtype):
        return "FP64"
    if pd.api.types.is_integer_dtype(series.dtype):
        return "INT64"
    return "BYTES"


def _column_inputs(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """One tensor per column, as Triton / KServe clients send a frame."""
    return [
        {
            "name": name,
            "shape": [len(frame)],
            "datatype": _v2_type(frame[name]),
            "data": frame[name].astype(object).where(frame[name].notna(), None).tolist(),
        }
        for name in frame.columns
    ]


def test_server_metadata_and_health(client: TestClient) -> None:
    meta = client.get("/v2").json()
    assert meta["name"] == "shipyard"
    assert isinstance(meta["version"], str)
    assert meta["extensions"] == ["binary_tensor_data"]
    assert client.get("/v2/").json() == meta  # not a redirect
    assert client.get("/v2/health/live").json() == {"live": True}
    ready = client.get("/v2/health/ready")
    assert ready.status_code == 200
    assert ready.json() == {"ready": True}


def test_model_metadata_lists_versions_inputs_and_outputs(
    client: TestClient, fraud_sample: pd.DataFrame
) -> None:
    meta = client.get("/v2/models/fraud-detector").json()
    assert meta["name"] == "fraud-detector"
    assert meta["versions"] == ["1", "2"]
    assert meta["platform"] == "shipyard_onnxruntime"
    inputs = {i["name"]: i for i in meta["inputs"]}
    assert list(inputs) == list(fraud_sample.columns)
    assert inputs["merchant_category"] == {
        "name": "merchant_category",
        "datatype": "BYTES",
        "shape": [-1],
    }
    assert inputs["transaction_amount"]["datatype"] == "FP64"
    assert [o["name"] for o in meta["outputs"]] == ["score", "label", "prediction_id"]
    pinned = client.get("/v2/models/fraud-detector/versions/2")
    assert pinned.status_code == 200


def test_model_readiness(client: TestClient) -> None:
    assert client.get("/v2/models/fraud-detector/ready").json() == {
        "name": "fraud-detector",
        "ready": True,
    }
    assert client.get("/v2/models/fraud-detector/versions/2/ready").json()["ready"] is True
    assert client.get("/v2/models/nope/ready").status_code == 404


def test_infer_with_one_tensor_per_column(
    client: TestClient, fraud_model: Any, fraud_sample: pd.DataFrame
) -> None:
    rows = fraud_sample.iloc[:5]
    response = client.post(
        "/v2/models/fraud-detector/infer", json={"id": "req-42", "inputs": _column_inputs(rows)}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["model_name"] == "fraud-detector"
    assert body["model_version"] == "1"
    assert body["id"] == "req-42"
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["score"]["datatype"] == "FP64"
    assert outputs["score"]["shape"] == [5]
    np.testing.assert_allclose(
        outputs["score"]["data"], fraud_model.predict_proba(rows)[:, 1], atol=1e-5
    )
    assert outputs["label"]["datatype"] == "INT64"
    assert outputs["label"]["data"] == [int(s >= 0.3) for s in outputs["score"]["data"]]
    assert outputs["prediction_id"]["datatype"] == "BYTES"
    assert len(outputs["prediction_id"]["data"]) == 5
    assert body["parameters"] == {"threshold": 0.3}


def test_infer_accepts_column_tensors_of_shape_n_by_1_and_nested_data(
    client: TestClient, fraud_model: Any, fraud_sample: pd.DataFrame
) -> None:
    rows = fraud_sample.iloc[:3]
    inputs = _column_inputs(rows)
    for tensor in inputs:
        tensor["shape"] = [3, 1]
        tensor["data"] = [[v] for v in tensor["data"]]
    body = client.post("/v2/models/fraud-detector/versions/2/infer", json={"inputs": inputs}).json()
    assert body["model_version"] == "2"
    scores = next(o for o in body["outputs"] if o["name"] == "score")["data"]
    np.testing.assert_allclose(scores, fraud_model.predict_proba(rows)[:, 1], atol=1e-5)


def test_infer_accepts_one_rows_by_features_tensor(
    client: TestClient, fraud_model: Any, fraud_sample: pd.DataFrame
) -> None:
    numeric = fraud_sample.drop(columns=["merchant_category"]).columns
    rows = fraud_sample.iloc[:4]
    # a model over mixed types cannot take one typed tensor; a BYTES tensor is refused by datatype
    flat = rows[numeric].fillna(0).to_numpy().ravel().tolist()
    response = client.post(
        "/v2/models/fraud-detector/infer",
        json={
            "inputs": [{"name": "X", "shape": [4, len(numeric)], "datatype": "FP64", "data": flat}]
        },
    )
    assert response.status_code == 400
    assert f"has {len(numeric)} columns but the model takes 11" in response.json()["error"]


def test_requested_outputs_limit_the_answer(client: TestClient, fraud_sample: pd.DataFrame) -> None:
    body = client.post(
        "/v2/models/fraud-detector/infer",
        json={"inputs": _column_inputs(fraud_sample.iloc[:2]), "outputs": [{"name": "score"}]},
    ).json()
    assert [o["name"] for o in body["outputs"]] == ["score"]
    unknown = client.post(
        "/v2/models/fraud-detector/infer",
        json={"inputs": _column_inputs(fraud_sample.iloc[:2]), "outputs": [{"name": "logits"}]},
    )
    assert unknown.status_code == 400
    assert "unknown output(s) 'logits'" in unknown.json()["error"]


def _mutated(frame: pd.DataFrame, column: str, **changes: Any) -> list[dict[str, Any]]:
    inputs = _column_inputs(frame)
    for tensor in inputs:
        if tensor["name"] == column:
            tensor.update(changes)
    return inputs


@pytest.mark.parametrize(
    ("mutate", "status", "fragment"),
    [
        (
            lambda f: _mutated(f, "hour_of_day", datatype="BYTES"),
            422,
            "input 'hour_of_day' is BYTES but value [0] is",
        ),
        (
            lambda f: _mutated(f, "hour_of_day", shape=[5]),
            400,
            "has shape [5] (5 values) but 2 values in data",
        ),
        (lambda f: _mutated(f, "hour_of_day", datatype="FLOAT"), 400, "is not a V2 datatype"),
        (lambda f: _mutated(f, "hour_of_day", name="hour"), 400, "unknown input 'hour'"),
        (
            lambda f: [t for t in _column_inputs(f) if t["name"] != "customer_age"],
            422,
            "missing input(s) 'customer_age'",
        ),
        (
            lambda f: _mutated(f, "customer_age", data=["old", 30.0]),
            422,
            "input 'customer_age' is FP64 but value [0] is 'old'",
        ),
        (
            lambda f: _mutated(f, "hour_of_day", datatype="FP64", data=[1.5, 2.0]),
            422,
            "inputs.hour_of_day[0]: must be an integer, got number 1.5",
        ),
        (
            lambda f: _mutated(f, "hour_of_day", shape=[2, 2], data=[1, 2, 3, 4]),
            400,
            "must have shape [rows] or [rows, 1]",
        ),
        (lambda f: [{"name": "x"}], 400, "lacks shape, datatype, data"),
    ],
)
def test_bad_tensors_are_4xx_in_the_v2_error_shape(
    client: TestClient, fraud_sample: pd.DataFrame, mutate: Any, status: int, fragment: str
) -> None:
    response = client.post(
        "/v2/models/fraud-detector/infer", json={"inputs": mutate(fraud_sample.iloc[:2])}
    )
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"error"}
    assert isinstance(body["error"], str)
    assert fragment in body["error"]


@pytest.mark.parametrize("body", [b"{}", b'{"inputs": []}', b'{"inputs": 3}', b"nope"])
def test_requests_without_inputs_are_400(client: TestClient, body: bytes) -> None:
    response = client.post(
        "/v2/models/fraud-detector/infer",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert isinstance(response.json()["error"], str)


def test_unknown_model_is_404_in_the_v2_error_shape(
    client: TestClient, fraud_sample: pd.DataFrame
) -> None:
    response = client.post(
        "/v2/models/nope/infer", json={"inputs": _column_inputs(fraud_sample.iloc[:1])}
    )
    assert response.status_code == 404
    assert "no model named 'nope'" in response.json()["error"]


def test_every_signature_type_has_a_v2_datatype() -> None:
    assert set(DATATYPES.values()) == {"FP64", "FP32", "INT64", "INT32", "BOOL", "BYTES"}


def test_v1_and_v2_agree_on_the_same_rows(client: TestClient, fraud_sample: pd.DataFrame) -> None:
    rows = fraud_sample.iloc[10:20]
    v1 = client.post("/v1/models/fraud-detector/predict", json={"instances": records(rows)}).json()
    v2 = client.post(
        "/v2/models/fraud-detector/infer", json={"inputs": _column_inputs(rows)}
    ).json()
    v2_scores = next(o for o in v2["outputs"] if o["name"] == "score")["data"]
    assert [p["score"] for p in v1["predictions"]] == pytest.approx(v2_scores, abs=1e-12)


@pytest.mark.parametrize(
    ("datatype", "data", "says"),
    [
        ("UINT8", [300], "is UINT8 but value [0] is 300"),
        ("UINT8", [-5], "is UINT8 but value [0] is -5"),
        ("INT64", [17.99], "is INT64 but value [0] is 17.99"),
        ("INT32", [2**40], "is INT32"),
        ("FP32", [1e300], "is FP32"),
        ("FP64", [True], "is FP64"),
        ("FP64", ["1.5"], "is FP64"),
        ("BOOL", [1], "is BOOL"),
        ("BYTES", [5], "is BYTES"),
    ],
)
def test_values_must_be_what_their_declared_datatype_says(
    client: TestClient, fraud_sample: pd.DataFrame, datatype: str, data: list[Any], says: str
) -> None:
    inputs = _column_inputs(fraud_sample.iloc[:1])
    inputs[0] = {"name": inputs[0]["name"], "shape": [1], "datatype": datatype, "data": data}
    answer = client.post("/v2/models/fraud-detector/infer", json={"inputs": inputs})
    assert answer.status_code in (400, 422)
    assert says in answer.json()["error"]


def test_an_input_given_twice_is_refused_not_silently_overwritten(
    client: TestClient, fraud_sample: pd.DataFrame
) -> None:
    inputs = _column_inputs(fraud_sample.iloc[:1])
    answer = client.post("/v2/models/fraud-detector/infer", json={"inputs": [*inputs, inputs[0]]})
    assert answer.status_code == 400
    assert "is given twice" in answer.json()["error"]


@pytest.mark.parametrize(("sent", "echoed"), [("req-7", "req-7"), ("", ""), (None, None)])
def test_the_request_id_is_echoed_exactly_as_given(
    client: TestClient, fraud_sample: pd.DataFrame, sent: str | None, echoed: str | None
) -> None:
    body: dict[str, Any] = {"inputs": _column_inputs(fraud_sample.iloc[:1])}
    if sent is not None:
        body["id"] = sent
    answer = client.post("/v2/models/fraud-detector/infer", json=body).json()
    assert answer.get("id") == echoed
    assert ("id" in answer) is (sent is not None)


@pytest.mark.parametrize(
    ("extra", "says"),
    [({"outputs": []}, "non-empty list"), ({"parameters": [1]}, "'parameters' must be an object")],
)
def test_empty_outputs_and_odd_parameters_are_refused(
    client: TestClient, fraud_sample: pd.DataFrame, extra: dict[str, Any], says: str
) -> None:
    body = {"inputs": _column_inputs(fraud_sample.iloc[:1]), **extra}
    answer = client.post("/v2/models/fraud-detector/infer", json=body)
    assert answer.status_code == 400
    assert says in answer.json()["error"]


def test_a_missing_versions_readiness_answers_the_error_shape(client: TestClient) -> None:
    answer = client.get("/v2/models/fraud-detector/versions/99/ready")
    assert answer.status_code == 404
    assert set(answer.json()) == {"error"}

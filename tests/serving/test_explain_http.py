"""Explanations over HTTP: `"explain": true` on /v1, `parameters.explain` on /v2; each
answer's contributions add up to the model's output; a request that does not ask gets none;
bad flags and too many rows are 4xx with a message."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from scipy.special import logit
from tests.conftest import records
from tests.serving.test_v2_protocol import _column_inputs

from shipyard.demo import FEATURES


def test_v1_answers_each_prediction_with_its_explanation(
    client: TestClient, fraud_model: Any, fraud_sample: pd.DataFrame
) -> None:
    rows = fraud_sample.iloc[:12]
    response = client.post(
        "/v1/models/fraud-detector/predict", json={"instances": records(rows), "explain": True}
    )
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    native = logit(fraud_model.predict_proba(rows)[:, 1])
    for prediction, expected in zip(predictions, native, strict=True):
        explained = prediction["explanation"]
        assert explained["method"] == "linear"
        assert explained["space"] == "log-odds"
        assert explained["class"] == 1
        assert list(explained["contributions"]) == list(FEATURES)
        total = explained["base"] + sum(explained["contributions"].values())
        assert total == pytest.approx(expected, abs=1e-6)
        assert explained["output"] == pytest.approx(expected, abs=1e-6)
        # the served score (the float32 graph) is the same answer, to float32's precision
        assert logit(prediction["score"]) == pytest.approx(total, abs=1e-4)
        assert "error" not in explained  # an exact method has no sampling error


def test_a_request_that_does_not_ask_gets_no_explanation(
    client: TestClient, fraud_sample: pd.DataFrame
) -> None:
    for body in ({"instances": records(fraud_sample.iloc[:3])},
                 {"instances": records(fraud_sample.iloc[:3]), "explain": False}):  # fmt: skip
        response = client.post("/v1/models/fraud-detector/predict", json=body)
        assert response.status_code == 200
        assert all("explanation" not in p for p in response.json()["predictions"])


def test_bad_explain_flags_and_too_many_rows_are_refused_with_a_message(
    client: TestClient, fraud_sample: pd.DataFrame
) -> None:
    one = records(fraud_sample.iloc[:1])
    wrong = client.post(
        "/v1/models/fraud-detector/predict", json={"instances": one, "explain": "yes"}
    )
    assert wrong.status_code in (400, 422)
    assert "'explain' must be true or false" in wrong.text

    many = records(fraud_sample.iloc[:101])
    refused = client.post(
        "/v1/models/fraud-detector/predict", json={"instances": many, "explain": True}
    )
    assert refused.status_code == 413
    assert "up to 100 records" in refused.text
    assert "SHIPYARD_EXPLAIN_MAX_RECORDS" in refused.text
    # the same rows without explanations are scored as ever
    assert (
        client.post("/v1/models/fraud-detector/predict", json={"instances": many}).status_code
        == 200
    )

    v2 = client.post(
        "/v2/models/fraud-detector/infer",
        json={**_v2_body(fraud_sample.iloc[:1]), "parameters": {"explain": 1}},
    )
    assert v2.status_code in (400, 422)
    assert "'parameters.explain' must be true or false" in v2.text


def _v2_body(frame: pd.DataFrame) -> dict[str, Any]:
    return {"inputs": _column_inputs(frame[list(FEATURES)])}


def test_v2_answers_contributions_as_tensors(
    client: TestClient, fraud_model: Any, fraud_sample: pd.DataFrame
) -> None:
    rows = fraud_sample.iloc[:5]
    body = {**_v2_body(rows), "parameters": {"explain": True}}
    response = client.post("/v2/models/fraud-detector/infer", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert answer["parameters"]["explanation_method"] == "linear"
    assert answer["parameters"]["explanation_space"] == "log-odds"
    assert outputs["explained_features"]["data"] == list(FEATURES)
    assert outputs["contributions"]["shape"] == [5, len(FEATURES)]
    contributions = np.array(outputs["contributions"]["data"]).reshape(5, len(FEATURES))
    base = np.array(outputs["base_value"]["data"])
    np.testing.assert_allclose(
        base + contributions.sum(axis=1), logit(fraud_model.predict_proba(rows)[:, 1]), atol=1e-6
    )
    assert "contribution_errors" not in outputs

    # asked-for outputs may name the explanation's, and only when explaining
    some = {**body, "outputs": [{"name": "score"}, {"name": "contributions"}]}
    picked = client.post("/v2/models/fraud-detector/infer", json=some)
    assert [o["name"] for o in picked.json()["outputs"]] == ["score", "contributions"]
    unasked = client.post(
        "/v2/models/fraud-detector/infer",
        json={**_v2_body(rows), "outputs": [{"name": "contributions"}]},
    )
    assert unasked.status_code in (400, 422)
    assert "unknown output(s) 'contributions'" in unasked.text

"""`POST /v1/feedback` checks each label against the output of the version that made the
prediction: a class the model knows, a number for a regressor. A bad label is a 422 naming it
and nothing of the request is stored; a label that replaces a different one is audited."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sklearn.linear_model import LinearRegression, LogisticRegression

from shipyard.app import create_app
from shipyard.core import Settings
from shipyard.logstore import LogReader
from shipyard.registry import Registry


@pytest.fixture
def labelled(settings: Settings) -> Iterator[TestClient]:
    """A three-class model with integer classes (0, 1, 2) and a regressor, both serving."""
    rng = np.random.default_rng(0)
    x = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300)})
    classes = np.digitize(x["a"], [-0.5, 0.5])  # 0, 1, 2
    settings = settings.model_copy(update={"auth": "off"})
    with Registry.from_settings(settings) as registry:
        registry.register(
            LogisticRegression(max_iter=500).fit(x, classes), name="tiers", sample=x,
            aliases=["production"],
        )  # fmt: skip
        registry.register(
            LinearRegression().fit(x, 3 * x["a"] + x["b"]), name="spend", sample=x,
            aliases=["production"],
        )  # fmt: skip
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def _ids(client: TestClient, model: str, n: int = 3) -> list[str]:
    body = client.post(
        f"/v1/models/{model}/predict",
        json={"instances": [{"a": 0.1 * i, "b": 0.0} for i in range(n)]},
    ).json()
    ids: list[str] = body["prediction_ids"]
    return ids


def _stored(client: TestClient) -> dict[str, Any]:
    services = client.app.state.services  # type: ignore[attr-defined]
    services.writer.flush()
    table = LogReader(services.writer.store).labels()
    if table.num_rows == 0:
        return {}
    return dict(
        zip(
            table.column("prediction_id").to_pylist(),
            table.column("label").to_pylist(),
            strict=True,
        )
    )


def test_a_label_that_is_not_a_class_is_422_naming_it_and_nothing_is_stored(
    labelled: TestClient,
) -> None:
    ids = _ids(labelled, "tiers")
    response = labelled.post(
        "/v1/feedback",
        json=[
            {"prediction_id": ids[0], "label": 1},
            {"prediction_id": ids[1], "label": "two"},
            {"prediction_id": ids[2], "label": 7},
        ],
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert "2 label(s) do not fit their model" in error["message"]
    bad = {d["prediction_id"]: d for d in error["details"]}
    assert set(bad) == {ids[1], ids[2]}
    assert "'two' is not one of the model's classes ('0', '1', '2')" in bad[ids[1]]["msg"]
    assert bad[ids[1]]["loc"] == ["body", 1, "label"]
    assert _stored(labelled) == {}  # the good label of the same request was not kept either


def test_class_labels_are_stored_as_the_model_s_classes(labelled: TestClient) -> None:
    ids = _ids(labelled, "tiers")
    answer = labelled.post(
        "/v1/feedback",
        json=[
            {"prediction_id": ids[0], "label": 2},
            {"prediction_id": ids[1], "label": "1"},  # text of a class
            {"prediction_id": ids[2], "label": 0.0},  # an integral float
        ],
    )
    assert answer.status_code == 200, answer.text
    assert _stored(labelled) == {ids[0]: "2", ids[1]: "1", ids[2]: "0"}


@pytest.mark.parametrize(
    ("label", "fragment"),
    [
        ("abc", "'abc' is not a number"),
        (True, "not true/false"),
        ("inf", "finite number"),
    ],
)
def test_a_regressor_takes_numbers_only(labelled: TestClient, label: Any, fragment: str) -> None:
    ids = _ids(labelled, "spend", 1)
    response = labelled.post("/v1/feedback", json={"prediction_id": ids[0], "label": label})
    assert response.status_code == 422
    assert fragment in response.json()["error"]["details"][0]["msg"]
    assert "spend:1 is a regression model" in response.json()["error"]["details"][0]["msg"]


def test_a_regressor_takes_a_number_or_a_number_as_text(labelled: TestClient) -> None:
    ids = _ids(labelled, "spend", 2)
    answer = labelled.post(
        "/v1/feedback",
        json=[{"prediction_id": ids[0], "label": 12.5}, {"prediction_id": ids[1], "label": " 7 "}],
    )
    assert answer.status_code == 200, answer.text
    assert _stored(labelled) == {ids[0]: "12.5", ids[1]: "7"}


def test_a_changed_label_is_an_audit_event_with_before_and_after(labelled: TestClient) -> None:
    ids = _ids(labelled, "tiers", 2)
    labelled.post("/v1/feedback", json=[{"prediction_id": i, "label": 1} for i in ids])
    _stored(labelled)  # the first labels reach the Parquet log
    again = labelled.post(
        "/v1/feedback",
        json=[{"prediction_id": ids[0], "label": 2}, {"prediction_id": ids[1], "label": "1"}],
    )
    assert again.status_code == 200
    history = labelled.get("/v1/models/tiers/history").json()
    changed = [e for e in history["events"] if e["action"] == "label.changed"]
    assert len(changed) == 1  # the unchanged label (1 sent again as "1") is not a change
    assert changed[0]["version"] == 1
    assert changed[0]["details"] == {
        "changed": 1,
        "labels": [{"prediction_id": ids[0], "before": "1", "after": "2"}],
    }

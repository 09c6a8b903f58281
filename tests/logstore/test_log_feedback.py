"""Ground truth: `parse_feedback` takes the shapes clients send, `record_feedback` stores labels
for ids that are (or may soon be) logged predictions and says why it refused the others."""

from __future__ import annotations

import time
from typing import Any

import pytest

from shipyard.core import new_id
from shipyard.core.errors import MalformedRequest
from shipyard.logstore import (
    LogReader,
    LogWriter,
    parse_feedback,
    record_feedback,
    resolve_feedback,
)
from shipyard.store import ArtifactStore
from tests.logstore._logs import DAY, NOON, log_scores, made_at

ID = "018f3a2b4c5d0123456789abcdef0123"


@pytest.mark.parametrize(
    "body",
    [
        {"prediction_id": ID, "label": 1},
        [{"prediction_id": ID, "label": 1}],
        {"feedback": [{"prediction_id": ID, "label": 1}]},
        {"feedback": {"prediction_id": ID, "label": 1}},
    ],
    ids=["one", "list", "wrapped-list", "wrapped-one"],
)
def test_parse_feedback_takes_one_label_a_list_or_a_wrapped_list(body: Any) -> None:
    assert parse_feedback(body) == [(ID, 1)]


def test_parse_feedback_keeps_order_and_label_types() -> None:
    body = [
        {"prediction_id": "a", "label": True},
        {"prediction_id": "b", "label": "fraud", "note": "extra keys are ignored"},
        {"prediction_id": "c", "label": 0.5},
    ]
    assert parse_feedback(body) == [("a", True), ("b", "fraud"), ("c", 0.5)]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], 'send {"prediction_id": "...", "label": ...}'),
        ({"feedback": []}, 'send {"prediction_id"'),
        ("label=1", 'send {"prediction_id"'),
        ([{"prediction_id": ID}], r"feedback\[0\] needs both 'prediction_id' and 'label'"),
        ([{"prediction_id": ID, "label": 1}, {"label": 1}], r"feedback\[1\] needs both"),
        ([{"prediction_id": ID, "label": 1}, "x"], r"feedback\[1\] needs both"),
        ([{"prediction_id": 7, "label": 1}], r"feedback\[0\]\.prediction_id must be a string"),
        ([{"prediction_id": ID, "label": None}], r"feedback\[0\]\.label must be a number"),
        ([{"prediction_id": ID, "label": [1]}], r"feedback\[0\]\.label must be a number"),
        ([{"prediction_id": ID, "label": {"y": 1}}], r"label must be a number, string or boolean"),
        ([{"prediction_id": ID, "label": 1}] * 10_001, "10001 labels .* over the limit of 10000"),
    ],
    ids=[
        "empty-list",
        "empty-wrapped",
        "text",
        "no-label",
        "second-without-id",
        "not-an-object",
        "id-not-string",
        "null-label",
        "list-label",
        "object-label",
        "too-many",
    ],
)
def test_parse_feedback_refuses_bad_bodies_saying_what_is_wrong(body: Any, message: str) -> None:
    with pytest.raises(MalformedRequest, match=message):
        parse_feedback(body)


def test_record_feedback_stores_labels_for_known_pending_and_fresh_ids_and_refuses_the_rest(
    writer: LogWriter, any_store: ArtifactStore
) -> None:
    in_parquet, in_spool, fresh = new_id(), new_id(), new_id()
    old = made_at(time.time() - DAY)  # long past the horizon, never logged
    future = made_at(time.time() + 3600)
    log_scores(writer, [in_parquet])
    writer.flush()
    log_scores(writer, [in_spool])
    pairs = [
        (in_parquet, 1),
        ("not-an-id", 1),
        (in_spool, True),
        (old, 0),
        (fresh, "fraud"),
        (future, 1),
        ("g" * 32, 1),
    ]
    resolved = resolve_feedback(pairs, writer, LogReader(any_store))
    assert resolved.models == {"fraud"}
    result = record_feedback(resolved, writer, key_id="key-3")

    assert result.accepted == [in_parquet, in_spool]
    assert result.pending == [fresh]
    not_an_id = "not a shipyard prediction id (32 hex digits)"
    assert result.unknown == [
        {"prediction_id": "not-an-id", "reason": not_an_id},
        {"prediction_id": old, "reason": "no logged prediction has this id"},
        {"prediction_id": future, "reason": "the id is from the future"},
        {"prediction_id": "g" * 32, "reason": not_an_id},
    ]
    assert result.to_dict() == {"accepted": 3, "pending": [fresh], "unknown": result.unknown}

    writer.flush()
    labels = LogReader(any_store).labels().to_pylist()
    assert [(r["prediction_id"], r["label"], r["key_id"]) for r in labels] == [
        (in_parquet, "1", "key-3"),
        (in_spool, "true", "key-3"),
        (fresh, "fraud", "key-3"),
    ]


@pytest.mark.parametrize(
    ("age", "horizon", "pending"), [(60.0, 30.0, False), (60.0, 120.0, True), (5.0, 30.0, True)]
)
def test_an_unknown_id_is_pending_only_while_younger_than_the_horizon(
    writer: LogWriter, any_store: ArtifactStore, age: float, horizon: float, pending: bool
) -> None:
    pid = made_at(time.time() - age)
    resolved = resolve_feedback([(pid, 1)], writer, LogReader(any_store), horizon=horizon)
    result = record_feedback(resolved, writer)
    assert (result.pending == [pid]) is pending
    assert (result.unknown == []) is pending
    assert (pid in writer.pending_ids()) is False  # a label is not a prediction


def test_each_label_is_resolved_to_the_model_of_its_prediction_in_spool_and_parquet(
    writer: LogWriter, any_store: ArtifactStore
) -> None:
    churn_written, fraud_spooled = new_id(), new_id()
    log_scores(writer, [churn_written], model="churn")
    writer.flush()
    log_scores(writer, [fraud_spooled], model="fraud")
    resolved = resolve_feedback(
        [(churn_written, 1), (fraud_spooled, 0), (new_id(), 1)], writer, LogReader(any_store)
    )
    assert [(i.prediction_id, i.model) for i in resolved.items][:2] == [
        (churn_written, "churn"),
        (fraud_spooled, "fraud"),
    ]
    assert resolved.items[2].model is None  # fresh, not logged anywhere yet: pending
    assert resolved.models == {"churn", "fraud"}


def test_a_key_bound_to_a_model_cannot_store_labels_whose_model_is_not_known_yet(
    writer: LogWriter, any_store: ArtifactStore
) -> None:
    mine, fresh = new_id(), new_id()
    log_scores(writer, [mine], model="fraud")
    resolved = resolve_feedback([(mine, 1), (fresh, 1)], writer, LogReader(any_store))
    result = record_feedback(resolved, writer, key_id="k", bound_to="fraud")
    assert result.accepted == [mine]
    assert result.pending == []
    assert [u["prediction_id"] for u in result.unknown] == [fresh]
    assert "send it again in a few seconds" in result.unknown[0]["reason"]
    # an unbound key may leave it pending: it is joined once the prediction lands
    assert record_feedback(resolved, writer, key_id="k").pending == [fresh]


def test_ids_from_all_over_the_calendar_are_looked_up_in_one_listing(
    writer: LogWriter, any_store: ArtifactStore
) -> None:
    logged = made_at(NOON)
    log_scores(writer, [logged], at=NOON)
    writer.flush()
    scattered = [made_at(NOON - d * DAY) for d in range(1, 400)]
    found = LogReader(any_store).models_of([logged, *scattered])
    assert found == {logged: "fraud"}

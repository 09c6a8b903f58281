from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from shipyard.core import ColumnSpec, Signature
from shipyard.core.errors import InvalidInput, SchemaViolation


@pytest.fixture
def signature() -> Signature:
    frame = pd.DataFrame(
        {
            "amount": [1.5, 2.0, np.nan],
            "hour": [1, 2, 3],
            "category": ["a", "b", "c"],
            "foreign": [True, False, True],
        }
    )
    return Signature.infer(frame)


def test_infers_names_types_and_nullability_from_a_frame(signature: Signature) -> None:
    assert signature.columns == (
        ColumnSpec("amount", "float64", True),
        ColumnSpec("hour", "int64", False),
        ColumnSpec("category", "string", False),
        ColumnSpec("foreign", "bool", False),
    )


def test_infers_from_arrow_records_mapping_and_numpy() -> None:
    table = pa.table({"x": [1.0, 2.0], "y": ["a", None]})
    assert Signature.infer(table).columns == (
        ColumnSpec("x", "float64"),
        ColumnSpec("y", "string", True),
    )
    assert Signature.infer([{"x": 1, "y": "a"}]).names == ["x", "y"]
    assert Signature.infer({"x": [1.0]}).columns[0].type == "float64"
    assert Signature.infer(np.zeros((3, 2), dtype=np.float32)).columns == (
        ColumnSpec("x0", "float32"),
        ColumnSpec("x1", "float32"),
    )


def test_refuses_datetime_columns_with_advice() -> None:
    frame = pd.DataFrame({"when": pd.to_datetime(["2026-01-01"])})
    with pytest.raises(InvalidInput, match="convert it to a"):
        Signature.infer(frame)


def test_round_trips_through_dict(signature: Signature) -> None:
    assert Signature.from_dict(signature.to_dict()) == signature


def test_valid_records_become_typed_columns(signature: Signature) -> None:
    columns = signature.validate_records(
        [
            {"amount": 3, "hour": 4, "category": "x", "foreign": False},
            {"amount": None, "hour": 5.0, "category": "y", "foreign": True},
        ]
    )
    assert columns["amount"].dtype == np.float64
    assert np.isnan(columns["amount"][1])
    assert columns["hour"].tolist() == [4, 5]
    assert columns["hour"].dtype == np.int64
    assert columns["category"].tolist() == ["x", "y"]
    assert columns["foreign"].dtype == bool


def test_extra_fields_are_ignored(signature: Signature) -> None:
    columns = signature.validate_records(
        [{"amount": 1.0, "hour": 1, "category": "a", "foreign": True, "customer_id": "c1"}]
    )
    assert set(columns) == {"amount", "hour", "category", "foreign"}


@pytest.mark.parametrize(
    ("record", "loc", "fragment"),
    [
        (
            {"amount": "x", "hour": 1, "category": "a", "foreign": True},
            "amount",
            "must be a number",
        ),
        ({"amount": 1.0, "category": "a", "foreign": True}, "hour", "is missing"),
        ({"amount": 1.0, "hour": None, "category": "a", "foreign": True}, "hour", "is null"),
        (
            {"amount": 1.0, "hour": 1.5, "category": "a", "foreign": True},
            "hour",
            "must be an integer",
        ),
        (
            {"amount": 1.0, "hour": 1, "category": 3, "foreign": True},
            "category",
            "must be a string",
        ),
        ({"amount": 1.0, "hour": 1, "category": "a", "foreign": "yes"}, "foreign", "true or false"),
        (
            {"amount": True, "hour": 1, "category": "a", "foreign": True},
            "amount",
            "must be a number",
        ),
        ({"amount": 1.0, "hour": 2**70, "category": "a", "foreign": True}, "hour", "64-bit"),
    ],
)
def test_each_bad_value_is_named(
    signature: Signature, record: dict, loc: str, fragment: str
) -> None:
    with pytest.raises(SchemaViolation) as caught:
        signature.validate_records([record])
    assert caught.value.errors[0]["loc"] == ["instances", 0, loc]
    assert fragment in caught.value.errors[0]["msg"]
    assert f"instances[0].{loc}" in str(caught.value)


def test_nan_is_refused_where_the_sample_had_none() -> None:
    signature = Signature((ColumnSpec("x", "float64", nullable=False),))
    with pytest.raises(SchemaViolation, match="NaN"):
        signature.validate_columns({"x": [1.0, float("nan")]})


def test_missing_nullable_field_reads_as_null(signature: Signature) -> None:
    columns = signature.validate_records([{"hour": 1, "category": "a", "foreign": True}])
    assert np.isnan(columns["amount"][0])


def test_reports_many_errors_at_once_but_caps_the_list(signature: Signature) -> None:
    bad = [{"amount": "x", "hour": 1, "category": "a", "foreign": True}] * 50
    with pytest.raises(SchemaViolation) as caught:
        signature.validate_records(bad)
    assert len(caught.value.errors) == 20
    assert "and 47 more" in str(caught.value)


def test_records_must_be_a_list_of_objects(signature: Signature) -> None:
    with pytest.raises(SchemaViolation, match="must be a list"):
        signature.validate_records({"amount": 1})
    with pytest.raises(SchemaViolation, match="must be an object"):
        signature.validate_records([[1, 2]])


def test_frames_are_validated_like_records(signature: Signature) -> None:
    frame = pd.DataFrame({"amount": [1.0], "hour": [2], "category": ["c"], "foreign": [False]})
    assert signature.validate_frame(frame)["hour"].tolist() == [2]
    with pytest.raises(SchemaViolation, match="missing column"):
        signature.validate_frame(frame.drop(columns=["hour"]))


@pytest.mark.parametrize(
    "record",
    [
        {"amount": 1.5, "hour": 3, "category": "a", "foreign": True},
        {"amount": 2, "hour": 3, "category": "b", "foreign": False},
        {"amount": None, "hour": 0, "category": "c", "foreign": True},
        {"hour": 1, "category": "a", "foreign": True},
        {"amount": 1e308, "hour": -(2**63), "category": "", "foreign": False, "extra": [1]},
        {"amount": float("nan"), "hour": 1, "category": "a", "foreign": True},
        {"amount": True, "hour": 1, "category": "a", "foreign": True},
        {"amount": 1.0, "hour": 2**63, "category": "a", "foreign": True},
        {"amount": 1.0, "hour": 2.0, "category": "a", "foreign": True},
        {"amount": 1.0, "hour": 1, "category": None, "foreign": True},
        {"amount": "1.0", "hour": 1, "category": "a", "foreign": 1},
    ],
)
def test_one_record_and_many_records_are_validated_alike(
    signature: Signature, record: dict
) -> None:
    """A single record takes the grouped fast path, many the per-column path: same verdicts."""

    def outcome(records: list[dict]) -> object:
        try:
            columns = signature.validate_records(records)
        except SchemaViolation as error:
            return [e["msg"] for e in error.errors][:1]
        return {
            k: (v.dtype.kind, [None if x is None or x != x else x for x in v.tolist()][:1])
            for k, v in columns.items()
        }

    assert outcome([record]) == outcome([record] * 20)

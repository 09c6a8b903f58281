from __future__ import annotations

import os

import pytest

from shipyard.core import ModelRef, new_id, new_ids, validate_alias, validate_model_name
from shipyard.core import errors as e


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("fraud-detector", ModelRef("fraud-detector")),
        ("fraud-detector:3", ModelRef("fraud-detector", version=3)),
        ("fraud-detector:production", ModelRef("fraud-detector", alias="production")),
    ],
)
def test_references_parse(text: str, expected: ModelRef) -> None:
    assert ModelRef.parse(text) == expected
    assert str(expected) == text


@pytest.mark.parametrize("bad", ["", "has space", "-leading", "x" * 129, "a/b", "fraud:0"])
def test_bad_references_say_what_is_allowed(bad: str) -> None:
    with pytest.raises(e.InvalidName):
        ModelRef.parse(bad)


def test_aliases_must_start_with_a_letter() -> None:
    assert validate_alias("champion") == "champion"
    with pytest.raises(e.InvalidName, match="starting with a letter"):
        validate_alias("3")
    assert validate_model_name("Fraud_v2.1") == "Fraud_v2.1"


def test_ids_are_unique_and_sort_by_time() -> None:
    ids = [new_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(len(i) == 32 for i in ids)
    assert ids[0][:12] <= ids[-1][:12]


def test_a_forked_process_never_repeats_its_parents_ids() -> None:
    new_id()  # the parent's pool is filled before the fork
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os.write(write, "".join(new_ids(50)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    with os.fdopen(read) as pipe:
        theirs = pipe.read()
    ours = "".join(new_ids(50))
    assert len(theirs) == len(ours) == 50 * 32
    assert {theirs[i + 12 : i + 32] for i in range(0, len(theirs), 32)}.isdisjoint(
        ours[i + 12 : i + 32] for i in range(0, len(ours), 32)
    )


def test_error_tree_inherits_stdlib_types() -> None:
    assert issubclass(e.ModelNotFound, LookupError)
    assert issubclass(e.SchemaViolation, ValueError)
    assert issubclass(e.MissingDependency, ImportError)
    error = e.missing_extra("psycopg", "postgres", "PostgreSQL databases")
    assert "pip install 'shipyard[postgres]'" in str(error)


def test_every_error_class_is_drawn_in_the_tree_docstring() -> None:
    for name in e.__all__:
        obj = getattr(e, name)
        if isinstance(obj, type) and issubclass(obj, e.ShipyardError):
            assert name in (e.__doc__ or ""), f"{name} is missing from the tree in core/errors.py"

from __future__ import annotations

import itertools
import os
import re
import time

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


def _milliseconds() -> int:
    return time.time_ns() // 1_000_000


def _wait_past(millisecond: int) -> None:
    """Return once the clock is past `millisecond` (a deadline instead of a sleep)."""
    deadline = time.monotonic() + 5
    while _milliseconds() <= millisecond:
        assert time.monotonic() < deadline, "the clock did not move for 5 s"


def test_ids_are_unique_and_sort_by_time() -> None:
    bursts = []
    for make in (lambda: [new_id() for _ in range(300)], lambda: new_ids(300)) * 2:
        before = _milliseconds()
        burst = make()
        after = _milliseconds()
        # the first 12 hex digits are the millisecond the id was made in
        made = [int(i[:12], 16) for i in burst]
        assert before <= min(made) <= max(made) <= after
        assert all(len(i) == 32 and int(i, 16) >= 0 for i in burst)
        bursts.append(burst)
        _wait_past(after)  # the next burst is made in a later millisecond
    ids = [i for burst in bursts for i in burst]
    assert len(set(ids)) == len(ids)
    # whatever their random digits, ids made in a later millisecond sort after earlier ones
    for earlier, later in itertools.pairwise(bursts):
        assert max(earlier) < min(later)


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


def _drawn_tree() -> dict[str, tuple[str | None, str | None]]:
    """The tree in core/errors.py's docstring: each class with its parent and its stdlib type."""
    lines = (e.__doc__ or "").splitlines()
    root = next(i for i, line in enumerate(lines) if line.strip() == "ShipyardError")
    margin = lines[root].index("ShipyardError")
    drawn: dict[str, tuple[str | None, str | None]] = {"ShipyardError": (None, None)}
    parents = ["ShipyardError"]  # the open branch, one class per depth
    for line in lines[root + 1 :]:
        if not line.strip():
            break
        found = re.match(r"([│ ]*)[├└]── (\w+)(?: \((\w+)\))?", line[margin:])
        if found is None:  # a description carried over to the next line
            continue
        depth = len(found[1]) // 4 + 1
        del parents[depth:]
        drawn[found[2]] = (parents[depth - 1], found[3])
        parents.append(found[2])
    return drawn


def _real_tree() -> dict[str, tuple[str | None, str | None]]:
    tree: dict[str, tuple[str | None, str | None]] = {"ShipyardError": (None, None)}
    todo = [e.ShipyardError]
    while todo:
        cls = todo.pop()
        for child in cls.__subclasses__():
            stdlib = [b.__name__ for b in child.__bases__ if not issubclass(b, e.ShipyardError)]
            tree[child.__name__] = (cls.__name__, stdlib[0] if stdlib else None)
            todo.append(child)
    return tree


def test_the_tree_drawn_in_the_docstring_is_the_class_tree() -> None:
    exported = {n for n in e.__all__ if isinstance(getattr(e, n), type)}
    drawn, real = _drawn_tree(), _real_tree()
    assert set(real) == exported  # every class is exported, and only classes of the tree
    assert drawn == real, "the tree in core/errors.py's docstring is not the class tree"

"""Every error class has its own HTTP status and its own exit code: a new class cannot slip
through to a default (it used to become 400 / exit 1 silently)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import shipyard
import shipyard.errors
from shipyard.cli import EXIT_CODES, exit_code_for
from shipyard.core import errors as e
from shipyard.core.status import HTTP_STATUS, status_of


def _tree(root: type[e.ShipyardError] = e.ShipyardError) -> list[type[e.ShipyardError]]:
    found = [root]
    for child in root.__subclasses__():
        found += _tree(child)
    return found


CLASSES = _tree()


def test_the_tree_is_every_error_class_the_module_exports() -> None:
    exported = {getattr(e, n) for n in e.__all__ if isinstance(getattr(e, n), type)}
    assert set(CLASSES) == exported


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_each_class_has_its_own_status_and_exit_code(cls: type[e.ShipyardError]) -> None:
    assert cls in HTTP_STATUS, f"{cls.__name__} has no row in core/status.py"
    assert cls in EXIT_CODES, f"{cls.__name__} has no row in cli/__init__.py"


def _instance(cls: type[e.ShipyardError]) -> e.ShipyardError:
    if issubclass(cls, e.SchemaViolation):
        return cls("m", [])
    if issubclass(cls, e.MethodNotAllowed):
        return cls("m", ["GET"])
    if issubclass(cls, e.RateLimited):
        return cls("m", retry_after=1.0)
    return cls("m")


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_only_a_bare_shipyard_error_is_a_500(cls: type[e.ShipyardError]) -> None:
    status = status_of(_instance(cls))
    assert status == HTTP_STATUS[cls]
    assert (status == 500) is (cls is e.ShipyardError)
    assert exit_code_for(_instance(cls)) == EXIT_CODES[cls]


def test_back_pressure_and_outages_ask_for_a_retry() -> None:
    for cls in (e.Overloaded, e.DatabaseUnavailable, e.LogUnavailable, e.RedisUnavailable):
        assert status_of(_instance(cls)) == 503
        assert exit_code_for(_instance(cls)) == 9
        assert _instance(cls).retry_after > 0  # type: ignore[attr-defined]


def test_errors_import_from_the_public_module_as_design_promises() -> None:
    from shipyard.errors import ModelNotFound, RedisUnavailable

    assert ModelNotFound is e.ModelNotFound
    assert RedisUnavailable is e.RedisUnavailable
    assert shipyard.errors is sys.modules["shipyard.errors"]
    assert set(shipyard.errors.__all__) == set(e.__all__)
    # and from a fresh interpreter, through the package attribute
    out = subprocess.run(
        [sys.executable, "-c", "import shipyard; print(shipyard.errors.ModelNotFound.__name__)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "ModelNotFound"

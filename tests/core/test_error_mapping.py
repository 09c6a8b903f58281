"""Every error class has its own HTTP status and its own exit code: a new class cannot slip
through to a default (it used to become 400 / exit 1 silently)."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from http import HTTPStatus as H
from pathlib import Path

import pytest

import shipyard
import shipyard.errors
from shipyard.cli import EXIT_CODES, exit_code_for
from shipyard.cli.loop import REJECTED_EXIT
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
    """An instance of `cls`, its required arguments beyond the message filled by their type."""
    values = {"float": 1.0, "Sequence[str]": ["GET"], "Sequence[dict[str, Any]]": []}
    required = [
        values[str(p.annotation)]
        for p in list(inspect.signature(cls).parameters.values())[1:]
        if p.default is inspect.Parameter.empty
    ]
    return cls("m", *required)


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


# What the documentation promises for each class: the HTTP status (DESIGN.md's "Errors and bad
# input", the README's 429/503/504) and the meaning of the exit code, as README.md words it in
# its "Exit codes:" sentence. A new class needs a row here, that is, a decision.
README = Path(__file__).resolve().parents[2] / "README.md"
BAD_INPUT, NOT_FOUND, CONFLICT = "bad input", "not found", "conflict"
CANNOT_LOAD, MISSING_EXTRA = "a stored model cannot load", "a missing optional extra"
CONFIGURATION, NOT_ALLOWED = "configuration or database schema", "not allowed"
RETRY, PORT_TAKEN = "busy or a part is down", "the server's port is taken"
A_BUG = "a bug in shipyard"  # a bare ShipyardError: exit 1, as any uncaught exception
DOCUMENTED: dict[type[e.ShipyardError], tuple[H, str]] = {
    e.ShipyardError: (H.INTERNAL_SERVER_ERROR, A_BUG),
    e.InvalidInput: (H.UNPROCESSABLE_ENTITY, BAD_INPUT),
    e.InvalidName: (H.BAD_REQUEST, BAD_INPUT),
    e.MalformedRequest: (H.BAD_REQUEST, BAD_INPUT),
    e.SchemaViolation: (H.UNPROCESSABLE_ENTITY, BAD_INPUT),
    e.InvalidLabels: (H.UNPROCESSABLE_ENTITY, BAD_INPUT),
    e.ModelOutputInvalid: (H.UNPROCESSABLE_ENTITY, BAD_INPUT),
    e.UnsupportedModel: (H.UNPROCESSABLE_ENTITY, BAD_INPUT),
    e.UserCodeFailed: (H.UNPROCESSABLE_ENTITY, BAD_INPUT),
    e.UnsupportedMediaType: (H.UNSUPPORTED_MEDIA_TYPE, BAD_INPUT),
    e.MethodNotAllowed: (H.METHOD_NOT_ALLOWED, BAD_INPUT),
    e.PayloadTooLarge: (H.REQUEST_ENTITY_TOO_LARGE, BAD_INPUT),
    e.NotFound: (H.NOT_FOUND, NOT_FOUND),
    e.ModelNotFound: (H.NOT_FOUND, NOT_FOUND),
    e.VersionNotFound: (H.NOT_FOUND, NOT_FOUND),
    e.AliasNotFound: (H.NOT_FOUND, NOT_FOUND),
    e.Conflict: (H.CONFLICT, CONFLICT),
    e.VersionArchived: (H.CONFLICT, CONFLICT),
    e.Unauthenticated: (H.UNAUTHORIZED, NOT_ALLOWED),
    e.Forbidden: (H.FORBIDDEN, NOT_ALLOWED),
    e.RateLimited: (H.TOO_MANY_REQUESTS, RETRY),
    e.Overloaded: (H.SERVICE_UNAVAILABLE, RETRY),
    e.DeadlineExceeded: (H.GATEWAY_TIMEOUT, RETRY),
    e.ServiceUnavailable: (H.SERVICE_UNAVAILABLE, RETRY),
    e.BackendUnavailable: (H.SERVICE_UNAVAILABLE, RETRY),
    e.DatabaseUnavailable: (H.SERVICE_UNAVAILABLE, RETRY),
    e.LogUnavailable: (H.SERVICE_UNAVAILABLE, RETRY),
    e.RedisUnavailable: (H.SERVICE_UNAVAILABLE, RETRY),
    e.ArtifactCorrupted: (H.SERVICE_UNAVAILABLE, CANNOT_LOAD),
    e.ModelUnavailable: (H.SERVICE_UNAVAILABLE, CANNOT_LOAD),
    e.MissingDependency: (H.SERVICE_UNAVAILABLE, MISSING_EXTRA),
    e.SchemaOutdated: (H.SERVICE_UNAVAILABLE, CONFIGURATION),
    e.ConfigurationError: (H.SERVICE_UNAVAILABLE, CONFIGURATION),
    e.AddressInUse: (H.SERVICE_UNAVAILABLE, PORT_TAKEN),
}


def _readme_exit_codes() -> dict[str, int]:
    """README.md's "Exit codes: 0 ok, 2 bad input (...), ..." sentence as meaning -> code."""
    text = " ".join(README.read_text().split())
    sentence = re.search(r"Exit codes: (.*?\.)(?: |$)", text)
    assert sentence is not None, "README.md has no 'Exit codes:' sentence"
    items = re.findall(r"(\d+) ([^,(.]+?)(?: \([^)]*\))?(?=[,.])", sentence[1])
    return {meaning: int(code) for code, meaning in items}


def test_every_class_has_a_documented_status_and_exit_code() -> None:
    assert set(DOCUMENTED) == set(CLASSES), "a new error class needs its row in DOCUMENTED"


def test_the_http_statuses_are_the_documented_ones() -> None:
    assert {cls: H(status) for cls, status in HTTP_STATUS.items()} == {
        cls: status for cls, (status, _) in DOCUMENTED.items()
    }


def test_the_exit_codes_are_the_ones_the_readme_lists() -> None:
    readme = _readme_exit_codes()
    assert readme["ok"] == 0
    assert readme["a validation gate refused the candidate"] == REJECTED_EXIT
    assert readme[A_BUG] == 1
    expected = {cls: readme[meaning] for cls, (_, meaning) in DOCUMENTED.items()}
    assert expected == EXIT_CODES
    # and every failure the README lists is one some error class exits with
    assert set(readme.values()) - {0, REJECTED_EXIT} == set(EXIT_CODES.values())

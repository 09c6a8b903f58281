"""`make test` uses the local PostgreSQL and Redis when they answer, without exported URLs."""

from __future__ import annotations

import socket

import pytest

from tests import services


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the block ends


def test_urls_from_the_environment_win_and_probing_can_be_turned_off() -> None:
    given = {"SHIPYARD_TEST_POSTGRES_URL": "postgresql+psycopg://ci@db/test"}
    decided = services.discover(given)
    assert given["SHIPYARD_TEST_POSTGRES_URL"] == "postgresql+psycopg://ci@db/test"
    assert "from the environment" in decided["SHIPYARD_TEST_POSTGRES_URL"]
    off = {"SHIPYARD_TEST_LOCAL_SERVICES": "off"}
    services.discover(off)
    assert "SHIPYARD_TEST_REDIS_URL" not in off


def test_a_service_that_does_not_answer_stays_unset_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = _closed_port()
    monkeypatch.setattr(
        services,
        "LOCAL",
        {
            "SHIPYARD_TEST_POSTGRES_URL": f"postgresql+psycopg://postgres@127.0.0.1:{port}/test",
            "SHIPYARD_TEST_REDIS_URL": f"redis://127.0.0.1:{port}/0",
        },
    )
    environ: dict[str, str] = {}
    decided = services.discover(environ)
    assert environ == {}
    assert all("nothing usable at" in d and str(port) in d for d in decided.values())


def test_local_services_that_answer_are_used() -> None:
    environ: dict[str, str] = {}
    decided = services.discover(environ)
    if not environ:
        pytest.skip(f"no local PostgreSQL or Redis answers here: {decided}")
    for variable, url in environ.items():
        assert url == services.LOCAL[variable]
        assert "answered locally" in decided[variable]

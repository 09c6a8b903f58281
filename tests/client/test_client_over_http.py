"""`Client` against a real shipyard server over TCP (uvicorn in a thread on loopback): a real
prediction, real 422 and 401 answers as shipyard errors, and the fallback once nothing answers."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pandas as pd
import pytest
import uvicorn

from shipyard.access import KeyStore
from shipyard.app import create_app
from shipyard.client import Client
from shipyard.core import Settings
from shipyard.core import errors as e
from shipyard.registry import Registry
from tests.conftest import records

SAFE = {"score": 0.0, "label": 0}


@contextmanager
def serving(settings: Settings) -> Iterator[str]:
    """The app on a free loopback port until the block ends."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive(), "the server thread died while starting"
            assert time.monotonic() < deadline, "server not started within 30 s"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        assert not thread.is_alive()


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, fraud_model: Any, fraud_sample: pd.DataFrame
) -> tuple[Settings, str]:
    """Settings with fraud-detector:1 in production, and a predict-scope key's token."""
    home = tmp_path_factory.mktemp("served") / "home"
    settings = Settings(home=home, actor="tester")
    with Registry.from_settings(settings) as registry:
        registry.register(
            fraud_model, name="fraud-detector", sample=fraud_sample, aliases=["production"]
        )
        token = KeyStore(registry.database).create("predict", name="client-tests")[1]
    return settings, token


@pytest.fixture(scope="module")
def url(served: tuple[Settings, str]) -> Iterator[str]:
    with serving(served[0]) as address:
        yield address


def test_real_prediction_comes_back_as_a_prediction(
    url: str, served: tuple[Settings, str], fraud_model: Any, fraud_sample: pd.DataFrame
) -> None:
    rows = fraud_sample.iloc[:3]
    with Client(url, served[1], timeout=10.0, fallback=SAFE) as client:
        result = client.predict("fraud-detector", records(rows))
    assert result.fallback is False
    assert (result.model, result.version) == ("fraud-detector", 1)
    assert len(result.prediction_ids) == 3
    assert all(len(pid) == 32 for pid in result.prediction_ids)
    expected = fraud_model.predict_proba(rows)[:, 1]
    assert [p["score"] for p in result.predictions] == pytest.approx(expected.tolist(), abs=1e-5)


def test_a_budget_longer_than_the_servers_deadline_limit_is_accepted(
    url: str, served: tuple[Settings, str], fraud_sample: pd.DataFrame
) -> None:
    with Client(url, served[1], timeout=90.0) as client:
        result = client.predict("fraud-detector", records(fraud_sample.iloc[:1]))
    assert result.version == 1


def test_real_schema_violation_raises_with_the_servers_details(
    url: str, served: tuple[Settings, str], fraud_sample: pd.DataFrame
) -> None:
    record = records(fraud_sample.iloc[:1])[0] | {"transaction_amount": "lots"}
    with (
        Client(url, served[1], timeout=10.0, fallback=SAFE) as client,
        pytest.raises(e.SchemaViolation) as caught,
    ):
        client.predict("fraud-detector", record)
    assert caught.value.errors
    assert any("transaction_amount" in str(d.get("loc")) for d in caught.value.errors)


def test_unknown_key_raises_unauthenticated(url: str, fraud_sample: pd.DataFrame) -> None:
    with (
        Client(url, "sy_nope_nope", timeout=10.0, fallback=SAFE) as client,
        pytest.raises(e.Unauthenticated),
    ):
        client.predict("fraud-detector", records(fraud_sample.iloc[:1]))


def test_fallback_once_the_server_is_stopped(
    served: tuple[Settings, str], fraud_sample: pd.DataFrame
) -> None:
    record = records(fraud_sample.iloc[:1])[0]
    with serving(served[0]) as address, Client(address, served[1], timeout=10.0) as client:
        assert client.predict("fraud-detector", record).fallback is False
    with Client(address, served[1], timeout=0.5, retries=2, fallback=SAFE) as client:
        result = client.predict("fraud-detector", record)
    assert result.fallback is True
    assert result.predictions == [SAFE]
    assert result.reason is not None
    assert "ConnectError" in result.reason


def test_a_server_that_never_answers_is_cut_off_at_the_time_budget() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()  # connections are accepted by the kernel; no answer ever comes
        address = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with Client(address, timeout=0.4, retries=3, fallback=SAFE) as client:
            started = time.monotonic()
            result = client.predict("fraud-detector", {"transaction_amount": 1.0})
            elapsed = time.monotonic() - started
    assert result.fallback is True
    assert result.reason is not None
    assert "ReadTimeout" in result.reason
    assert 0.35 < elapsed < 0.4 + 0.25

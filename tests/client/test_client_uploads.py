"""`Client.upload_predictions` (and the async twin) against a real server over TCP: calls of at
most 10,000 predictions, a call the server finds too large split until it fits, the answers
summed, and an upload sent again counted as duplicates."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from shipyard.access import KeyStore
from shipyard.client import AsyncClient, Client
from shipyard.core import Settings
from shipyard.core import errors as e
from shipyard.logstore import LogReader
from shipyard.registry import Registry
from tests.client.test_client_over_http import serving
from tests.conftest import records

MODEL = "fraud-detector"


@pytest.fixture(scope="module")
def home(
    tmp_path_factory: pytest.TempPathFactory, fraud_model: Any, fraud_sample: pd.DataFrame
) -> tuple[Path, str]:
    """A home with fraud-detector:1 and a predict-scope key's token."""
    home = tmp_path_factory.mktemp("uploads") / "home"
    with Registry.from_settings(Settings(home=home)) as registry:
        registry.register(fraud_model, name=MODEL, sample=fraud_sample)
        token = KeyStore(registry.database).create("predict", name="devices")[1]
    return home, token


def _rows(sample: pd.DataFrame, n: int) -> list[dict[str, Any]]:
    inputs = records(sample)
    start = datetime.now(UTC) - timedelta(hours=1)
    return [
        {"prediction_id": str(uuid.uuid4()), "ts": start + timedelta(milliseconds=i),
         "inputs": inputs[i % len(inputs)], "score": np.float64(0.25)}
        for i in range(n)
    ]  # fmt: skip


def _upload_calls(url: str) -> float:
    """Upload calls the server answered 200, from its own metrics."""
    for line in httpx.get(f"{url}/metrics", timeout=10.0).text.splitlines():
        if line.startswith("shipyard_http_requests_total{") and all(
            label in line for label in ('route="/v1/logs/upload"', 'status="200"')
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _counted(url: str, calls: float) -> float:
    """The count once it reaches `calls` (a request is counted just after it is answered)."""
    deadline = time.monotonic() + 10
    while (seen := _upload_calls(url)) < calls and time.monotonic() < deadline:
        pass
    return seen


@pytest.fixture
def url(home: tuple[Path, str]) -> Iterator[str]:
    with serving(Settings(home=home[0])) as address:
        yield address


def test_an_upload_goes_in_calls_of_10000_and_a_second_send_is_all_duplicates(
    url: str, home: tuple[Path, str], fraud_sample: pd.DataFrame
) -> None:
    rows = _rows(fraud_sample, 10_001)
    before = _upload_calls(url)
    with Client(url, home[1]) as client:
        first = client.upload_predictions(MODEL, 1, "till-17", rows)
        assert _counted(url, before + 2) == before + 2
        again = client.upload_predictions(MODEL, 1, "till-17", rows)
    assert first == {
        "accepted": 10_001, "duplicates": 0, "conflicts": [], "model": MODEL, "version": 1,
    }  # fmt: skip
    assert (again["accepted"], again["duplicates"]) == (0, 10_001)
    with Registry.from_settings(Settings(home=home[0])) as registry:
        assert LogReader(registry.artifacts).predictions(MODEL).num_rows == 10_001


def test_calls_the_server_finds_too_large_are_split_until_they_fit(
    home: tuple[Path, str], fraud_sample: pd.DataFrame
) -> None:
    rows = _rows(fraud_sample, 300)  # about 100 kB of JSON
    with serving(Settings(home=home[0], max_body_bytes=32 * 1024)) as address:

        async def upload() -> dict[str, Any]:
            async with AsyncClient(address, home[1]) as client:
                return await client.upload_predictions(MODEL, 1, "till-18", rows)

        answer = asyncio.run(upload())
    assert (answer["accepted"], answer["duplicates"]) == (300, 0)


def test_predictions_that_do_not_fit_the_version_raise_the_server_s_schema_violation(
    url: str, home: tuple[Path, str], fraud_sample: pd.DataFrame
) -> None:
    rows = _rows(fraud_sample, 2)
    rows[1]["inputs"] = {**rows[1]["inputs"], "transaction_amount": "lots"}
    with Client(url, home[1]) as client, pytest.raises(e.SchemaViolation) as raised:
        client.upload_predictions(MODEL, 1, "till-17", rows)
    assert raised.value.details()[0]["loc"] == ["predictions", 1, "inputs", "transaction_amount"]

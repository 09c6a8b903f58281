"""A hybrid client against a real server over TCP: the exported model answers the rows it is
sure of, the server the rest; the edge's answers are uploaded and logged as `source = edge`;
with the server away the edge answers everything and keeps its answers for later."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from shipyard.access import KeyStore
from shipyard.client import AsyncClient, Client
from shipyard.core import Settings
from shipyard.core import errors as e
from shipyard.demo._data import FEATURES
from shipyard.logstore import LogReader
from shipyard.optimize import EdgeModel, export_edge
from shipyard.registry import Registry
from tests.client.test_client_over_http import serving
from tests.conftest import records

MODEL = "fraud-detector"


@pytest.fixture(scope="module")
def home(
    tmp_path_factory: pytest.TempPathFactory, fraud_model: Any, fraud_sample: pd.DataFrame
) -> tuple[Path, str, Path]:
    """fraud-detector:1 in production, a predict key, and v1 exported for phones."""
    root = tmp_path_factory.mktemp("hybrid")
    with Registry.from_settings(Settings(home=root / "home")) as registry:
        registry.register(fraud_model, name=MODEL, sample=fraud_sample, threshold=0.3)
        registry.deploy(MODEL, 1)
        token = KeyStore(registry.database).create("predict", name="devices")[1]
        export_edge(registry, f"{MODEL}:1", profile="phone", out=root / "edge")
    return root / "home", token, root / "edge"


@pytest.fixture
def url(home: tuple[Path, str, Path]) -> Iterator[str]:
    with serving(Settings(home=home[0], log_flush_seconds=0.2)) as address:
        yield address


def _logged(home: Path, ids: list[str], deadline_s: float = 20.0) -> dict[str, str]:
    """prediction id -> source, once every id is in the log (the server flushes its spool)."""
    deadline = time.monotonic() + deadline_s
    while True:
        with Registry.from_settings(Settings(home=home)) as registry:
            table = LogReader(registry.artifacts).predictions(MODEL)
        found = dict(
            zip(table["prediction_id"].to_pylist(), table["source"].to_pylist(), strict=True)
        )
        if all(i in found for i in ids) or time.monotonic() > deadline:
            return {i: found.get(i) for i in ids}
        time.sleep(0.1)


def test_the_edge_answers_what_it_is_sure_of_and_the_server_the_rest(
    url: str, home: tuple[Path, str, Path], fraud_data: pd.DataFrame
) -> None:
    rows = records(fraud_data[FEATURES].iloc[2000:2300])
    edge = EdgeModel(home[2])
    sure = [edge.confidence(a) >= 0.97 for a in edge.predict(rows)]
    assert 0 < sum(sure) < len(rows)  # the case needs both kinds of rows
    with Client(url, home[1], timeout=10.0) as plain:
        server_only = plain.predict(MODEL, rows)
    with Client(
        url, home[1], timeout=10.0, edge=home[2], defer_below=0.97, device_id="till-9"
    ) as client:
        answer = client.predict(MODEL, rows)
        assert answer.answered_by == ["edge" if s else "server" for s in sure]
        assert client.edge is not None
        assert client.edge.pending() == sum(sure)
        uploaded = client.flush_edge()
    assert (uploaded["accepted"], uploaded["duplicates"]) == (sum(sure), 0)
    # the same answers as the server gives, whoever gave them
    np.testing.assert_allclose(
        [p["score"] for p in answer.predictions],
        [p["score"] for p in server_only.predictions],
        atol=1e-6,
    )
    assert [p["label"] for p in answer.predictions] == [p["label"] for p in server_only.predictions]
    # both are logged: the server's online, the edge's as uploaded by the device
    sources = _logged(home[0], answer.prediction_ids)
    assert [sources[i] for i in answer.prediction_ids] == ["edge" if s else "online" for s in sure]


def test_with_the_server_away_the_edge_answers_everything_and_keeps_its_answers(
    home: tuple[Path, str, Path], fraud_data: pd.DataFrame
) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        gone = f"http://127.0.0.1:{sock.getsockname()[1]}"
    rows = records(fraud_data[FEATURES].iloc[:50])
    with Client(gone, home[1], timeout=0.5, retries=0, edge=home[2], defer_below=0.999) as client:
        answer = client.predict(MODEL, rows)
        assert set(answer.answered_by) == {"edge"}
        assert answer.reason is not None
        assert "the server could not answer" in answer.reason
        assert answer.version == 1
        assert client.edge is not None
        assert client.edge.pending() == 50
        with pytest.raises(e.ServiceUnavailable):
            client.flush_edge()
        assert client.edge.pending() == 50  # kept for the next upload


def test_rows_the_edge_cannot_read_go_to_the_server_which_says_why(
    url: str, home: tuple[Path, str, Path]
) -> None:
    with Client(url, home[1], timeout=10.0, edge=home[2]) as client:
        with pytest.raises(e.SchemaViolation):
            client.predict(MODEL, {"transaction_amount": "lots"})
        assert client.edge is not None
        assert client.edge.pending() == 0


def test_another_version_or_model_is_the_servers(
    url: str, home: tuple[Path, str, Path], fraud_data: pd.DataFrame
) -> None:
    rows = records(fraud_data[FEATURES].iloc[:5])
    with Client(url, home[1], timeout=10.0, edge=home[2], defer_below=0.5) as client:
        assert client.predict(MODEL, rows, version=1).answered_by == ["edge"] * 5
        with pytest.raises(e.VersionNotFound):
            client.predict(MODEL, rows, version=2)


def test_the_async_client_is_hybrid_too_and_uploads_on_close(
    url: str, home: tuple[Path, str, Path], fraud_data: pd.DataFrame
) -> None:
    rows = records(fraud_data[FEATURES].iloc[3000:3100])

    async def run() -> Any:
        async with AsyncClient(url, home[1], timeout=10.0, edge=home[2], defer_below=0.5) as client:
            return await client.predict(MODEL, rows)

    answer = asyncio.run(run())
    assert set(answer.answered_by) == {"edge"}  # a binary model is always at least 50% sure
    sources = _logged(home[0], answer.prediction_ids)
    assert set(sources.values()) == {"edge"}


def test_defer_below_must_be_a_probability(home: tuple[Path, str, Path]) -> None:
    with pytest.raises(e.InvalidInput, match="defer_below"):
        Client("http://127.0.0.1:9", edge=home[2], defer_below=1.5)


def test_a_refused_key_is_raised_not_answered_at_the_edge(
    url: str, home: tuple[Path, str, Path], fraud_data: pd.DataFrame
) -> None:
    rows = records(fraud_data[FEATURES].iloc[:20])
    with Client(url, "not-a-key", timeout=10.0, edge=home[2], defer_below=0.999) as client:
        with pytest.raises(e.Unauthenticated):
            client.predict(MODEL, rows)
        assert client.edge is not None
        assert client.edge.pending() == 0  # nothing answered, nothing to upload


def test_answers_the_server_refuses_are_dropped_so_they_cannot_block_the_rest(
    url: str, home: tuple[Path, str, Path], fraud_data: pd.DataFrame
) -> None:
    rows = records(fraud_data[FEATURES].iloc[:3])
    with Client(url, home[1], timeout=10.0, edge=home[2]) as client:
        assert client.edge is not None
        answers = client.edge.model.predict(rows)
        # an answer an older runner let through: a text where the server takes a number
        bad = {**rows[1], "transaction_amount": "12.5"}
        client.edge.keep([rows[0], bad, rows[2]], {0: answers[0], 1: answers[1], 2: answers[2]})
        uploaded = client.flush_edge()
        assert (uploaded["accepted"], uploaded["dropped"]) == (2, 1)
        assert client.edge.pending() == 0

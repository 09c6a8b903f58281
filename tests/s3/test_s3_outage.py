"""The S3 store dies under a real `shipyard server` (SeaweedFS killed mid-run) and comes back
on the same data: every prediction keeps being answered from the local spool, the log lag
shows how far behind the logs are, and once the store is back every acknowledged prediction
is in S3, none lost and none twice."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pandas as pd
import pytest

from shipyard.core import Settings
from shipyard.logstore import LogReader
from shipyard.registry import Registry
from shipyard.store import ArtifactStore
from tests.conftest import records
from tests.s3.conftest import S3Endpoint, SeaweedFS, forget_s3_clients
from tests.serving.conftest import make_key
from tests.serving.servers import ServerProcess

pytestmark = pytest.mark.slow

MODEL = "fraud-detector"
T = TypeVar("T")


@pytest.fixture
def store(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[SeaweedFS, S3Endpoint]]:
    """A SeaweedFS of this test's own (it is killed), and a bucket in it."""
    server = SeaweedFS(tmp_path_factory.mktemp("weed"))
    try:
        endpoint = server.start().bucket()
        for name, value in endpoint.env.items():
            monkeypatch.setenv(name, value)
        forget_s3_clients()
        yield server, endpoint
    finally:
        forget_s3_clients()
        server.close()


def _wait(condition: Callable[[], T | None], seconds: float, what: str) -> T:
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} within {seconds} s"
        time.sleep(0.2)


def _lag(client: httpx.Client) -> float:
    """`shipyard_log_writer_lag_seconds` as the server's /metrics says it."""
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("shipyard_log_writer_lag_seconds"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("/metrics has no shipyard_log_writer_lag_seconds")


def test_an_s3_outage_mid_run_loses_no_acknowledged_prediction_or_label_and_logs_none_twice(
    store: tuple[SeaweedFS, S3Endpoint],
    sqlite_settings: Settings,
    fraud_model: Any,
    fraud_sample: pd.DataFrame,
    record_property: Callable[[str, object], None],
) -> None:
    weed, s3 = store
    settings = sqlite_settings.model_copy(update={"artifact_root": s3.root})
    with Registry.from_settings(settings) as registry:
        registry.register(fraud_model, name=MODEL, sample=fraud_sample, aliases=["production"])
    token = make_key(settings, "admin")
    reader = LogReader(ArtifactStore(s3.root))
    rows = records(fraud_sample.iloc[:100])
    acknowledged: list[str] = []
    labelled: dict[str, int] = {}

    def logged() -> list[str]:
        table = reader.predictions(MODEL)
        return table.column("prediction_id").to_pylist() if table.num_rows else []

    env = {
        **s3.env,
        "SHIPYARD_ARTIFACT_ROOT": s3.root,
        "SHIPYARD_LOG_FLUSH_SECONDS": "0.5",
        "SHIPYARD_LOG_FSYNC_SECONDS": "0.5",
        # one attempt per request (s3fs still retries a few times): a segment write fails
        # within seconds of the outage instead of after botocore's ~20 s of retries
        "AWS_MAX_ATTEMPTS": "1",
    }
    spool = Path(settings.home) / "spool"

    def server_log() -> str:
        return (Path(settings.home) / "server.log").read_text()

    with (
        ServerProcess(settings, env=env) as server,
        httpx.Client(
            base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {token}"}
        ) as client,
    ):

        def predict(i: int) -> None:
            answer = client.post(
                f"/v1/models/{MODEL}/predict", json={"instances": rows[i % 95 : i % 95 + 5]}
            )
            assert answer.status_code == 200, answer.text
            acknowledged.extend(answer.json()["prediction_ids"])

        def label(ids: list[str]) -> httpx.Response:
            feedback = [{"prediction_id": pid, "label": len(pid) % 2} for pid in ids]
            answer = client.post("/v1/feedback", json={"feedback": feedback})
            if answer.status_code == 200:
                assert (answer.json()["accepted"], answer.json()["pending"]) == (len(ids), [])
                labelled.update((f["prediction_id"], f["label"]) for f in feedback)
            return answer

        for i in range(20):
            predict(i)
        _wait(lambda: set(logged()) >= set(acknowledged), 30, "the first predictions in S3")
        first = list(acknowledged)
        assert label(first[:50]).status_code == 200  # found in S3

        weed.kill()
        down_at = time.monotonic()
        sent = 0
        # predictions keep being answered (the spool keeps them) while the lag grows, until
        # the server has failed to write a segment and kept it for the next try
        while _lag(client) < 3.0 or sent < 30 or "cannot write log segment" not in server_log():
            predict(sent)
            sent += 1
            assert time.monotonic() - down_at < 60, "no failed segment write in 60 s"
            time.sleep(0.05)
        during = acknowledged[len(first) :]
        # a label is checked against the labels logged before it (a changed one is audited):
        # with the store away that cannot be done, so the caller is told to retry, never a 500
        for ids in (first[50:], during[:100]):
            away = label(ids)
            assert away.status_code == 503, away.text
            assert int(away.headers["retry-after"]) >= 1
            assert "cannot be reached" in away.json()["error"]["message"]
        lag_at_restart = _lag(client)
        assert any(p.stat().st_size for p in spool.glob("*.spool"))  # kept on local disk

        weed.start()  # the same data folder and ports
        up_at = time.monotonic()
        for i in range(10):  # the store is back: new predictions flow as before
            predict(i)
        drained = _wait(
            lambda: found if set(found := logged()) >= set(acknowledged) else None,
            60,
            "every acknowledged prediction in S3 after the store came back",
        )
        drain_seconds = time.monotonic() - up_at
        # the retried labels are taken: the server finds what its flusher wrote meanwhile
        # (no stale listing of the store)
        assert label(first[50:] + during).status_code == 200
        _wait(lambda: _lag(client) < 1.0 or None, 30, "the log lag back to zero")
        log = server_log()

    copies = Counter(drained)
    assert len(during) >= 150
    assert set(drained) == set(acknowledged)  # none lost, none invented
    assert [pid for pid, n in copies.items() if n > 1] == []  # none twice
    assert reader.labels_of(list(labelled)) == {p: str(y) for p, y in labelled.items()}
    assert reader.labels().num_rows == len(labelled)  # each label once
    assert lag_at_restart >= 3.0
    # the outage is one error line with the reason, and one line when it is over
    assert log.count("cannot write log segment") == 1
    # the first segment the outage stops: predictions', or the labels' sent just before it
    assert re.search(r"cannot be reached to write logs/(predictions|labels)/", log), log[-3000:]
    assert log.count("log segments are written again after") == 1
    assert "Traceback" not in log
    measured = {
        "acknowledged_during_outage": len(during),
        "outage_seconds": round(up_at - down_at, 1),
        "lag_at_restart_seconds": round(lag_at_restart, 1),
        "drain_seconds_after_restart": round(drain_seconds, 1),
    }
    for name, value in measured.items():
        record_property(name, value)
    print(f"\nS3 outage: {measured}")

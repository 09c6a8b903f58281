"""The metadata database goes away under a real server (PostgreSQL behind a TCP proxy that
refuses connections, or backends terminated under load): predictions keep being served from
the last known keys and deployments for a bounded time, readiness tells the truth, what needs
the database answers 503 with Retry-After, and nothing answers 500."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.pool import NullPool
from tests.conftest import _reset_postgres, records
from tests.serving.conftest import make_key
from tests.serving.servers import ServerProcess
from tests.tcp_proxy import TcpProxy

from shipyard.access import KeyStore
from shipyard.core import Settings
from shipyard.logstore import LogReader
from shipyard.registry import Registry

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture
def database(postgres_database: str) -> str:
    _reset_postgres(postgres_database)
    return postgres_database


@pytest.fixture
def proxy(database: str) -> Iterator[TcpProxy]:
    url = make_url(database)
    with TcpProxy((url.host or "127.0.0.1", url.port or 5432)) as running:
        yield running


def _through(database: str, proxy: TcpProxy) -> str:
    return (
        make_url(database)
        .set(host="127.0.0.1", port=proxy.port)
        .render_as_string(hide_password=False)
    )


def _prepare(settings: Settings, fraud_model: Any, fraud_sample: pd.DataFrame) -> None:
    with Registry.from_settings(settings) as registry:
        registry.register(fraud_model, name="fraud-detector", sample=fraud_sample)
        registry.deploy("fraud-detector", 1)


def _wait(condition: Any, seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} within {seconds} s"
        time.sleep(0.1)


def test_predictions_are_served_through_a_15_second_outage_with_readiness_honest(
    database: str,
    proxy: TcpProxy,
    tmp_path: Path,
    fraud_model: Any,
    fraud_sample: pd.DataFrame,
) -> None:
    settings = Settings(
        home=tmp_path / "home", database_url=_through(database, proxy), auto_migrate=True
    )
    _prepare(settings, fraud_model, fraud_sample)
    predict = make_key(settings, "predict")
    reader = make_key(settings, "read")
    revoked_meanwhile = make_key(settings, "predict")
    body = {"instances": records(fraud_sample.iloc[:1])}
    as_reader = {"Authorization": f"Bearer {reader}"}
    env = {"SHIPYARD_REFRESH_SECONDS": "0.5", "SHIPYARD_LOG_FLUSH_SECONDS": "0.5"}
    answered: list[str] = []
    with (
        ServerProcess(settings, env=env) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):

        def score(token: str) -> httpx.Response:
            return client.post(
                "/v1/models/fraud-detector/predict",
                json=body,
                headers={"Authorization": f"Bearer {token}"},
            )

        assert score(predict).status_code == 200
        proxy.cut()
        cut_at = time.monotonic()
        statuses: list[int] = []
        readiness: list[dict[str, Any]] = []
        while time.monotonic() - cut_at < 15:
            answer = score(predict)
            statuses.append(answer.status_code)
            if answer.status_code == 200:
                answered += answer.json()["prediction_ids"]
            assert client.get("/v2/health/ready").status_code == 200
            readiness.append(client.get("/v1/serving", headers=as_reader).json())
            time.sleep(0.05)
        assert set(statuses) == {200}, statuses
        assert len(statuses) > 50
        assert any("does not answer" in " ".join(r["degraded"]) for r in readiness)
        # what needs the database says so, and when to come back
        listed = client.get("/v1/models", headers={"Authorization": f"Bearer {reader}"})
        assert listed.status_code == 503
        assert listed.json()["error"]["type"] == "DatabaseUnavailable"
        assert int(listed.headers["retry-after"]) >= 1
        unknown = client.get(
            "/v1/models", headers={"Authorization": f"Bearer sy_{'0' * 16}_{'x' * 30}"}
        )
        assert unknown.status_code == 401
        # a revocation made during the outage (by an operator on the database itself) ...
        with Registry.from_settings(
            settings.model_copy(update={"database_url": database})
        ) as direct:
            KeyStore(direct.database).revoke(revoked_meanwhile.split("_")[1])
        assert score(revoked_meanwhile).status_code == 200  # ... is not known yet
        proxy.restore()
        _wait(
            lambda: not client.get("/v1/serving", headers=as_reader).json()["degraded"],
            20,
            "back to normal",
        )
        assert score(revoked_meanwhile).status_code == 401  # ... and applies once it answers
        assert (
            client.get("/v1/models", headers={"Authorization": f"Bearer {reader}"}).status_code
            == 200
        )
        log = server.log.read_text()
    assert log.count("does not answer since") == 0  # readiness detail, not a log line per refresh
    assert log.count("serving the deployments and API keys read") == 1  # one line for the outage
    assert "this is a bug in shipyard" not in log
    with Registry.from_settings(settings.model_copy(update={"database_url": database})) as registry:
        logged = set(
            LogReader(registry.artifacts)
            .predictions("fraud-detector")
            .column("prediction_id")
            .to_pylist()
        )
    assert set(answered) <= logged  # every prediction answered during the outage is in the log


def test_past_the_staleness_bound_predictions_and_readiness_say_503(
    database: str,
    proxy: TcpProxy,
    tmp_path: Path,
    fraud_model: Any,
    fraud_sample: pd.DataFrame,
) -> None:
    settings = Settings(
        home=tmp_path / "home", database_url=_through(database, proxy), auto_migrate=True
    )
    _prepare(settings, fraud_model, fraud_sample)
    predict = make_key(settings, "predict")
    admin = make_key(settings, "admin")
    body = {"instances": records(fraud_sample.iloc[:1])}
    headers = {"Authorization": f"Bearer {predict}"}
    env = {"SHIPYARD_REFRESH_SECONDS": "0.5", "SHIPYARD_MAX_STALE_SECONDS": "3"}
    with (
        ServerProcess(settings, env=env) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):
        assert (
            client.post("/v1/models/fraud-detector/predict", json=body, headers=headers).status_code
            == 200
        )
        proxy.cut()
        stale = _wait(
            lambda: (
                r
                if (
                    r := client.post(
                        "/v1/models/fraud-detector/predict", json=body, headers=headers
                    )
                ).status_code
                != 200
                else None
            ),
            15,
            "predictions refused once the state is too old",
        )
        assert stale.status_code == 503
        assert stale.json()["error"]["type"] == "DatabaseUnavailable"
        assert "SHIPYARD_MAX_STALE_SECONDS" in stale.json()["error"]["message"]
        assert stale.headers["retry-after"] == "5"
        assert client.get("/v2/health/ready").json() == {"ready": False}
        # keys are as old as the plan: even an admin key is told to come back later
        why = client.get("/v1/serving", headers={"Authorization": f"Bearer {admin}"})
        assert why.status_code == 503
        assert "SHIPYARD_MAX_STALE_SECONDS" in why.json()["error"]["message"]
        proxy.restore()
        _wait(lambda: client.get("/v2/health/ready").status_code == 200, 20, "ready again")
        again = client.post("/v1/models/fraud-detector/predict", json=body, headers=headers)
        assert again.status_code == 200


def test_terminated_database_connections_are_replaced_without_an_error(
    database: str, tmp_path: Path, fraud_model: Any, fraud_sample: pd.DataFrame
) -> None:
    name = f"shipyard-test-{time.time_ns()}"
    url = make_url(database).update_query_dict({"application_name": name})
    settings = Settings(
        home=tmp_path / "home",
        database_url=url.render_as_string(hide_password=False),
        auto_migrate=True,
    )
    _prepare(settings, fraud_model, fraud_sample)
    reader = make_key(settings, "admin")
    headers = {"Authorization": f"Bearer {reader}"}
    admin = create_engine(database, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    stop = threading.Event()
    killed = 0

    def terminate() -> None:
        nonlocal killed
        with admin.connect() as conn:
            while not stop.is_set():
                killed += conn.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE application_name = :name"
                    ),
                    {"name": name},
                ).scalar_one()
                time.sleep(0.05)

    statuses: list[int] = []
    with ServerProcess(settings) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        killer = threading.Thread(target=terminate)
        killer.start()
        try:
            for _ in range(150):
                for path in (
                    "/v1/models",
                    "/v1/models/fraud-detector",
                    "/v1/models/fraud-detector/history",
                    "/v1/keys",  # the key store's reads
                ):
                    statuses.append(client.get(path, headers=headers).status_code)
        finally:
            stop.set()
            killer.join()
        log = server.log.read_text()
    admin.dispose()
    assert killed > 10  # the server's connections really were cut, many times
    assert [s for s in statuses if s >= 500] == []
    assert "this is a bug in shipyard" not in log

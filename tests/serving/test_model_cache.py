"""Versions outside the serving plan are kept loaded only within bounds: callers with a read or
predict key used to make a server load every registered version and never let go."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from tests.conftest import records
from tests.serving.conftest import make_key

from shipyard.app import create_app
from shipyard.core import Settings
from shipyard.registry import Registry


@pytest.fixture
def six_versions(
    sqlite_settings: Settings, fraud_model: Any, fraud_sample: pd.DataFrame
) -> Settings:
    with Registry.from_settings(sqlite_settings) as registry:
        for i in range(6):
            registry.register(
                fraud_model,
                name="fraud-detector",
                sample=fraud_sample,
                aliases=["production"] if i == 0 else [],
            )
    return sqlite_settings


@contextmanager
def _client(settings: Settings, **limits: int) -> Iterator[tuple[TestClient, Any]]:
    settings = settings.model_copy(update=limits)
    token = make_key(settings, "read")
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {token}"}) as client:
        yield client, client.app.state.services.predictions  # type: ignore[attr-defined]


def _loaded(service: Any) -> set[int]:
    return {s.version for s in service.loaded()}


def test_versions_outside_the_plan_are_kept_by_count_least_recently_used_first(
    six_versions: Settings,
) -> None:
    with _client(six_versions, max_cold_versions=2) as (client, service):
        for version in (2, 3, 4):
            assert client.get(f"/v2/models/fraud-detector/versions/{version}/ready").json()["ready"]
        assert _loaded(service) == {1, 3, 4}
        client.get("/v2/models/fraud-detector/versions/3/ready")  # 3 is now the most recent
        client.get("/v2/models/fraud-detector/versions/5/ready")
        assert _loaded(service) == {1, 3, 5}  # 4 went; the served version 1 always stays
        for version in (2, 3, 4, 5, 6):
            client.get(f"/v2/models/fraud-detector/versions/{version}/ready")
        assert len(_loaded(service)) == 3


def test_versions_outside_the_plan_are_kept_by_bundle_bytes(six_versions: Settings) -> None:
    with _client(six_versions, max_cold_bytes=1) as (client, service):
        assert client.get("/v2/models/fraud-detector/versions/2/ready").json()["ready"]
        assert _loaded(service) == {1}


def test_an_evicted_versions_batcher_is_closed_and_its_model_can_come_back(
    six_versions: Settings, fraud_sample: pd.DataFrame
) -> None:
    predict = make_key(six_versions, "predict")
    body = {"instances": records(fraud_sample.iloc[:2])}
    headers = {"Authorization": f"Bearer {predict}"}
    with _client(six_versions, max_cold_versions=1) as (client, service):
        first = client.post(
            "/v1/models/fraud-detector/versions/2/predict", json=body, headers=headers
        )
        assert first.status_code == 200
        batcher = service.batchers()[("fraud-detector", 2)]
        client.get("/v2/models/fraud-detector/versions/3/ready")
        assert ("fraud-detector", 2) not in service.batchers()
        assert batcher._closed
        assert batcher._executor._shutdown
        again = client.post(
            "/v1/models/fraud-detector/versions/2/predict", json=body, headers=headers
        )
        assert again.json()["predictions"] == first.json()["predictions"]
        assert _loaded(service) == {1, 2}


def test_asking_for_versions_that_do_not_exist_leaves_nothing_behind(
    six_versions: Settings, fraud_sample: pd.DataFrame
) -> None:
    with _client(six_versions) as (client, service):
        for version in range(100, 400):
            answer = client.get(f"/v2/models/fraud-detector/versions/{version}/ready")
            assert answer.status_code == 404
        assert service.models._locks == {}
        assert _loaded(service) == {1}


def test_a_version_that_fails_to_load_is_not_read_again_on_every_request(
    six_versions: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Registry.from_settings(six_versions) as registry:
        registry.artifacts.local_path("models/fraud-detector/3/model/model.joblib").write_bytes(
            b"x"
        )
    with _client(six_versions) as (client, service):
        opened: list[int] = []
        real_open = service.registry.open

        def counting_open(name: str, version: int) -> Any:
            opened.append(version)
            return real_open(name, version)

        monkeypatch.setattr(service.registry, "open", counting_open)
        answers = [client.get("/v2/models/fraud-detector/versions/3/ready") for _ in range(20)]
        assert {a.json()["ready"] for a in answers} == {False}
        assert opened == [3]  # read once; refused from memory for the next few seconds


def test_requests_for_a_registered_model_that_does_not_serve_do_not_each_refresh_everything(
    six_versions: Settings, fraud_sample: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Registry.from_settings(six_versions) as registry:
        registry.deploy("fraud-detector", 1)
        registry.stop("fraud-detector")
        registry.set_alias("fraud-detector", 2, "production")  # an alias, but a stopped deployment
    predict = make_key(six_versions, "predict")
    body = {"instances": records(fraud_sample.iloc[:1])}
    with _client(six_versions) as (client, service):
        reads: list[float] = []
        real = service._read_state

        def counting() -> Any:
            reads.append(1.0)
            return real()

        monkeypatch.setattr(service, "_read_state", counting)
        answers = [
            client.post(
                "/v1/models/fraud-detector/predict",
                json=body,
                headers={"Authorization": f"Bearer {predict}"},
            )
            for _ in range(20)
        ]
        assert {a.status_code for a in answers} == {503}
        assert "does not serve" in answers[0].json()["error"]["message"]
        assert len(reads) <= 2  # at most one refresh a second, whatever the request rate

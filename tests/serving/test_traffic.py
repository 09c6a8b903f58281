"""Where traffic goes over HTTP: sticky canaries, shadows that never touch the caller,
rollback, and deployments picked up by a running server without failed requests."""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from tests.conftest import records
from tests.serving.slow_model import SlowClassifier

from shipyard.app import create_app
from shipyard.core import Settings
from shipyard.logstore import LogReader, routing_key_hash
from shipyard.registry import Registry
from shipyard.serving._routing import choose


@pytest.fixture
def live(served_settings: Settings) -> Settings:
    """Fast refresh and log flush, auth off: these tests are about routing."""
    return served_settings.model_copy(
        update={"refresh_seconds": 0.1, "log_flush_seconds": 0.2, "auth": "off"}
    )


@pytest.fixture
def client(live: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(live), raise_server_exceptions=False) as test_client:
        yield test_client


def _wait_until(condition: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {seconds:.0f} s for {what}")
        time.sleep(0.02)


def _wait_for_revision(client: TestClient, revision: int) -> None:
    def serving_it() -> bool:
        serving = client.get("/v1/serving").json()
        return bool(
            serving["models"]["fraud-detector"]["revision"] == revision and serving["ready"]
        )

    _wait_until(serving_it, f"the server to pick up revision {revision}", 5.0)


def test_canary_over_http_is_sticky_by_header_and_by_routing_field(
    live: Settings, client: TestClient, fraud_sample: pd.DataFrame
) -> None:
    with Registry.from_settings(live) as registry:
        registry.deploy("fraud-detector", 1)
        deployment = registry.deploy("fraud-detector", 2, canary=20, routing_field="customer")
    _wait_for_revision(client, deployment.revision)
    record = records(fraud_sample.iloc[:1])[0]
    answered: dict[str, set[int]] = {}
    for i in range(400):
        key = f"customer-{i % 200}"
        body = client.post(
            "/v1/models/fraud-detector/predict",
            json={"instances": [record]},
            headers={"X-Routing-Key": key},
        ).json()
        answered.setdefault(key, set()).add(body["version"])
    assert all(len(v) == 1 for v in answered.values())
    # each customer is answered by the variant the routing rule gives its key, and the rule
    # puts a binomial share of the 200 customers on the 20% canary (40, sd 5.7)
    routed = {key: choose(deployment, key).version for key in answered}
    assert {key: min(v) for key, v in answered.items()} == routed
    on_canary = sum(version == 2 for version in routed.values())
    assert abs(on_canary - 200 * 0.2) <= 4 * math.sqrt(200 * 0.2 * 0.8)
    # the deployment's routing field in the record routes the same way as the header
    for key in list(routed)[:20]:
        body = client.post(
            "/v1/models/fraud-detector/predict", json={"instances": [dict(record, customer=key)]}
        ).json()
        assert body["version"] == routed[key]
    # and so does the V2 protocol's `routing_key` parameter (gRPC callers send it too)
    frame = fraud_sample.iloc[:1]
    inputs = [
        {
            "name": name,
            "shape": [1],
            "datatype": "FP64" if pd.api.types.is_numeric_dtype(frame[name]) else "BYTES",
            "data": frame[name].astype(object).where(frame[name].notna(), None).tolist(),
        }
        for name in frame.columns
    ]
    for key in list(routed)[:20]:
        answer = client.post(
            "/v2/models/fraud-detector/infer",
            json={"inputs": inputs, "parameters": {"routing_key": key}},
        )
        assert answer.status_code == 200, answer.text
        assert int(answer.json()["model_version"]) == routed[key]
    # every prediction is logged with a hash of the key that routed it, never the key itself
    client.app.state.services.predictions.writer.flush()  # type: ignore[attr-defined]
    logged = LogReader(client.app.state.services.registry.artifacts).predictions("fraud-detector")  # type: ignore[attr-defined]
    assert logged.num_rows == 440
    assert set(logged.column("routing_key").to_pylist()) == {
        routing_key_hash(key) for key in routed
    }


def test_shadow_gets_a_copy_logged_but_never_answers(
    live: Settings, client: TestClient, fraud_sample: pd.DataFrame
) -> None:
    with Registry.from_settings(live) as registry:
        registry.deploy("fraud-detector", 1)
        deployment = registry.deploy("fraud-detector", 2, shadow=True)
    _wait_for_revision(client, deployment.revision)
    ids = []
    for record in records(fraud_sample.iloc[:30]):
        body = client.post("/v1/models/fraud-detector/predict", json={"instances": [record]}).json()
        assert (body["version"], body["variant"]) == (1, "primary")
        ids += body["prediction_ids"]
    client.app.state.services.predictions.writer.flush()  # type: ignore[attr-defined]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        logged = (
            LogReader(client.app.state.services.registry.artifacts)
            .predictions("fraud-detector")
            .to_pylist()
        )  # type: ignore[attr-defined]
        shadows = [r for r in logged if r["variant"] == "shadow"]
        if len(shadows) == 30:
            break
        time.sleep(0.1)
        client.app.state.services.predictions.writer.flush()  # type: ignore[attr-defined]
    assert len(shadows) == 30
    assert {r["version"] for r in shadows} == {2}
    assert {r["request_id"] for r in shadows} == {
        r["request_id"] for r in logged if r["variant"] == "primary"
    }
    assert not {r["prediction_id"] for r in shadows} & set(
        ids
    )  # shadow answers are never handed out


def test_a_failing_or_slow_shadow_never_reaches_the_caller(
    live: Settings, client: TestClient, fraud_sample: pd.DataFrame
) -> None:
    X = fraud_sample.select_dtypes("number").fillna(0)
    with Registry.from_settings(live) as registry:
        registry.deploy("fraud-detector", 1)
        broken = registry.register(
            SlowClassifier(delay=0.3).fit(X, [0, 1] * (len(X) // 2)),
            name="fraud-detector",
            sample=X,
        )
        deployment = registry.deploy("fraud-detector", broken.version, shadow=True)
    _wait_for_revision(client, deployment.revision)
    service = client.app.state.services.predictions  # type: ignore[attr-defined]
    shadow_model = service.cached("fraud-detector", broken.version).predictor._model
    # the shadow hangs until the test lets it go, then breaks (as in production)
    gate, finished = threading.Event(), []

    def hang_then_fail(X: object) -> object:
        gate.wait(timeout=10)
        finished.append(1)
        raise RuntimeError("this model always fails")

    shadow_model.predict_proba = hang_then_fail
    record = records(fraud_sample.iloc[:1])[0]
    answered_while_shadows_hang = []
    for _ in range(5):
        answer = client.post("/v1/models/fraud-detector/predict", json={"instances": [record]})
        assert answer.status_code == 200
        answered_while_shadows_hang.append(not finished)
    assert answered_while_shadows_hang == [True] * 5  # no answer waited for its shadow
    gate.set()
    failures = (
        f'shipyard_shadow_failures_total{{model="fraud-detector",version="{broken.version}"}}'
    )
    _wait_until(lambda: failures in client.get("/metrics").text, "the shadow failures counted")


def test_rollback_over_http_and_no_failed_request_while_deployments_change(
    live: Settings, client: TestClient, fraud_sample: pd.DataFrame
) -> None:
    body = {"instances": records(fraud_sample.iloc[:1])}
    with Registry.from_settings(live) as registry:
        registry.deploy("fraud-detector", 1)
    stop = threading.Event()
    statuses: Counter[int] = Counter()
    versions: Counter[int] = Counter()
    failures: list[str] = []

    def hammer(_: int) -> None:
        while not stop.is_set():
            response = client.post("/v1/models/fraud-detector/predict", json=body)
            statuses[response.status_code] += 1
            if response.status_code == 200:
                versions[response.json()["version"]] += 1
            else:
                failures.append(response.text[:300])

    def serves(version: int) -> None:
        """Wait until the server answers with `version` (a few more requests than before)."""
        before = versions[version]
        _wait_until(lambda: versions[version] >= before + 5, f"answers from version {version}")

    with ThreadPoolExecutor(4) as pool:
        running = [pool.submit(hammer, i) for i in range(4)]
        try:
            serves(1)
            for version in (2, 1, 2):
                changed = client.post(
                    "/v1/models/fraud-detector/deployment", json={"version": version}
                )
                _wait_for_revision(client, changed.json()["revision"])
                serves(version)
            rolled = client.post("/v1/models/fraud-detector/rollback", json={"reason": "test"})
            _wait_for_revision(client, rolled.json()["revision"])
            serves(1)
        finally:
            stop.set()
        for future in running:
            future.result()
    assert set(statuses) == {200}, (statuses, failures[:3])
    assert set(versions) == {1, 2}, versions
    assert rolled.status_code == 200
    assert rolled.json()["variants"] == [{"version": 1, "weight": 100.0, "role": "primary"}]
    _wait_for_revision(client, rolled.json()["revision"])
    assert client.post("/v1/models/fraud-detector/predict", json=body).json()["version"] == 1


def test_deployment_reads_and_errors_over_http(live: Settings, client: TestClient) -> None:
    assert client.get("/v1/models/fraud-detector/deployment").json() == {
        "current": None,
        "history": [],
    }
    bad = client.post("/v1/models/fraud-detector/deployment", json={"version": 1, "canary": 5})
    assert bad.status_code == 409  # version 1 serves as production already
    assert "already the primary" in bad.json()["error"]["message"]
    assert (
        client.post("/v1/models/fraud-detector/deployment", json={"version": "2"}).status_code
        == 400
    )
    assert (
        client.post("/v1/models/fraud-detector/deployment", json={"version": 2}).status_code == 200
    )
    current = client.get("/v1/models/fraud-detector/deployment").json()["current"]
    assert current["variants"] == [{"version": 2, "weight": 100.0, "role": "primary"}]
    alias = client.put("/v1/models/fraud-detector/aliases/staging", json={"version": 1})
    assert alias.json() == {
        "name": "fraud-detector",
        "alias": "staging",
        "version": 1,
        "previous": None,
    }


def test_readiness_waits_for_every_deployed_version_to_load(
    live: Settings, fraud_sample: pd.DataFrame
) -> None:
    with Registry.from_settings(live) as registry:
        registry.deploy("fraud-detector", 1)
        registry.deploy("fraud-detector", 2, shadow=True)
        broken = registry.artifacts.local_path("models/fraud-detector/2/model/model.joblib")
    broken.write_bytes(b"tampered")
    with TestClient(create_app(live), raise_server_exceptions=False) as client:
        ready = client.get("/v2/health/ready")
        assert ready.status_code == 503
        assert ready.json() == {"ready": False}
        serving = client.get("/v1/serving").json()
        assert serving["ready"] is False
        assert "fraud-detector:2" in serving["problems"][0]
        assert "fails its integrity check" in serving["problems"][0]
        # what does load keeps answering
        body = {"instances": records(fraud_sample.iloc[:1])}
        assert client.post("/v1/models/fraud-detector/predict", json=body).status_code == 200

"""Keys as an attacker holds them: no key can mint or revoke more than itself, a model binding
holds on every route (the model in the path, a rule's model, a prediction's model), listings
show only what a key may see, and reading never changes anything."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from tests.conftest import records
from tests.serving.conftest import make_key
from tests.webhooks import Hook

from shipyard.app import create_app
from shipyard.core import Settings
from shipyard.demo import FEATURES
from shipyard.registry import Registry
from shipyard.store import JobQueue


@pytest.fixture
def two_models(served_settings: Settings, fraud_model: Any, fraud_sample: pd.DataFrame) -> Settings:
    """fraud-detector (from served_settings) and churn, each serving."""
    with Registry.from_settings(served_settings) as registry:
        registry.register(fraud_model, name="churn", sample=fraud_sample, aliases=["production"])
    return served_settings


@pytest.fixture
def app_client(two_models: Settings) -> Iterator[TestClient]:
    """The app with no default key: each call says which key it presents."""
    with TestClient(create_app(two_models), raise_server_exceptions=False) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _predict(client: TestClient, token: str, model: str, sample: pd.DataFrame) -> Any:
    return client.post(
        f"/v1/models/{model}/predict",
        json={"instances": records(sample.iloc[:2])},
        headers=bearer(token),
    )


# -- keys never mint or revoke more than themselves -----------------------------------------


def test_an_admin_key_bound_to_a_model_cannot_mint_an_unbound_or_foreign_key(
    two_models: Settings, app_client: TestClient
) -> None:
    bound_admin = make_key(two_models, "admin", model="churn", name="churn-admin")
    headers = bearer(bound_admin)
    for body in (
        {"scope": "admin"},
        {"scope": "read"},
        {"scope": "predict", "model": "fraud-detector"},
    ):
        refused = app_client.post("/v1/keys", json=body, headers=headers)
        assert refused.status_code == 403, body
        assert refused.json()["error"]["type"] == "Forbidden"
    made = app_client.post("/v1/keys", json={"scope": "admin", "model": "churn"}, headers=headers)
    assert made.status_code == 201
    assert made.json()["key"]["model"] == "churn"
    with Registry.from_settings(two_models) as registry:
        from shipyard.access import KeyStore

        keys = KeyStore(registry.database).list_keys()
    assert not [k for k in keys if k.scope == "admin" and k.model is None and k.name != "tests"]


def test_a_bound_admin_revokes_only_keys_of_its_model_and_lists_only_those(
    two_models: Settings, app_client: TestClient
) -> None:
    bound_admin = make_key(two_models, "admin", model="churn")
    unbound = make_key(two_models, "read", name="ops")
    foreign = make_key(two_models, "predict", model="fraud-detector")
    own = make_key(two_models, "predict", model="churn", name="checkout")
    headers = bearer(bound_admin)
    for token in (unbound, foreign):
        key_id = token.split("_")[1]
        assert app_client.delete(f"/v1/keys/{key_id}", headers=headers).status_code == 404
        assert _status_with(app_client, token) == 200  # still works
    assert app_client.delete(f"/v1/keys/{own.split('_')[1]}", headers=headers).status_code == 200
    listed = app_client.get("/v1/keys", headers=headers).json()["keys"]
    assert {k["model"] for k in listed} == {"churn"}


def _status_with(client: TestClient, token: str) -> int:
    return client.get("/v2/models/fraud-detector/ready", headers=bearer(token)).status_code


def test_an_unbound_admin_may_do_everything_a_write_key_nothing_with_keys(
    two_models: Settings, app_client: TestClient
) -> None:
    admin = make_key(two_models, "admin")
    write = make_key(two_models, "write")
    assert (
        app_client.post("/v1/keys", json={"scope": "admin"}, headers=bearer(admin)).status_code
        == 201
    )
    assert (
        app_client.post("/v1/keys", json={"scope": "read"}, headers=bearer(write)).status_code
        == 403
    )


def test_a_duplicated_key_in_the_body_cannot_turn_a_read_key_into_an_admin_key(
    two_models: Settings, app_client: TestClient
) -> None:
    admin = make_key(two_models, "admin")
    refused = app_client.post(
        "/v1/keys",
        content=b'{"scope": "read", "scope": "admin"}',
        headers={**bearer(admin), "Content-Type": "application/json"},
    )
    assert refused.status_code == 400
    assert "'scope' appears twice" in refused.json()["error"]["message"]


# -- a binding holds where the model is not in the path ---------------------------------------


def test_a_key_bound_to_another_model_cannot_label_this_models_predictions(
    two_models: Settings, app_client: TestClient, fraud_sample: pd.DataFrame
) -> None:
    fraud_key = make_key(two_models, "predict", model="fraud-detector")
    churn_key = make_key(two_models, "predict", model="churn")
    answer = _predict(app_client, fraud_key, "fraud-detector", fraud_sample)
    pid = answer.json()["prediction_ids"][0]
    refused = app_client.post(
        "/v1/feedback", json={"prediction_id": pid, "label": 1}, headers=bearer(churn_key)
    )
    assert refused.status_code == 403
    assert "bound to model 'churn'" in refused.json()["error"]["message"]
    accepted = app_client.post(
        "/v1/feedback", json={"prediction_id": pid, "label": 1}, headers=bearer(fraud_key)
    )
    assert accepted.json()["accepted"] == 1


def test_a_write_key_bound_to_another_model_cannot_remove_this_models_alert_rule(
    two_models: Settings, app_client: TestClient
) -> None:
    writer = make_key(two_models, "write")
    churn_writer = make_key(two_models, "write", model="churn")
    rule = app_client.post(
        "/v1/models/fraud-detector/alert-rules",
        json={"expression": "accuracy < 0.9"},
        headers=bearer(writer),
    ).json()
    refused = app_client.delete(f"/v1/alert-rules/{rule['id']}", headers=bearer(churn_writer))
    assert refused.status_code == 403
    rules = app_client.get("/v1/models/fraud-detector/alert-rules", headers=bearer(writer))
    assert [r["id"] for r in rules.json()["rules"]] == [rule["id"]]
    gone = app_client.delete("/v1/alert-rules/999999", headers=bearer(churn_writer))
    assert gone.status_code == 404


def test_listings_show_a_bound_key_only_its_model(
    two_models: Settings, app_client: TestClient, fraud_model: Any, fraud_sample: pd.DataFrame
) -> None:
    admin = make_key(two_models, "admin")
    churn_reader = make_key(two_models, "read", model="churn")
    for model in ("fraud-detector", "churn"):
        app_client.post(
            f"/v1/models/{model}/alert-rules",
            json={"expression": "volume > 0"},
            headers=bearer(admin),
        )
    with Registry.from_settings(two_models) as registry:
        queue = JobQueue(registry.database)
        queue.enqueue("monitor", model="fraud-detector")
        queue.enqueue("monitor", model="churn")
        import shipyard

        with shipyard.start_run("fraud", settings=two_models) as fraud_run:
            registry.register(fraud_model, name="fraud-detector", sample=fraud_sample)
        with shipyard.start_run("churn", settings=two_models) as churn_run:
            registry.register(fraud_model, name="churn", sample=fraud_sample)
    headers = bearer(churn_reader)
    models = app_client.get("/v1/models", headers=headers).json()["models"]
    assert [m["name"] for m in models] == ["churn"]
    serving = app_client.get("/v1/serving", headers=headers).json()["models"]
    assert list(serving) == ["churn"]
    jobs = app_client.get("/v1/jobs", headers=headers).json()["jobs"]
    assert {j["model"] for j in jobs} == {"churn"}
    assert app_client.get("/v1/jobs?model=fraud-detector", headers=headers).status_code == 403
    assert app_client.get("/v1/alerts?model=fraud-detector", headers=headers).status_code == 403
    runs = app_client.get("/v1/runs", headers=headers).json()["runs"]
    assert [r["id"] for r in runs] == [churn_run.id]
    assert app_client.get(f"/v1/runs/{fraud_run.id}", headers=headers).status_code == 404
    assert app_client.get(f"/v1/runs/{churn_run.id}", headers=headers).status_code == 200
    everything = app_client.get("/v1/runs", headers=bearer(admin)).json()["runs"]
    assert {r["id"] for r in everything} == {fraud_run.id, churn_run.id}


# -- reading changes nothing ------------------------------------------------------------------


def test_reading_monitoring_never_fires_an_alert_writes_a_snapshot_or_calls_a_webhook(
    two_models: Settings, app_client: TestClient, fraud_sample: pd.DataFrame, hook: Hook
) -> None:
    admin = make_key(two_models, "admin")
    reader = make_key(two_models, "read")
    app_client.post(
        "/v1/models/fraud-detector/alert-rules",
        json={"expression": "volume > 0", "webhooks": [hook.url]},
        headers=bearer(admin),
    )
    for _ in range(3):
        assert _predict(app_client, admin, "fraud-detector", fraud_sample).status_code == 200
    app_client.app.state.services.writer.flush()  # type: ignore[attr-defined]
    for _ in range(3):
        report = app_client.get("/v1/models/fraud-detector/monitoring", headers=bearer(reader))
        assert report.status_code == 200
        assert report.json()["versions"]["1"]["windows"]
    with Registry.from_settings(two_models) as registry:
        assert registry.history("fraud-detector", limit=5)[0].action == "alert_rule.created"
    alerts = app_client.get("/v1/alerts", headers=bearer(reader)).json()["alerts"]
    assert alerts == []
    assert hook.received == []
    assert (
        app_client.post("/v1/models/fraud-detector/monitoring", headers=bearer(reader)).status_code
        == 403
    )
    run = app_client.post("/v1/models/fraud-detector/monitoring", headers=bearer(admin))
    assert run.status_code == 200
    assert [a["status"] for a in run.json()["alerts"]] == ["firing"]
    assert len(hook.received) == 1


def test_expensive_reads_are_bounded_in_span_and_in_how_many_run_at_once(
    two_models: Settings, app_client: TestClient
) -> None:
    reader = make_key(two_models, "read")
    headers = bearer(reader)
    for query in ("window=99999999999d", "periods=401", "window=2w&periods=400", "window=0d"):
        answer = app_client.get(f"/v1/models/fraud-detector/monitoring?{query}", headers=headers)
        assert answer.status_code in (400, 422), query
        assert answer.json()["error"]["type"] in ("MalformedRequest", "InvalidInput")
    reports = app_client.app.state.services.reports  # type: ignore[attr-defined]
    assert reports._busy.acquire(blocking=False)  # a report is being computed
    try:
        busy = app_client.get("/v1/models/fraud-detector/monitoring", headers=headers)
    finally:
        reports._busy.release()
    assert busy.status_code == 503
    assert busy.headers["retry-after"] == "5"
    assert busy.json()["error"]["type"] == "Overloaded"


# -- who did it -------------------------------------------------------------------------------


def test_changes_over_http_are_audited_with_the_key_id_and_name(
    two_models: Settings, app_client: TestClient
) -> None:
    token = make_key(two_models, "admin", name="release-bot")
    key_id = token.split("_")[1]
    deployed = app_client.post(
        "/v1/models/fraud-detector/deployment", json={"version": 2}, headers=bearer(token)
    )
    assert deployed.status_code == 200
    assert deployed.json()["created_by"] == f"key {key_id} (release-bot)"
    made = app_client.post(
        "/v1/keys", json={"scope": "read", "name": "dash"}, headers=bearer(token)
    )
    assert made.json()["key"]["created_by"] == f"key {key_id} (release-bot)"
    with Registry.from_settings(two_models) as registry:
        events = registry.history("fraud-detector", limit=3)
        everything = registry.history(limit=20)
    assert {e.actor for e in events if e.action in ("deployment.created", "alias.moved")} == {
        f"key {key_id} (release-bot)"
    }
    created = next(
        e for e in everything if e.action == "key.created" and e.details["name"] == "dash"
    )
    assert created.actor == f"key {key_id} (release-bot)"


# -- outsiders ----------------------------------------------------------------------------------


def test_a_client_failing_to_authenticate_is_throttled_and_good_keys_are_not(
    two_models: Settings, fraud_sample: pd.DataFrame
) -> None:
    settings = two_models.model_copy(
        update={"auth_failure_burst": 3, "auth_failures_per_second": 0.001}
    )
    good = make_key(settings, "predict")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        bad = [
            client.get("/v1/models", headers=bearer(f"sy_{'0' * 16}_{'x' * 30}")).status_code
            for _ in range(6)
        ]
        answer = _predict(client, good, "fraud-detector", fraud_sample)
        throttled = client.get("/v1/models", headers=bearer("nonsense"))
    assert bad[:2] == [401, 401]
    assert bad[2:] == [429] * 4
    assert answer.status_code == 200
    assert throttled.status_code == 429
    assert int(throttled.headers["retry-after"]) >= 1
    assert "too many failed authentications" in throttled.json()["error"]["message"]


def test_keys_other_than_admin_never_see_local_paths(
    two_models: Settings,
    app_client: TestClient,
    fraud_model: Any,
    fraud_data: pd.DataFrame,
    tmp_path: Any,
) -> None:
    training = tmp_path / "secret-folder" / "train.parquet"
    training.parent.mkdir()
    fraud_data.to_parquet(training)
    with Registry.from_settings(two_models) as registry:
        registry.register(
            fraud_model,
            name="churn",
            sample=fraud_data[FEATURES].iloc[:200],
            training_data=str(training),
        )
    admin, reader = make_key(two_models, "admin"), make_key(two_models, "read")
    as_reader = app_client.get("/v1/models/churn/versions/2", headers=bearer(reader)).json()
    as_admin = app_client.get("/v1/models/churn/versions/2", headers=bearer(admin)).json()
    assert as_admin["data_fingerprint"]["source"] == str(training.resolve())
    assert as_reader["data_fingerprint"]["source"] == "train.parquet"
    history = app_client.get("/v1/models/churn/history", headers=bearer(reader)).text
    assert "secret-folder" not in history
    assert "secret-folder" not in app_client.get("/v1/models/churn", headers=bearer(reader)).text


def test_anonymous_requests_to_made_up_models_create_no_metric_series(
    app_client: TestClient,
) -> None:
    before = app_client.get("/metrics").text
    for i in range(300):
        app_client.post(f"/v1/models/made-up-{i}/predict", json={"instances": [{}]})
        app_client.request("FROB", f"/v1/models/made-up-{i}/predict")
    after = app_client.get("/metrics").text
    assert "made-up-" not in after
    assert "FROB" not in after
    new_lines = set(after.splitlines()) - set(before.splitlines())
    assert len(new_lines) < 120, sorted(new_lines)[:20]


def test_readiness_tells_anyone_only_the_verdict_and_errors_hide_paths_from_non_admins(
    two_models: Settings, app_client: TestClient, fraud_model: Any, fraud_sample: pd.DataFrame
) -> None:
    with Registry.from_settings(two_models) as registry:
        registry.register(fraud_model, name="churn", sample=fraud_sample)
        registry.artifacts.local_path("models/churn/2/model/model.joblib").write_bytes(b"x")
        registry.deploy("churn", 2, shadow=True)  # the plan names a version that cannot load
    home = str(two_models.home)
    reader, admin = make_key(two_models, "read"), make_key(two_models, "admin")
    deadline = time.monotonic() + 15
    while not app_client.get("/v1/serving", headers=bearer(admin)).json()["problems"]:
        assert time.monotonic() < deadline, "the broken version should show as a problem"
        time.sleep(0.1)
    assert app_client.get("/v2/health/ready").json() == {"ready": False}  # and nothing more
    for token, sees_paths in ((reader, False), (admin, True)):
        answer = app_client.get("/v2/models/churn/versions/2", headers=bearer(token))
        assert answer.status_code == 503
        assert (home in answer.json()["error"]) is sees_paths, answer.json()
        serving = app_client.get("/v1/serving", headers=bearer(token)).json()
        assert any("churn:2" in p for p in serving["problems"])
        assert (home in str(serving)) is sees_paths


def test_a_bound_key_does_not_learn_other_models_names_from_misses_or_refusals(
    two_models: Settings, app_client: TestClient
) -> None:
    ghost = make_key(two_models, "write", model="ghost")
    missing = app_client.get("/v1/models/ghost", headers=bearer(ghost))
    assert missing.status_code == 404
    message = missing.json()["error"]["message"]
    assert "churn" not in message
    assert "fraud-detector" not in message
    admin = make_key(two_models, "admin")
    rule = app_client.post(
        "/v1/models/churn/alert-rules", json={"expression": "volume > 0"}, headers=bearer(admin)
    ).json()
    refused = app_client.delete(f"/v1/alert-rules/{rule['id']}", headers=bearer(ghost))
    assert refused.status_code == 403
    assert "churn" not in refused.json()["error"]["message"]


def test_run_comparisons_pipelines_and_jobs_hide_paths_from_non_admins(
    two_models: Settings, app_client: TestClient
) -> None:
    import shipyard

    secret = "/home/alice/secret/train.parquet"
    runs = []
    for _ in range(2):
        with shipyard.start_run("x", settings=two_models, params={"data": secret}) as run:
            runs.append(run.id)
    with Registry.from_settings(two_models) as registry:
        JobQueue(registry.database).enqueue("retrain", model="churn", payload={"source": secret})
    reader, admin = make_key(two_models, "read"), make_key(two_models, "admin")
    compare = f"/v1/runs/compare?ids={','.join(runs)}"
    assert secret not in app_client.get(compare, headers=bearer(reader)).text
    assert secret in app_client.get(compare, headers=bearer(admin)).text
    assert secret not in app_client.get("/v1/jobs", headers=bearer(reader)).text
    assert "train.parquet" in app_client.get("/v1/jobs", headers=bearer(reader)).text


def test_a_rate_limited_key_cannot_mint_a_key_with_a_looser_limit(
    two_models: Settings, app_client: TestClient
) -> None:
    limited = make_key(two_models, "admin", rate_per_second=10.0)
    headers = bearer(limited)
    for body in (
        {"scope": "read"},
        {"scope": "read", "rate": "20/s"},
        {"scope": "read", "rate": 5, "burst": 50},
    ):
        refused = app_client.post("/v1/keys", json=body, headers=headers)
        assert refused.status_code == 403, body
        assert "looser limit" in refused.json()["error"]["message"]
    assert (
        app_client.post(
            "/v1/keys", json={"scope": "read", "rate": "5/s"}, headers=headers
        ).status_code
        == 201
    )


def test_without_refreshes_valid_keys_still_pass_after_a_clients_failures(
    two_models: Settings,
) -> None:
    settings = two_models.model_copy(
        update={"refresh_seconds": 0, "auth_failure_burst": 3, "auth_failures_per_second": 0.001}
    )
    good = make_key(settings, "read")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        for _ in range(10):
            client.get("/v1/models", headers=bearer(f"sy_{'0' * 16}_{'x' * 30}"))
        assert client.get("/v1/models", headers=bearer(good)).status_code == 200


def test_the_failure_budget_of_an_ipv6_client_is_its_slash_64() -> None:
    from starlette.requests import Request

    from shipyard.access import api as access_api

    def client(host: str) -> str:
        return access_api._client(Request({"type": "http", "client": (host, 1), "headers": []}))

    assert client("2001:db8:1:2::1") == client("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert client("2001:db8:1:3::1") != client("2001:db8:1:2::1")
    assert client("10.0.0.7") == "10.0.0.7"

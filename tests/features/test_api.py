"""/v1/features over the real app: online features by entity keys, typed and bounded bodies,
and API keys limited to feature views."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from shipyard.access import KeyStore
from shipyard.app import create_app
from shipyard.core import Settings
from shipyard.core.errors import Forbidden, InvalidInput
from shipyard.features import FeatureStore, load_definitions
from shipyard.registry import Registry
from shipyard.store import tables

END = datetime(2026, 6, 20, tzinfo=UTC)


@pytest.fixture
def served(sqlite_settings: Settings, definitions_file: Path) -> Settings:
    with (
        Registry.from_settings(sqlite_settings) as registry,
        FeatureStore(registry, sqlite_settings) as store,
    ):
        store.apply(load_definitions(definitions_file))
        store.materialize(end=END)
    return sqlite_settings


def _token(settings: Settings, scope: str, **options: object) -> str:
    with Registry.from_settings(settings) as registry:
        return KeyStore(registry.database).create(scope, **options)[1]  # type: ignore[arg-type]


@pytest.fixture
def client(served: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(served), raise_server_exceptions=False) as test_client:
        yield test_client


def test_online_features_by_entity_keys(client: TestClient, served: Settings) -> None:
    token = _token(served, "predict")
    answer = client.post(
        "/v1/features/online",
        json={"features": ["customer_activity:customer_count_7d", "merchant_risk:*"],
              "entities": [{"customer_id": 5, "merchant_id": 3}, {"customer_id": 424242, "merchant_id": 3}]},
        headers={"Authorization": f"Bearer {token}"},
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["views"] == {"customer_activity": 1, "merchant_risk": 1}
    first, unknown = body["results"]
    assert set(first["values"]) == {"customer_count_7d", "merchant_fraud_rate_7d"}
    assert first["event_times"]["merchant_risk"].startswith("2026-06-20")
    assert unknown["status"]["customer_activity"] == "missing"
    assert unknown["values"]["customer_count_7d"] == 0  # no events in the window: a count of 0
    assert body["missing"]["customer_activity"] >= 1


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"features": [], "entities": [{"customer_id": 1}]}, 400, "at least 1 item"),
        ({"features": ["customer_daily"], "entities": [{"customer_id": 1}]}, 400, "pattern"),
        ({"features": ["customer_daily:daily_spend"], "entities": []}, 400, "at least 1 item"),
        (
            {"features": ["customer_daily:daily_spend"], "entities": [{"customer_id": [1]}]},
            400,
            "customer_id",
        ),
        (
            {"features": ["customer_daily:daily_spend"], "entities": [{"customer_id": 1}] * 1001},
            400,
            "at most 1000",
        ),
        (
            {
                "features": ["customer_daily:daily_spend"],
                "entities": [{"customer_id": 1}],
                "extra": 1,
            },
            400,
            "extra",
        ),
        (
            {"features": ["customer_daily:daily_spend"], "entities": [{"merchant_id": 1}]},
            422,
            "has no 'customer_id'",
        ),
        (
            {"features": ["customer_daily:nope"], "entities": [{"customer_id": 1}]},
            422,
            "has no feature nope",
        ),
    ],
)
def test_bad_requests_are_refused_with_the_reason(
    client: TestClient, served: Settings, body: dict[str, object], status: int, says: str
) -> None:
    token = _token(served, "read")
    answer = client.post(
        "/v1/features/online", json=body, headers={"Authorization": f"Bearer {token}"}
    )
    assert answer.status_code == status, answer.text
    assert says in answer.text


def test_an_unknown_view_is_404(client: TestClient, served: Settings) -> None:
    token = _token(served, "read")
    answer = client.post(
        "/v1/features/online",
        json={"features": ["nope:x"], "entities": [{"customer_id": 1}]},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 404
    assert "no feature view named 'nope'" in answer.json()["error"]["message"]


def test_keys_limited_to_feature_views(client: TestClient, served: Settings) -> None:
    limited = _token(served, "read", feature_views=["merchant_risk"], name="risk-only")
    headers = {"Authorization": f"Bearer {limited}"}
    body = {"features": ["customer_daily:daily_spend"], "entities": [{"customer_id": 1}]}
    denied = client.post("/v1/features/online", json=body, headers=headers)
    assert denied.status_code == 403
    assert "may not read the feature view customer_daily" in denied.json()["error"]["message"]
    allowed = client.post(
        "/v1/features/online",
        json={"features": ["merchant_risk:*"], "entities": [{"merchant_id": 1}]},
        headers=headers,
    )
    assert allowed.status_code == 200
    listed = client.get("/v1/features/views", headers=headers).json()["views"]
    assert [v["name"] for v in listed] == ["merchant_risk"]
    assert client.get("/v1/features/views/customer_daily", headers=headers).status_code == 403
    assert client.get("/v1/features/views/merchant_risk", headers=headers).status_code == 200
    # no key, no features
    assert client.post("/v1/features/online", json=body).status_code == 401
    # a limited admin key cannot create a key that reads more than it does
    limited_admin = _token(served, "admin", feature_views=["merchant_risk"])
    created = client.post(
        "/v1/keys", json={"scope": "read"}, headers={"Authorization": f"Bearer {limited_admin}"}
    )
    assert created.status_code == 403
    narrower = client.post(
        "/v1/keys",
        json={"scope": "read", "feature_views": ["merchant_risk"]},
        headers={"Authorization": f"Bearer {limited_admin}"},
    )
    assert narrower.status_code == 201, narrower.text
    assert narrower.json()["key"]["feature_views"] == ["merchant_risk"]


def test_views_are_listed_and_keys_record_their_views(served: Settings) -> None:
    with Registry.from_settings(served) as registry:
        keys = KeyStore(registry.database)
        key, _ = keys.create("read", feature_views=["merchant_risk", "merchant_risk"])
        assert key.feature_views == ("merchant_risk",)
        assert keys.list_keys()[-1].feature_views == ("merchant_risk",)  # read back
        with pytest.raises(Forbidden):
            key.check_views(["customer_daily"])
        with registry.database.transaction() as conn:
            stored = conn.execute(
                select(tables.api_keys.c.feature_views).where(tables.api_keys.c.id == key.id)
            ).scalar_one()
        assert stored == ["merchant_risk"]


def test_key_values_that_name_no_entity_are_refused_not_a_500(
    client: TestClient, served: Settings
) -> None:
    token = _token(served, "read")
    headers = {"Authorization": f"Bearer {token}"}
    for value, status in ((2**63, 400), (10**20, 400), (True, 400), ("12x", 422), ("5", 200)):
        answer = client.post(
            "/v1/features/online",
            json={"features": ["customer_daily:daily_spend"], "entities": [{"customer_id": value}]},
            headers=headers,
        )
        assert answer.status_code == status, (value, answer.text)
    with Registry.from_settings(served) as registry, FeatureStore(registry, served) as store:
        for bad in (5.9, True, 1e300, [1]):
            with pytest.raises(InvalidInput, match="must be a 64-bit integer"):
                store.serve([{"customer_id": bad}], ["customer_daily:daily_spend"])
        assert (
            store.serve([{"customer_id": 5.0}], ["customer_daily:daily_spend"])[0]["customer_id"]
            == 5.0
        )


def test_a_sql_source_s_password_is_never_shown(
    client: TestClient, served: Settings, tmp_path: Path
) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'w.db'}")
    pd.DataFrame({"customer_id": [1], "event_timestamp": [pd.Timestamp("2026-06-01", tz="UTC")],
                  "x": [1.0]}).to_sql("t", engine, index=False)  # fmt: skip
    engine.dispose()
    module = tmp_path / "secret.py"
    module.write_text(
        "from shipyard.features import Entity, FeatureView, SqlSource\n"
        "c = Entity('customer', join_keys=['customer_id'])\n"
        "s = FeatureView(name='secret', entities=[c], features=['x'],\n"
        f"    source=SqlSource('SELECT * FROM t', 'sqlite://user:hunter2@/{tmp_path / 'w.db'}'))\n"
    )
    with Registry.from_settings(served) as registry, FeatureStore(registry, served) as store:
        store.apply(load_definitions(module), check_sources=False)
    for scope in ("read", "admin"):
        token = _token(served, scope)
        shown = client.get(
            "/v1/features/views/secret", headers={"Authorization": f"Bearer {token}"}
        )
        assert shown.status_code == 200
        assert "hunter2" not in shown.text
        assert "***" in shown.text

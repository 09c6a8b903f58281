"""Features served with predictions: a request carries entity keys and request-time fields,
the server looks the rest up in the online store, the model scores exactly what training saw
for that entity and time, the log keeps the values used, and missing or stale values follow
each view's policy."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sklearn.linear_model import LogisticRegression

from shipyard.access import KeyStore
from shipyard.app import create_app
from shipyard.core import Settings
from shipyard.core.errors import InvalidInput
from shipyard.features import FeatureStore, load_definitions
from shipyard.logstore import LogReader
from shipyard.registry import Registry
from tests.features.conftest import entity_rows, transactions

END = datetime(2026, 6, 20, tzinfo=UTC)
STORE_FEATURES = [
    "customer_activity:customer_avg_transaction_amount_30d",
    "customer_activity:customer_count_7d",
    "merchant_risk:merchant_fraud_rate_7d",
]
COLUMNS = [
    "customer_avg_transaction_amount_30d",
    "customer_count_7d",
    "merchant_fraud_rate_7d",
    "amount",
]


@pytest.fixture
def served(sqlite_settings: Settings, definitions_file: Path) -> tuple[Settings, Any, str]:
    """A model trained on a point-in-time training set (three store features and the
    request's amount), registered with that lineage, serving; the store materialized at END."""
    events = transactions()
    rows = entity_rows(events, n=300).assign(amount=lambda f: np.round(f["label"] * 20 + 30.0, 2))
    with (
        Registry.from_settings(sqlite_settings) as registry,
        FeatureStore(registry, sqlite_settings) as store,
    ):
        store.apply(load_definitions(definitions_file))
        training = store.training_set(rows, STORE_FEATURES)
        frame = training.to_pandas()
        X = frame[COLUMNS].fillna(0.0)
        model = LogisticRegression(max_iter=500).fit(X, frame["label"])
        registry.register(
            model, name="fraud-by-keys", sample=X.iloc[:200], aliases=["production"],
            lineage={"feature_store": training.lineage},
        )  # fmt: skip
        store.materialize(end=END)
        token = KeyStore(registry.database).create("admin")[1]
    return sqlite_settings, model, token


@pytest.fixture
def client(served: tuple[Settings, Any, str]) -> Iterator[TestClient]:
    settings, _, token = served
    app = create_app(settings)
    with TestClient(
        app, raise_server_exceptions=False, headers={"Authorization": f"Bearer {token}"}
    ) as c:
        yield c


def test_requests_carry_keys_and_the_server_adds_the_features(
    served: tuple[Settings, Any, str],
) -> None:
    settings, model, token = served
    client = TestClient(create_app(settings), raise_server_exceptions=False,
                        headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    client.__enter__()  # the app's lifespan: its log writer flushes when it ends
    requests = [
        {"customer_id": 5, "merchant_id": 3, "amount": 42.0},
        {"customer_id": 17, "merchant_id": 9, "amount": 80.5},
        {"customer_id": 23, "merchant_id": 2, "amount": 10.0},
        # a caller's own value of a store feature is replaced by the store's
        {"customer_id": 5, "merchant_id": 3, "amount": 42.0, "customer_count_7d": 999},
    ]
    answer = client.post("/v1/models/fraud-by-keys/predict", json={"instances": requests})
    assert answer.status_code == 200, answer.text
    # a customer never seen has no average: the model was trained without nulls, so it is
    # refused naming the feature, as a request missing it would be
    unseen = client.post(
        "/v1/models/fraud-by-keys/predict",
        json={"instances": [{"customer_id": 31337, "merchant_id": 2, "amount": 10.0}]},
    )
    assert unseen.status_code == 422
    assert "instances[0].customer_avg_transaction_amount_30d: is null" in unseen.text
    scores = [p["score"] for p in answer.json()["predictions"]]
    # the skew test, end to end: the offline vector for the same entities at END
    with Registry.from_settings(settings) as registry, FeatureStore(registry, settings) as store:
        offline = store.training_set(
            pd.DataFrame(requests)[["customer_id", "merchant_id", "amount"]].assign(
                event_timestamp=END
            ),
            STORE_FEATURES,
        ).to_pandas()
    expected = model.predict_proba(offline[COLUMNS].fillna(0.0))[:, 1]
    full = offline[COLUMNS].notna().all(axis=1).to_numpy()
    assert full.all()
    # the scores agree to the served runtime's float32 precision (ONNX); the vectors exactly
    np.testing.assert_allclose(np.array(scores), expected, atol=1e-5)
    assert scores[3] == scores[0]
    client.__exit__(None, None, None)
    logged = LogReader(Registry.from_settings(settings).artifacts).predictions("fraud-by-keys")
    features = pd.DataFrame(logged.column("features").to_pylist())
    assert len(features) == 4  # the refused request was not scored
    for column in COLUMNS:  # what the model saw is what training computed, cell by cell
        assert features[column].tolist() == offline[column].tolist(), column
    assert features.loc[3, "customer_count_7d"] != 999  # the store's value was logged and used


def test_a_v2_request_to_such_a_model_says_where_to_send_keys(client: TestClient) -> None:
    answer = client.post(
        "/v2/models/fraud-by-keys/infer",
        json={
            "inputs": [
                {"name": c, "shape": [1], "datatype": "FP64", "data": [1.0]} for c in COLUMNS
            ]
        },
    )
    assert answer.status_code == 400
    assert (
        "send records with their entity keys to POST /v1/models/fraud-by-keys/predict"
        in answer.text
    )


def test_missing_or_stale_values_follow_the_view_policy(
    served: tuple[Settings, Any, str], definitions_file: Path, tmp_path: Path
) -> None:
    settings, _, token = served
    # a second model on customer_daily, whose 2-day TTL has long passed (the data is from June)
    with Registry.from_settings(settings) as registry, FeatureStore(registry, settings) as store:
        for policy in ("reject", "default"):
            text = definitions_file.read_text().replace(
                'owner="fraud-team",', f'owner="fraud-team", on_missing="{policy}",'
            )
            text = text.replace('features=["daily_spend", "daily_count"]',
                                'features=[Feature("daily_spend", "float", default=-1.0), "daily_count"]')  # fmt: skip
            text = text.replace(
                "from shipyard.features import", "from shipyard.features import Feature,"
            )
            module = tmp_path / f"{policy}.py"
            module.write_text(text)
            store.apply(load_definitions(module))
            store.materialize(["customer_daily"], end=END)
            if policy == "reject":
                rows = entity_rows(transactions(), n=100)
                training = store.training_set(rows, ["customer_daily:daily_spend"])
                frame = training.to_pandas().fillna(0.0)
                model = LogisticRegression().fit(frame[["daily_spend"]], frame["label"])
                registry.register(
                    model, name="by-daily", sample=frame[["daily_spend"]], aliases=["production"],
                    lineage={"feature_store": training.lineage},
                )  # fmt: skip
                with TestClient(create_app(settings), raise_server_exceptions=False,
                                headers={"Authorization": f"Bearer {token}"}) as client:  # fmt: skip
                    refused = client.post(
                        "/v1/models/by-daily/predict", json={"instances": [{"customer_id": 5}]}
                    )
                assert refused.status_code == 422, refused.text
                assert "row 0 (customer_id=5): daily_spend stale" in refused.text
                assert "on_missing='reject'" in refused.text
            else:
                with TestClient(create_app(settings), raise_server_exceptions=False,
                                headers={"Authorization": f"Bearer {token}"}) as client:  # fmt: skip
                    answered = client.post(
                        "/v1/models/by-daily/predict", json={"instances": [{"customer_id": 5}]}
                    )
                    assert answered.status_code == 200, answered.text
                served_with = store.serve([{"customer_id": 5}], ["customer_daily:daily_spend"])
                assert served_with == [{"customer_id": 5, "daily_spend": -1.0}]  # the default


def test_models_show_names_the_views_a_version_was_trained_on(
    served: tuple[Settings, Any, str],
) -> None:
    from tests.cli.test_cli import shipyard

    settings, _, _ = served
    shown = shipyard(Path(settings.home), "models", "show", "fraud-by-keys:1")
    assert shown.returncode == 0, shown.stderr
    assert "trained on feature views customer_activity v1, merchant_risk v1" in " ".join(
        shown.stdout.split()
    )
    assert "served by entity keys (3 features looked up per request)" in " ".join(
        shown.stdout.split()
    )


def test_a_key_limited_to_other_views_cannot_predict_with_these(
    served: tuple[Settings, Any, str],
) -> None:
    settings, _, _ = served
    with Registry.from_settings(settings) as registry:
        limited = KeyStore(registry.database).create("predict", feature_views=["customer_daily"])[1]
        allowed = KeyStore(registry.database).create(
            "predict", feature_views=["customer_activity", "merchant_risk"]
        )[1]
    body = {"instances": [{"customer_id": 5, "merchant_id": 3, "amount": 42.0}]}
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        denied = client.post("/v1/models/fraud-by-keys/predict", json=body,
                             headers={"Authorization": f"Bearer {limited}"})  # fmt: skip
        ok = client.post("/v1/models/fraud-by-keys/predict", json=body,
                         headers={"Authorization": f"Bearer {allowed}"})  # fmt: skip
    assert denied.status_code == 403
    assert "may not read the feature view customer_activity, merchant_risk" in denied.text
    assert ok.status_code == 200


def test_a_model_is_served_the_view_version_it_was_trained_on(
    served: tuple[Settings, Any, str], definitions_file: Path, tmp_path: Path
) -> None:
    """A new definition of a view (the 30-day mean becomes a 7-day one) is a new version; the
    model trained on the old one goes on reading the old one's values, which `materialize`
    keeps up to date while that model is served."""
    settings, model, token = served
    changed = tmp_path / "changed.py"
    changed.write_text(
        definitions_file.read_text().replace(
            'Aggregation("amount", "mean", "30d"', 'Aggregation("amount", "mean", "7d"'
        )
    )
    requests = [{"customer_id": c, "merchant_id": 3, "amount": 42.0} for c in (1, 5, 17, 23, 40)]
    entities = pd.DataFrame(requests).assign(event_timestamp=END)
    with Registry.from_settings(settings) as registry, FeatureStore(registry, settings) as store:
        store.apply(load_definitions(changed))
        assert store.view("customer_activity")["version"] == 2
        assert store.served_versions() == {
            "customer_activity": {1: ["fraud-by-keys:1"]},
            "merchant_risk": {1: ["fraud-by-keys:1"]},
        }
        runs = store.materialize(end=END)
        assert sorted((r["view"], r["version"]) for r in runs) == [
            ("customer_activity", 1), ("customer_activity", 2),
            ("customer_daily", 1), ("merchant_risk", 1),
        ]  # fmt: skip
        named = store.materialize(["customer_activity"], end=END)
        assert [(r["view"], r["version"]) for r in named] == [
            ("customer_activity", 2),
            ("customer_activity", 1),
        ]
        one = store.materialize(["customer_activity@2"], end=END)
        assert [(r["view"], r["version"]) for r in one] == [("customer_activity", 2)]
        with pytest.raises(InvalidInput, match="'customer_activity@x' is not a view name"):
            store.materialize(["customer_activity@x"], end=END)
        trained_on = store.training_set(
            entities, [f.replace(":", "@1:", 1) for f in STORE_FEATURES]
        ).to_pandas()
        latest = store.training_set(entities, STORE_FEATURES).to_pandas()
    average = "customer_avg_transaction_amount_30d"
    assert (trained_on[average] != latest[average]).any()  # the two versions' values differ
    from tests.cli.test_cli import shipyard

    shown = shipyard(Path(settings.home), "features", "show", "customer_activity", "--json")
    assert json.loads(shown.stdout)["served_to"] == {"1": ["fraud-by-keys:1"]}
    with TestClient(create_app(settings), raise_server_exceptions=False,
                    headers={"Authorization": f"Bearer {token}"}) as client:  # fmt: skip
        answer = client.post("/v1/models/fraud-by-keys/predict", json={"instances": requests})
    assert answer.status_code == 200, answer.text
    scores = [p["score"] for p in answer.json()["predictions"]]
    expected = model.predict_proba(trained_on[COLUMNS].fillna(0.0))[:, 1]
    np.testing.assert_allclose(np.array(scores), expected, atol=1e-5)
    logged = LogReader(Registry.from_settings(settings).artifacts).predictions("fraud-by-keys")
    used = pd.DataFrame(logged.column("features").to_pylist())
    assert used[average].tolist() == trained_on[average].tolist()

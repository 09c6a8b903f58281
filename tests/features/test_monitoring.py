"""Feature views in monitoring: each materialization is profiled against the view's reference
(drift seen at the store, before a model scores it), and a model's report says how fresh the
views it was trained on are, with an alert rule on it (`freshness(view) > 2h`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from shipyard.app import create_app
from shipyard.core import Settings
from shipyard.core.errors import InvalidInput
from shipyard.features import FeatureStore
from shipyard.monitoring import AlertManager, Monitor, parse_rule
from shipyard.registry import Registry
from tests.features.test_served import served  # noqa: F401  (the fixture)


def _predict(settings: Settings, token: str) -> None:
    with TestClient(create_app(settings), raise_server_exceptions=False,
                    headers={"Authorization": f"Bearer {token}"}) as client:  # fmt: skip
        answer = client.post("/v1/models/fraud-by-keys/predict", json={"instances": [
            {"customer_id": c, "merchant_id": 3, "amount": 20.0} for c in (5, 17, 23)]})  # fmt: skip
        assert answer.status_code == 200, answer.text


def test_freshness_is_reported_checked_and_alerted_on(served: tuple[Settings, Any, str]) -> None:  # noqa: F811
    settings, _, token = served
    _predict(settings, token)
    with Registry.from_settings(settings) as registry:
        manager = AlertManager(registry.database)
        manager.add_rule("fraud-by-keys", "freshness(customer_activity) > 2h", severity="critical")
        with pytest.raises(InvalidInput, match="no feature view named 'nope'"):
            manager.add_rule("fraud-by-keys", "freshness(nope) > 2h")
        monitor = Monitor.from_settings(settings, registry)
        report = monitor.run("fraud-by-keys", window="1d", periods=1)
        summary = report.versions[1]
        health = summary["feature_views"]["customer_activity"]
        assert health["freshness_seconds"] > 100 * 86_400  # materialized as of June
        assert set(summary["feature_views"]) == {"customer_activity", "merchant_risk"}
        check = next(
            c for c in summary["checks"] if c["name"] == "freshness (customer_activity, hours)"
        )
        assert check["status"] == "ok"
        assert "no TTL" in check["note"]
        assert [a["evidence"]["rule"] for a in report.alerts if a["status"] == "firing"] == [
            "freshness(customer_activity) > 2h"
        ]
        # materialized now: fresh again, and the alert resolves
        FeatureStore(registry, settings).materialize()
        again = monitor.run("fraud-by-keys", window="1d", periods=1)
        assert again.versions[1]["feature_views"]["customer_activity"]["freshness_seconds"] < 3600
        assert [a["status"] for a in again.alerts] == ["resolved"]


def test_rules_on_freshness_read_durations() -> None:
    assert parse_rule("freshness(customer_stats) > 2h").threshold == 7200
    assert parse_rule("freshness(customer_stats) >= 90m").threshold == 5400
    with pytest.raises(InvalidInput, match="needs a feature view"):
        parse_rule("freshness > 2h")
    with pytest.raises(InvalidInput, match="only applies to freshness"):
        parse_rule("accuracy < 2h")


def test_each_materialization_is_profiled_against_the_reference(
    sqlite_settings: Settings, definitions_file: Path, data_dir: Path
) -> None:
    from shipyard.features import load_definitions

    with (
        Registry.from_settings(sqlite_settings) as registry,
        FeatureStore(registry, sqlite_settings) as store,
    ):
        store.apply(load_definitions(definitions_file))
        first = store.materialize(["customer_daily"], full=True)[0]["profile"]
        assert first is not None
        assert first["reference"]["rows"] > 0
        assert first["drifted"] == []
        assert 0 <= first["null_rate"]["daily_spend"] < 1
        same = store.materialize(["customer_daily"], full=True)[0]["profile"]
        assert same is not None
        assert same["drifted"] == []
        snapshots = pd.read_parquet(data_dir / "snapshots.parquet")
        snapshots.assign(daily_spend=snapshots["daily_spend"] * 5 + 100).to_parquet(
            data_dir / "snapshots.parquet"
        )
        moved = store.materialize(["customer_daily"], full=True)[0]["profile"]
        assert moved is not None
        assert moved["drifted"] == ["daily_spend"]
        assert moved["columns"]["daily_count"]["status"] == "ok"

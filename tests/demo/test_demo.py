"""`shipyard demo` runs the fraud story end to end on embedded defaults."""

from __future__ import annotations

import pytest
from tests.conftest import DemoRun

from shipyard.core import Settings
from shipyard.demo import FEATURES, LABEL, transactions
from shipyard.monitoring import Monitor
from shipyard.registry import Registry

pytestmark = pytest.mark.slow


def test_synthetic_transactions_are_deterministic_and_realistic() -> None:
    a, b = transactions(20_000, seed=3), transactions(20_000, seed=3)
    assert a.equals(b)
    assert 0.01 <= a[LABEL].mean() <= 0.02
    assert set(FEATURES) <= set(a.columns)
    assert a["distance_from_home_km"].isna().mean() > 0
    assert a["timestamp"].is_monotonic_increasing
    assert a.groupby("merchant_category")["transaction_amount"].median()["jewelry"] > 100


def test_demo_plays_the_serving_story_end_to_end(demo_run: DemoRun) -> None:
    result, text = demo_run.result, demo_run.text
    # alerts are told by the story, not as log lines in the middle of it
    assert not demo_run.monitoring_records
    assert (result.version, result.challenger) == (1, 2)
    assert result.runtime == "onnxruntime"
    assert result.metrics["auc"] > 0.75
    assert result.scored == 40
    assert len(result.single_latencies_ms) == 40
    assert result.v2_status == 200
    # the canary took about 10% of 2,000 sticky requests (binomial sd ~0.7 points)
    assert 0.05 < result.canary_share < 0.15
    assert result.sticky
    assert result.statuses == {
        "no key": 401,
        "predict key on /v1/keys": 403,
        "malformed transaction": 422,
        "partner over 5/s": 429,
        "20,000 records in one request": 413,
    }
    assert result.after_rollback == {1}
    # the feature store act: the seed's features from the store, served by entity keys
    assert result.features is not None
    assert result.features.views == ["customer_activity", "customer_profile", "merchant_risk"]
    assert result.features.training_rows == 10_000  # every entity row, none dropped
    assert result.features.auc > 0.7
    assert result.features.served == 3
    assert result.features.same_as_training
    # every answered prediction and every accepted label is in the Parquet log
    answered = 40 + 1000 + 1 + 2000 + 300  # singles, batches, the V2 call, canary, after rollback
    assert 5 <= result.partner_answered <= 6  # a burst of 5, and at most one token refilled
    assert result.logged["predictions"] == answered + result.partner_answered
    assert result.labels_accepted == 40 + 1000 + 2000
    assert result.logged["labels"] == result.labels_accepted
    # the closing table names the version serving at the end, after the loop promoted one
    loop = result.loop
    assert loop is not None
    assert loop.status == "promoted"
    assert loop.champion_after == loop.candidate
    assert f"fraud-detector:{loop.champion_after} in production" in text
    # the report left behind is the one after the loop, with the promoted version in it
    assert loop.html is not None
    assert f"Version {loop.champion_after} " in loop.html.read_text()
    # a month in production: the amount shift and the accuracy decline are caught
    month = result.month
    assert month is not None
    accuracy = [w["accuracy"] for w in month.weeks]
    assert accuracy == sorted(accuracy, reverse=True)
    assert "transaction_amount" in month.drifted
    assert "drift(transaction_amount)" in month.alerts
    assert month.concept_drift
    assert month.html is not None
    assert month.html.exists()
    # the dashboard: where to open it and the admin key to sign in with
    assert "http://127.0.0.1:8000/ui" in text
    assert result.dashboard_key.startswith("sy_")
    assert result.dashboard_key in text.replace("\n", "")
    # the KPIs declared beside the model in the demo's shipyard.yaml are in the last report
    settings = Settings(home=demo_run.home, database_url=None, artifact_root=None)
    with Registry.from_settings(settings) as registry:
        report = Monitor.from_settings(settings, registry).last_snapshot("fraud-detector", "7d")
    assert report is not None
    kpis = {k["name"]: k for k in report["versions"][str(loop.champion_after)]["kpis"]}
    assert set(kpis) == {
        "fraud_blocked_usd", "fraud_missed_usd", "flagged_for_review", "approval_rate",
        "false_alarm_rate",
    }  # fmt: skip
    assert kpis["fraud_blocked_usd"]["total"] > 0
    assert 0.5 < kpis["approval_rate"]["total"] < 1


def test_the_demo_s_champion_is_made_again_exactly_and_the_installation_is_level_3(
    demo_run: DemoRun,
) -> None:
    governance = demo_run.result.governance
    assert governance is not None
    # the retrained champion, trained again from its run's record (entrypoint, params, data
    # versions, seed): the same predictions on every holdout row
    assert governance.reproduced == "identical"
    assert governance.data_versions >= 2  # the retrain's training set and holdout
    assert governance.card is not None
    page = governance.card.read_text()
    assert page.lower().lstrip().startswith("<!doctype html>")
    assert "customer_age_band" in page  # per-group metrics: the demo declares the attribute
    assert "payments-risk@example.com" in page  # the card's text from the project file
    assert governance.maturity == 3
    assert governance.unmet == []
    text = " ".join(demo_run.text.split())
    assert "maturity: level 3 (full MLOps automation); every criterion evidenced" in text

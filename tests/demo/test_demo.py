"""`shipyard demo` runs the fraud story end to end on embedded defaults."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
from rich.console import Console

from shipyard.demo import FEATURES, LABEL, run_demo, transactions

pytestmark = pytest.mark.slow


def test_synthetic_transactions_are_deterministic_and_realistic() -> None:
    a, b = transactions(20_000, seed=3), transactions(20_000, seed=3)
    assert a.equals(b)
    assert 0.01 <= a[LABEL].mean() <= 0.02
    assert set(FEATURES) <= set(a.columns)
    assert a["distance_from_home_km"].isna().mean() > 0
    assert a["timestamp"].is_monotonic_increasing
    assert a.groupby("merchant_category")["transaction_amount"].median()["jewelry"] > 100


def test_demo_plays_the_serving_story_end_to_end(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = io.StringIO()
    with caplog.at_level(logging.INFO, logger="shipyard.monitoring"):
        result = run_demo(
            tmp_path / "demo", rows=10_000, requests=40, console=Console(file=out, width=120)
        )
    text = out.getvalue()
    # alerts are told by the story, not as log lines in the middle of it
    assert not [r for r in caplog.records if r.name.startswith("shipyard.monitoring")]
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

"""The rules of the loop: gates on the holdout, and the live decision between champion and
challenger (guardrails, a sequential test that may stop early, patience when evidence is thin)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import accuracy_score, roc_auc_score

from shipyard.core import errors as e
from shipyard.retraining import ArmEvidence, RolloutSpec, decide, holdout_metrics, parse_gate
from shipyard.retraining._gates import check

ROLLOUT = RolloutSpec(
    min_labels=500,
    max_labels=5000,
    confidence=0.95,
    margin=0.005,
    max_error_rate=0.02,
    max_latency_p95_ms=100,
)


def arm(
    version: int,
    labelled: int,
    accuracy: float,
    *,
    errors: int = 0,
    volume: int | None = None,
    latency: float = 5.0,
) -> ArmEvidence:
    return ArmEvidence(
        version,
        volume if volume is not None else labelled,
        labelled,
        round(labelled * accuracy),
        errors,
        latency,
    )


def test_a_clearly_better_challenger_is_promoted_early() -> None:
    decision = decide(arm(1, 900, 0.88), arm(2, 600, 0.95), ROLLOUT)
    assert decision.verdict == "promote"
    test = decision.evidence["test"]
    assert test["information_fraction"] == pytest.approx(1500 / 10_000)
    # the early boundary is stricter than the final one (O'Brien-Fleming)
    assert test["boundary"] == pytest.approx(stats.norm.ppf(0.95) / np.sqrt(0.15))
    assert test["z_not_worse"] >= test["boundary"]


def test_a_clearly_worse_challenger_is_rolled_back() -> None:
    decision = decide(arm(1, 3000, 0.95), arm(2, 3000, 0.90), ROLLOUT)
    assert decision.verdict == "rollback"
    assert "worse than the champion" in decision.reason


def test_thin_evidence_waits_and_says_how_much_is_needed() -> None:
    decision = decide(arm(1, 4000, 0.9), arm(2, 120, 0.95), ROLLOUT)
    assert decision.verdict == "wait"
    assert "deciding needs 500 of each" in decision.reason


def test_a_close_race_waits_then_keeps_the_champion_when_evidence_runs_out() -> None:
    early = decide(arm(1, 600, 0.90), arm(2, 600, 0.898), ROLLOUT)
    assert early.verdict == "wait"
    late = decide(arm(1, 5000, 0.90), arm(2, 5000, 0.893), ROLLOUT)
    assert late.verdict == "rollback"
    assert "no clear result" in late.reason


@pytest.mark.parametrize(
    ("challenger", "fragment"),
    [
        (arm(2, 10, 0.99, errors=30, volume=100), "error rate 23.1% is over the 2.0% limit"),
        (arm(2, 10, 0.99, latency=180.0), "latency p95 180 ms is over the 100 ms budget"),
    ],
)
def test_guardrails_roll_back_at_once_whatever_the_labels(
    challenger: ArmEvidence, fragment: str
) -> None:
    decision = decide(arm(1, 10, 0.9), challenger, ROLLOUT)
    assert decision.verdict == "rollback"
    assert fragment in decision.reason


def test_the_sequential_test_keeps_its_false_promotion_rate_when_peeking() -> None:
    """A challenger truly worse by 2 points, looked at 10 times: promoted rarely (< 5%)."""
    rng = np.random.default_rng(5)
    promoted = 0
    trials = 400
    for _ in range(trials):
        champ = rng.random(5000) < 0.92
        chall = rng.random(5000) < 0.90
        for n in range(500, 5001, 500):
            verdict = decide(
                ArmEvidence(1, n, n, int(champ[:n].sum()), 0, 5.0),
                ArmEvidence(2, n, n, int(chall[:n].sum()), 0, 5.0),
                ROLLOUT,
            ).verdict
            if verdict != "wait":
                promoted += verdict == "promote"
                break
    assert promoted / trials < 0.05


def test_gates_read_absolute_and_champion_relative_bars() -> None:
    gate = parse_gate("auc >= champion - 0.005")
    assert (gate.metric, gate.op, gate.value, gate.delta) == ("auc", ">=", None, -0.005)
    results = check(
        ["auc >= 0.9", "auc >= champion - 0.005", "latency_per_row_ms <= 1"],
        {"auc": 0.918, "latency_per_row_ms": 0.02},
        {"auc": 0.92},
    )
    assert [r.passed for r in results] == [True, True, True]
    failed = check(["auc >= champion - 0.005"], {"auc": 0.90}, {"auc": 0.92})
    assert not failed[0].passed
    assert failed[0].bar == pytest.approx(0.915)
    first = check(["auc >= champion"], {"auc": 0.5}, None)
    assert first[0].passed
    assert first[0].note == "no champion to compare with"


@pytest.mark.parametrize(
    "bad", ["auc", "auc >= high", "vibes >= 0.5", "auc => 0.9", "auc >= champion * 2"]
)
def test_unreadable_gates_say_how_to_write_one(bad: str) -> None:
    with pytest.raises(e.InvalidInput, match=r"auc >= champion - 0\.005"):
        parse_gate(bad)


def test_holdout_metrics_equal_sklearn() -> None:
    rng = np.random.default_rng(1)
    truth = (rng.random(2000) < 0.1).astype(int)
    scores = np.clip(truth * 0.4 + rng.random(2000) * 0.6, 0, 1)

    class Served:
        def predict(self, columns: dict) -> np.ndarray:
            return np.column_stack([1 - scores, scores])

    got = holdout_metrics(Served(), {}, truth, 1, 0.5)
    assert got["auc"] == pytest.approx(roc_auc_score(truth, scores))
    assert got["accuracy"] == pytest.approx(accuracy_score(truth, scores >= 0.5))
    assert got["latency_per_row_ms"] >= 0

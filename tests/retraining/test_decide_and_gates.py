"""The rules of the loop: gates on the holdout, and the live decision between champion and
challenger (guardrails, a sequential test that may stop early, patience when evidence is thin)."""

from __future__ import annotations

import time
from datetime import timedelta

import numpy as np
import pytest
from pydantic import ValidationError
from sklearn.metrics import accuracy_score, roc_auc_score
from tests.retraining.conftest import END_OF_WEEK4, ROWS_PER_WEEK, Month

from shipyard.core import errors as e
from shipyard.demo import SPEC, replay_weeks
from shipyard.retraining import (
    ArmEvidence,
    Outcomes,
    RolloutSpec,
    decide,
    holdout_metrics,
    parse_gate,
)
from shipyard.retraining._gates import check
from shipyard.worker import Worker

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
        errors,
        latency,
        Outcomes.tally(labelled, round(labelled * accuracy)),
    )


def test_a_clearly_better_challenger_is_promoted_early() -> None:
    decision = decide(arm(1, 900, 0.88), arm(2, 600, 0.95), ROLLOUT)
    assert decision.verdict == "promote"
    test = decision.evidence["test"]
    # information: the variance of the difference at max_labels on each arm over the one seen
    at_max = (0.88 * 0.12 + 0.95 * 0.05) / 5000
    seen = 0.88 * 0.12 / 900 + 0.95 * 0.05 / 600
    assert test["information_fraction"] == pytest.approx(at_max / seen, rel=2e-3)
    # a first look spends alpha(t) = 2 - 2 Phi(z_0.975 / sqrt(t)): at t = 0.1558, 6.87e-7,
    # so its boundary is the normal quantile 4.829 (early looks are strict)
    assert test["alpha_spent"] == pytest.approx(6.87e-7, rel=0.01)
    assert test["boundary"] == pytest.approx(4.829, abs=0.005)
    assert test["z_not_worse"] >= test["boundary"]
    assert [look["boundary"] for look in test["looks"]] == [test["boundary"]]


def test_boundaries_are_the_published_obrien_fleming_spending_values() -> None:
    """Five equally spaced looks at one-sided 2.5% (gsDesign, sfLDOF): each boundary accounts
    for the looks before it, so the last is above the fixed-sample 1.96."""
    rollout = ROLLOUT.model_copy(update={"confidence": 0.975})
    looks: list[dict[str, float]] = []
    bars = []
    for n in (1000, 2000, 3000, 4000, 5000):
        decision = decide(arm(1, n, 0.9), arm(2, n, 0.9), rollout, looks)
        looks = decision.evidence["test"]["looks"]
        bars.append(decision.evidence["test"]["boundary"])
    assert bars == pytest.approx([4.8769, 3.3569, 2.6803, 2.2898, 2.0310], abs=2e-3)
    assert looks[-1]["spent"] == pytest.approx(0.025)
    assert decision.verdict == "rollback"
    assert "no clear result" in decision.reason


def test_a_look_without_new_information_spends_nothing() -> None:
    first = decide(arm(1, 2000, 0.9), arm(2, 2000, 0.9), ROLLOUT)
    looks = first.evidence["test"]["looks"]
    again = decide(arm(1, 2020, 0.9), arm(2, 2020, 0.9), ROLLOUT, looks)
    assert again.verdict == "wait"
    assert "the next look needs 1%" in again.reason
    assert again.evidence["test"]["looks"] == looks
    later = decide(arm(1, 2500, 0.9), arm(2, 2500, 0.9), ROLLOUT, looks)
    assert len(later.evidence["test"]["looks"]) == 2
    assert later.evidence["test"]["looks"][1]["spent"] > looks[0]["spent"]


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
    late = decide(arm(1, 5000, 0.90), arm(2, 5000, 0.893), ROLLOUT, early.evidence["test"]["looks"])
    assert late.verdict == "rollback"
    assert "no clear result" in late.reason


@pytest.mark.parametrize(
    ("challenger", "fragment"),
    [
        (arm(2, 10, 0.99, errors=30, volume=100), "error rate 23.1% is over the 2.0% limit"),
        (
            arm(2, 10, 0.99, volume=20, latency=180.0),
            "latency p95 180 ms is over the 100 ms budget",
        ),
    ],
)
def test_guardrails_roll_back_at_once_whatever_the_labels(
    challenger: ArmEvidence, fragment: str
) -> None:
    decision = decide(arm(1, 10, 0.9), challenger, ROLLOUT)
    assert decision.verdict == "rollback"
    assert fragment in decision.reason


@pytest.mark.parametrize(
    "challenger",
    [arm(2, 1, 1.0, volume=1, latency=900.0), arm(2, 0, 0.0, volume=0, errors=19)],
    ids=["one slow request", "19 failures"],
)
def test_guardrails_wait_for_the_minimum_volume(challenger: ArmEvidence) -> None:
    decision = decide(arm(1, 10, 0.9), challenger, ROLLOUT)
    assert decision.verdict == "wait"
    assert ROLLOUT.min_requests == 20
    with pytest.raises(ValidationError, match="min_requests"):
        RolloutSpec(min_requests=0)


def test_the_sequential_test_keeps_its_false_promotion_rate_when_peeking() -> None:
    """A challenger exactly `margin` worse (the null), looked at 10 times, is promoted at most
    alpha + 3 Monte Carlo standard errors of the time (the old z/sqrt(t) bar: 6.8%)."""
    rng = np.random.default_rng(5)
    trials, alpha = 2000, 1 - ROLLOUT.confidence
    promoted = 0
    for _ in range(trials):
        champ = np.cumsum(rng.random(5000) < 0.900)
        chall = np.cumsum(rng.random(5000) < 0.900 - ROLLOUT.margin)
        looks: list[dict[str, float]] = []
        for n in range(500, 5001, 500):
            decision = decide(
                ArmEvidence(1, n, 0, 5.0, Outcomes.tally(n, int(champ[n - 1]))),
                ArmEvidence(2, n, 0, 5.0, Outcomes.tally(n, int(chall[n - 1]))),
                ROLLOUT,
                looks,
            )
            looks = decision.evidence["test"]["looks"]
            if decision.verdict != "wait":
                promoted += decision.verdict == "promote"
                break
    mc_error = np.sqrt(alpha * (1 - alpha) / trials)
    assert promoted / trials <= alpha + 3 * mc_error


def test_cluster_robust_error_counts_a_sticky_customer_once() -> None:
    """Each customer's outcome repeated on all of their predictions (perfectly correlated):
    the clustered variance is that of the customers, not of the predictions."""
    rng = np.random.default_rng(2)
    per_customer = (rng.random(400) < 0.9).astype(float)
    alone = Outcomes.from_clusters("correct", np.ones(400), per_customer, per_customer)
    repeated = Outcomes.from_clusters(
        "correct", np.full(400, 5), 5 * per_customer, 5 * per_customer
    )
    assert repeated.variance_of_mean() == pytest.approx(alone.variance_of_mean())
    assert repeated.design_effect == pytest.approx(5 * (2000 - 1) / 2000 * 400 / 399, rel=1e-6)
    p = per_customer.mean()
    assert alone.variance_of_mean() == pytest.approx(p * (1 - p) / 399)  # CR1: G / (G - 1)
    assert Outcomes.tally(400, int(per_customer.sum())) == alone


def test_a_regressor_is_judged_on_absolute_error_with_a_margin_relative_to_the_champion() -> None:
    rollout = ROLLOUT.model_copy(update={"margin": 0.05})
    rng = np.random.default_rng(3)

    def regressor(version: int, mae: float, unparsed: int = 0) -> ArmEvidence:
        errors = np.abs(rng.normal(0, mae * np.sqrt(np.pi / 2), 5000))
        outcomes = Outcomes.from_clusters(
            "absolute_error", np.ones(5000), errors, errors**2, unparsed=unparsed
        )
        return ArmEvidence(version, 5000, 0, 5.0, outcomes)

    champion = regressor(1, 10.0)
    slightly_worse = decide(champion, regressor(2, 10.2, unparsed=7), rollout)
    assert slightly_worse.verdict == "promote"  # within 5% of the champion's MAE
    test = slightly_worse.evidence["test"]
    assert test["outcome"] == "mean absolute error"
    assert test["allowance"] == pytest.approx(0.05 * test["champion"])
    assert slightly_worse.evidence["challenger"]["unparsed_labels"] == 7
    assert "MAE" in slightly_worse.reason
    much_worse = decide(champion, regressor(2, 11.5), rollout)
    assert much_worse.verdict == "rollback"
    assert "worse than the champion" in much_worse.reason


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
    "bad", ["auc", "auc >= high", "vibes >= 0.5", "auc => 0.9", "auc >= champion / 2"]
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
            time.sleep(0.02)  # 20 ms for 2,000 rows: at least 0.01 ms a row
            return np.column_stack([1 - scores, scores])

    got = holdout_metrics(Served(), {}, truth, "binary", [0, 1], 0.5)
    assert got["auc"] == pytest.approx(roc_auc_score(truth, scores))
    assert got["accuracy"] == pytest.approx(accuracy_score(truth, scores >= 0.5))
    # the call is timed, and per row (not per call, which would be 20 ms or more)
    assert 0.01 <= got["latency_per_row_ms"] < 1.0


@pytest.mark.slow
def test_the_pipeline_hands_each_decision_the_looks_before_it(month: Month) -> None:
    """Looked at as week 5's labels come back: each look is recorded on the pipeline and the
    next decision spends only what its own look adds."""
    rollout = RolloutSpec(
        canary=10, routing_field="customer_id", min_labels=100, max_labels=20_000, confidence=0.999
    )
    spec = SPEC("fraud-detector").model_copy(update={"rollout": rollout})
    clock = [END_OF_WEEK4 + timedelta(minutes=1)]
    with Worker(
        month.settings, specs={"fraud-detector": spec}, clock=lambda: clock[0], name="looks"
    ) as worker:
        pipeline = worker.pipeline("fraud-detector")
        record = pipeline.train_and_canary({"kind": "manual"})
        replay_weeks(
            month.settings,
            "fraud-detector",
            [(4, 1.6, 0.09, 1.0)],
            start=END_OF_WEEK4 - timedelta(days=28),
            rows_per_week=ROWS_PER_WEEK,
        )
        seen = []
        for day in (2, 4, 6):
            record = pipeline.decide(record["id"], now=END_OF_WEEK4 + timedelta(days=day))
            step = record["steps"][-1]
            assert (step["step"], step["status"]) == ("decide", "waiting")
            seen.append(step["evidence"]["test"]["looks"])
    assert [len(looks) for looks in seen] == [1, 2, 3]
    assert seen[1][:1] == seen[0]
    assert seen[2][:2] == seen[1]
    spent = [look["spent"] for look in seen[-1]]
    assert spent == sorted(spent)
    assert spent[-1] < 1 - rollout.confidence
    assert [s["step"] for s in record["steps"]].count("decide") == 1  # one entry, kept current

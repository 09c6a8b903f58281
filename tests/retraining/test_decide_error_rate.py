"""The canary decision at its stated error rate: the real `decide()`, looked at again and again
as labels come back, promotes a challenger that is exactly `margin` worse at most
alpha = 1 - confidence of the time; it finds a good one; and sticky customers, whose
predictions are correlated, do not make it promote more often.

Each check is a Monte Carlo run: the false promotion rate must stay within alpha + 3 Monte
Carlo standard errors (a true 5% passes with probability 0.999). The module docstring of
`shipyard.retraining._decide` reports the same runs at 10,000 to 40,000 replications.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from shipyard.retraining import ArmEvidence, Outcomes, RolloutSpec, decide

ROLLOUT = RolloutSpec(min_labels=500, max_labels=5000, confidence=0.95, margin=0.005)
ALPHA = 1 - ROLLOUT.confidence
CHAMPION = 0.90
# labels per arm at each look: 50 up to max_labels, then two more as labels keep coming, for
# when the last one added too little information to be taken (a look needs 1% of it)
FIFTY_LOOKS = np.r_[np.linspace(500, 5000, 50).round().astype(int), 5092, 5184]

# outcomes (n, 1/0) of one arm -> its Outcomes after the first n predictions
Arm = Callable[[int], Outcomes]


def _verdicts(
    reps: int, looks: np.ndarray, draw: Callable[[np.random.Generator], tuple[Arm, Arm]]
) -> dict[str, list[int]]:
    """Per verdict, the labels per arm at which each replication ended with it."""
    rng = np.random.default_rng(11)
    ended: dict[str, list[int]] = {"promote": [], "rollback": [], "wait": []}
    for _ in range(reps):
        champion, challenger = draw(rng)
        history: list[dict[str, float]] = []
        verdict, n = "wait", 0
        for n in looks.tolist():
            decision = decide(
                ArmEvidence(1, n, 0, 5.0, champion(n)),
                ArmEvidence(2, n, 0, 5.0, challenger(n)),
                ROLLOUT,
                history,
            )
            history = decision.evidence["test"]["looks"]
            verdict = decision.verdict
            if verdict != "wait":
                break
        ended[verdict].append(n)
    return ended


def _independent(accuracy: float) -> Callable[[np.random.Generator], Arm]:
    """An arm whose predictions are independent (no routing key: a cluster each)."""

    def draw(rng: np.random.Generator) -> Arm:
        correct = np.cumsum(rng.random(5200) < accuracy)
        return lambda n: Outcomes.tally(n, int(correct[n - 1]))

    return draw


def _pair(challenger: float) -> Callable[[np.random.Generator], tuple[Arm, Arm]]:
    champion_arm, challenger_arm = _independent(CHAMPION), _independent(challenger)
    return lambda rng: (champion_arm(rng), challenger_arm(rng))


def _bound(reps: int) -> float:
    return ALPHA + 3 * np.sqrt(ALPHA * (1 - ALPHA) / reps)


def test_a_challenger_exactly_margin_worse_is_promoted_at_most_alpha_over_fifty_looks() -> None:
    reps = 800
    ended = _verdicts(reps, FIFTY_LOOKS, _pair(CHAMPION - ROLLOUT.margin))
    assert len(ended["promote"]) / reps <= _bound(reps)
    # and the test ran its course: most replications reached max_labels, and all ended
    assert sum(n >= 5000 for verdict in ended.values() for n in verdict) > reps / 2
    assert not ended["wait"]


def test_power_a_challenger_two_points_better_is_promoted_and_early() -> None:
    reps = 200
    ended = _verdicts(reps, FIFTY_LOOKS, _pair(CHAMPION + 0.02))
    assert len(ended["promote"]) / reps >= 0.95  # 0.99 at 10,000 replications
    assert np.median(ended["promote"]) <= 3000  # before max_labels (5,000)


def _customers(
    accuracy: float, correlation: float, clustered: bool, rng: np.random.Generator
) -> Arm:
    """500 sticky customers with 10 predictions each, in random order; a customer's
    predictions share their accuracy (drawn around `accuracy` with intra-customer
    correlation `correlation`). `clustered`: summed per customer, as the log's routing key
    allows; else as if each prediction were independent."""
    spread = 1 / correlation - 1
    own = rng.beta(accuracy * spread, (1 - accuracy) * spread, 500)
    customer = rng.permutation(np.repeat(np.arange(500), 10))
    correct = (rng.random(5000) < own[customer]).astype(float)
    running = np.cumsum(correct)

    def arm(n: int) -> Outcomes:
        if not clustered:
            return Outcomes.tally(n, int(running[n - 1]))
        sizes = np.bincount(customer[:n], minlength=500)
        totals = np.bincount(customer[:n], weights=correct[:n], minlength=500)
        seen = sizes > 0
        return Outcomes.from_clusters("correct", sizes[seen], totals[seen], totals[seen])

    return arm


def test_sticky_customers_keep_the_error_rate_only_with_a_clustered_error() -> None:
    """Correlation 0.2 within a customer, 10 predictions each: the variance is 2.8 times what
    independent predictions would have. Summed per routing key the false promotion rate holds;
    taken as independent, the same data promote a margin-worse challenger far more often."""
    reps, looks = 400, np.arange(500, 5001, 500)
    rates = {}
    for clustered in (True, False):

        def draw(rng: np.random.Generator, clustered: bool = clustered) -> tuple[Arm, Arm]:
            return (
                _customers(CHAMPION, 0.2, clustered, rng),
                _customers(CHAMPION - ROLLOUT.margin, 0.2, clustered, rng),
            )

        rates[clustered] = len(_verdicts(reps, looks, draw)["promote"]) / reps
    assert rates[True] <= _bound(reps)
    assert rates[False] > _bound(reps)

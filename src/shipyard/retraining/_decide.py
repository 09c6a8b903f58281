"""Champion or challenger, on live evidence: a group-sequential non-inferiority test that may
stop early, with guardrails that roll a bad canary back at once.

While the canary runs, labelled predictions of both variants accumulate. Each prediction has
an outcome: for a classifier 1 when its label was right and 0 when not (higher is better);
for a regressor its absolute error (lower is better; a label that does not read as a number
is left out and counted). Two one-sided questions are asked at each look:

    promote:   is the challenger not worse than the champion by more than the margin?
               classifier  z = (acc_1 - acc_0 + margin) / se
               regressor   z = ((1 + margin) * MAE_0 - MAE_1) / se
               (a regressor may be worse by at most margin x the champion's MAE)
    roll back: is the challenger worse at all?  z = (acc_0 - acc_1) / se,  (MAE_1 - MAE_0) / se

The standard errors are cluster-robust: sticky routing puts all of a customer's predictions
on one arm and they are correlated, so outcomes are summed per routing key (`Outcomes`) and
each arm's mean gets the sandwich variance G/(G-1) * sum_j (s_j - mean * n_j)^2 / N^2 over
its G clusters. Predictions logged without a routing key are a cluster each. The arms hold
different customers, so their variances add.

Why a group-sequential test and not an always-valid one (a confidence sequence, mSPRT): an
always-valid test pays for looks it never takes, and a canary is looked at every few
minutes but only when labels have come back, a few dozen times at most; a spending function
spends the whole error rate on the looks actually taken, so the same error rate buys more
power, and the boundaries can be computed exactly. What it needs is the history of those
looks, which each decision returns in `evidence["test"]["looks"]` and the pipeline hands
back to the next one (its "decide" step keeps it).

The error rate: alpha = 1 - rollout.confidence, spent by the Lan-DeMets O'Brien-Fleming-type
function alpha(tau) = 2 - 2 Phi(z_{1-alpha/2} / sqrt(tau)) (one-sided level alpha; alpha(1) =
alpha) over the information fraction tau = I / I_max, where I = 1 / se^2 of the promotion
statistic and I_max the information of `rollout.max_labels` labels on each arm at the
per-label variances observed now, clustering included (a champion arm larger than that
brings the end sooner). Each look's boundary makes the probability of a first crossing at
that look, under the null (the challenger exactly margin worse), equal to the error rate
that look may spend, given the boundaries the looks before it used
(`shipyard.retraining._sequential`). A look is taken only when it adds at least 1% of I_max
since the last one; until then the decision waits and spends nothing. The look that
reaches tau = 1 spends what is left; without a result there, the champion stays. The
roll-back question uses the same boundaries; they do not count toward the promotion's error
rate (a non-binding boundary only makes promotion rarer), and for a regressor its statistic
weighs the champion's variance without the (1 + margin)^2, so its own error rate is
approximate there.

Measured with the real `decide()` (tests/retraining/test_decide_error_rate.py at larger
replication counts): champion accuracy 0.90, 50 looks from 500 to 5,000 labels per arm
(then more as labels keep coming), confidence 0.95, margin 0.005:

    challenger                 replications   promoted   MC standard error
    0.895 (the null)           40,000         0.0516     0.0011   (alpha 0.05)
    0.900 (as good)            10,000         0.198      0.004
    0.920 (2 points better)    10,000         0.9955     0.0007   (median: at 2,153 labels)

(the old z/sqrt(t) boundary promoted 6.8% at the null with 10 looks, 8.2% with 46). An
equal challenger is promoted rarely here because 5,000 labels per arm measure the
difference to +-0.6 points while the margin is 0.5: power needs margin / se at max_labels
well above the final boundary (about 1.8).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from shipyard.retraining._sequential import MIN_STEP, boundary, spent
from shipyard.retraining._spec import RolloutSpec

__all__ = ["ArmEvidence", "Decision", "Outcomes", "decide"]

Verdict = Literal["promote", "rollback", "wait"]

LOOK_STEP = 0.01
"""The least new information a look takes, as a share of the planned maximum."""
OutcomeKind = Literal["correct", "absolute_error"]


@dataclass(frozen=True)
class Outcomes:
    """One arm's labelled outcomes, summed per routing-key cluster.

    For clusters j with n_j predictions, outcome sums s_j and sums of squares q_j, the test
    needs only: the number of clusters, sum n_j (`count`), sum s_j (`total`), sum q_j
    (`total_sq`), sum s_j^2 (`cluster_total_sq`), sum n_j s_j (`cluster_cross`) and sum
    n_j^2 (`cluster_size_sq`). `unparsed` counts labels left out (a regressor's label that
    is not a number).
    """

    kind: OutcomeKind
    clusters: int = 0
    count: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    cluster_total_sq: float = 0.0
    cluster_cross: float = 0.0
    cluster_size_sq: float = 0.0
    unparsed: int = 0

    @classmethod
    def from_clusters(
        cls,
        kind: OutcomeKind,
        sizes: ArrayLike,
        totals: ArrayLike,
        squares: ArrayLike,
        *,
        unparsed: int = 0,
    ) -> Outcomes:
        """From per-cluster predictions, outcome sums and outcome sums of squares."""
        n = np.asarray(sizes, dtype=float)
        s = np.asarray(totals, dtype=float)
        return cls(
            kind, int(n.size), int(n.sum()), float(s.sum()), float(np.sum(squares)),
            float(s @ s), float(n @ s), float(n @ n), unparsed,
        )  # fmt: skip

    @classmethod
    def tally(cls, labelled: int, correct: int) -> Outcomes:
        """A classifier's outcomes without routing keys: each prediction a cluster of its own."""
        return cls("correct", labelled, labelled, correct, correct, correct, correct, labelled)

    @property
    def mean(self) -> float | None:
        """Accuracy, or mean absolute error."""
        return self.total / self.count if self.count else None

    def variance_of_mean(self) -> float:
        """The cluster-robust (CR1 sandwich) variance of `mean`; inf below two clusters."""
        if self.clusters < 2 or not self.count:
            return math.inf
        mean = self.total / self.count
        spread = (
            self.cluster_total_sq
            - 2 * mean * self.cluster_cross
            + mean * mean * self.cluster_size_sq
        )
        variance = self.clusters / (self.clusters - 1) * max(spread, 0.0) / self.count**2
        # all outcomes alike (every label right): as if half of one had differed
        scale = 1.0 if self.kind == "correct" else abs(mean)
        return max(variance, (0.5 * scale / self.count) ** 2)

    @property
    def design_effect(self) -> float | None:
        """Clustered over independent variance: how much the sticky customers cost."""
        if self.count < 2:
            return None
        mean = self.total / self.count
        plain = (self.total_sq - self.count * mean * mean) / (self.count - 1) / self.count
        return self.variance_of_mean() / plain if plain > 0 else None


@dataclass(frozen=True)
class ArmEvidence:
    """What one variant did since the canary started."""

    version: int
    volume: int
    errors: int
    latency_p95: float | None
    outcomes: Outcomes

    @property
    def labelled(self) -> int:
        return self.outcomes.count

    @property
    def error_rate(self) -> float:
        total = self.volume + self.errors
        return self.errors / total if total else 0.0


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)


def decide(
    champion: ArmEvidence,
    challenger: ArmEvidence,
    rollout: RolloutSpec,
    looks: Sequence[Mapping[str, float]] = (),
) -> Decision:
    """Promote, roll back, or keep collecting (see the module docstring).

    Args:
        champion: the serving version's evidence.
        challenger: the canary's.
        rollout: confidence, margin, sample sizes and guardrails.
        looks: the looks taken so far: `evidence["test"]["looks"]` of the previous decision.
    """
    if champion.outcomes.kind != challenger.outcomes.kind:
        raise ValueError("champion and challenger outcomes must be of one kind")
    arms = {"champion": _arm(champion), "challenger": _arm(challenger)}
    requests = challenger.volume + challenger.errors
    if challenger.error_rate > rollout.max_error_rate and requests >= rollout.min_requests:
        return Decision(
            "rollback",
            f"canary error rate {challenger.error_rate:.1%} is over the {rollout.max_error_rate:.1%} limit",
            arms,
        )
    if (
        challenger.latency_p95 is not None
        and challenger.latency_p95 > rollout.max_latency_p95_ms
        and requests >= rollout.min_requests
    ):
        return Decision(
            "rollback",
            f"canary latency p95 {challenger.latency_p95:.0f} ms is over the {rollout.max_latency_p95_ms:.0f} ms budget",
            arms,
        )
    history = [dict(look) for look in looks]
    if min(champion.labelled, challenger.labelled) < rollout.min_labels:
        return Decision(
            "wait",
            f"{challenger.labelled} labelled canary and {champion.labelled} champion predictions; "
            f"deciding needs {rollout.min_labels} of each",
            {**arms, "test": {"looks": history}} if history else arms,
        )
    return _test(champion.outcomes, challenger.outcomes, rollout, history, arms)


def _test(
    champion: Outcomes,
    challenger: Outcomes,
    rollout: RolloutSpec,
    history: list[dict[str, Any]],
    arms: dict[str, Any],
) -> Decision:
    m0, m1 = champion.mean or 0.0, challenger.mean or 0.0
    v0, v1 = champion.variance_of_mean(), challenger.variance_of_mean()
    regression = champion.kind == "absolute_error"
    said = _said(regression, m1, m0)
    if not (math.isfinite(v0) and math.isfinite(v1)):
        return Decision(
            "wait",
            f"{said}: each arm needs labels from two routing keys",
            {**arms, "test": {"looks": history}} if history else arms,
        )
    weight = 1 + rollout.margin if regression else 1.0
    allowance = rollout.margin * m0 if regression else rollout.margin
    se = math.sqrt(weight * weight * v0 + v1)
    se_harm = math.sqrt(v0 + v1)
    z_not_worse = ((weight * m0 - m1) if regression else (m1 - m0 + allowance)) / se
    z_worse = (m1 - m0 if regression else m0 - m1) / se_harm
    information = 1 / se**2
    # the same per-label variances (clustering included) at max_labels on each arm
    information_max = rollout.max_labels / (
        weight * weight * v0 * champion.count + v1 * challenger.count
    )
    alpha = 1 - rollout.confidence
    reference = float(history[0]["information_max"]) if history else information_max
    last = history[-1] if history else None
    added = information - (float(last["information"]) if last else 0.0)
    test: dict[str, Any] = {
        "outcome": "mean absolute error" if regression else "accuracy",
        "champion": m0,
        "challenger": m1,
        "difference": m1 - m0,
        "allowance": allowance,
        "margin": rollout.margin,
        "standard_error": se,
        "z_not_worse": z_not_worse,
        "z_worse": z_worse,
        "information": information,
        "information_max": information_max,
        "information_fraction": min(1.0, information / information_max),
        "alpha": alpha,
        "confidence": rollout.confidence,
        "looks": history,
    }
    evidence = {**arms, "test": test}
    labels = f"{challenger.count}/{champion.count} labels"
    if last is not None and float(last["fraction"]) >= 1.0:
        return Decision("rollback", f"no clear result after {labels}; the champion stays", evidence)
    # a look spends error rate: take one only for new information, enough of it to matter
    # (and for the boundary's grid to resolve: MIN_STEP of the reference)
    if added < LOOK_STEP * information_max or added < MIN_STEP * reference:
        return Decision(
            "wait",
            f"{said}: {max(added, 0.0) / information_max:.1%} of the planned information since "
            f"look {len(history)}; the next look needs {LOOK_STEP:.0%}",
            evidence,
        )
    fraction = information / information_max
    fraction = 1.0 if fraction >= 1 - 1e-9 else fraction  # equal arms at max_labels: exactly 1
    before = float(last["spent"]) if last else 0.0
    due = max(0.0, (alpha if fraction >= 1.0 else spent(alpha, fraction)) - before)
    past = [(float(look["information"]) / reference, float(look["boundary"])) for look in history]
    bar = boundary(due, past, information / reference)
    look = {
        "information": information,
        "information_max": information_max,
        "fraction": fraction,
        "boundary": bar,
        "spent": before + due,
    }
    test.update(
        looks=[*history, look], look=len(history) + 1, boundary=bar, alpha_spent=before + due
    )
    if z_not_worse >= bar:
        worse_by = (
            f"{rollout.margin:.1%} of the champion's MAE" if regression else f"{rollout.margin:.1%}"
        )
        return Decision(
            "promote",
            f"{said} over {labels}: not worse by more than {worse_by} "
            f"(z={z_not_worse:.2f} >= {bar:.2f} at look {len(history) + 1})",
            evidence,
        )
    if z_worse >= bar:
        return Decision(
            "rollback",
            f"{said}: the challenger is worse than the champion (z={z_worse:.2f} >= {bar:.2f})",
            evidence,
        )
    if fraction >= 1.0:
        return Decision("rollback", f"no clear result after {labels}; the champion stays", evidence)
    return Decision(
        "wait",
        f"{said}: not yet conclusive (z={z_not_worse:.2f} < {bar:.2f} at look {len(history) + 1})",
        evidence,
    )


def _said(regression: bool, challenger: float, champion: float) -> str:
    if regression:
        return f"challenger MAE {challenger:.4g} vs champion {champion:.4g}"
    return f"challenger accuracy {challenger:.2%} vs champion {champion:.2%}"


def _arm(arm: ArmEvidence) -> dict[str, Any]:
    outcomes = arm.outcomes
    return {
        "version": arm.version,
        "volume": arm.volume,
        "labelled": outcomes.count,
        "clusters": outcomes.clusters,
        ("mae" if outcomes.kind == "absolute_error" else "accuracy"): outcomes.mean,
        "design_effect": outcomes.design_effect,
        "unparsed_labels": outcomes.unparsed,
        "error_rate": arm.error_rate,
        "latency_p95": arm.latency_p95,
    }

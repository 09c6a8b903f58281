"""Champion or challenger, on live evidence: a group-sequential test on accuracy that may stop
early, with guardrails that roll a bad canary back at once.

While the canary runs, labelled predictions of both variants accumulate. At each look the
difference in accuracy is turned into z-scores for two one-sided questions: is the challenger
*not worse* than the champion by more than `margin` (non-inferiority), and is it clearly worse?
The bar each z must clear shrinks as evidence accumulates (an O'Brien-Fleming boundary,
z_alpha / sqrt(information fraction)), so looking every few minutes does not inflate the error
rate the way repeating a fixed-sample test would, and a clear result stops the test early.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from scipy import stats

from shipyard.retraining._spec import RolloutSpec

__all__ = ["ArmEvidence", "Decision", "decide"]

Verdict = Literal["promote", "rollback", "wait"]


@dataclass(frozen=True)
class ArmEvidence:
    """What one variant did since the canary started."""

    version: int
    volume: int
    labelled: int
    correct: int
    errors: int
    latency_p95: float | None

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None

    @property
    def error_rate(self) -> float:
        total = self.volume + self.errors
        return self.errors / total if total else 0.0


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)


def decide(champion: ArmEvidence, challenger: ArmEvidence, rollout: RolloutSpec) -> Decision:
    """Promote, roll back, or keep collecting (see the module docstring)."""
    arms = {"champion": _arm(champion), "challenger": _arm(challenger)}
    if (
        challenger.error_rate > rollout.max_error_rate
        and challenger.volume + challenger.errors >= 20
    ):
        return Decision(
            "rollback",
            f"canary error rate {challenger.error_rate:.1%} is over the {rollout.max_error_rate:.1%} limit",
            arms,
        )
    if challenger.latency_p95 is not None and challenger.latency_p95 > rollout.max_latency_p95_ms:
        return Decision(
            "rollback",
            f"canary latency p95 {challenger.latency_p95:.0f} ms is over the {rollout.max_latency_p95_ms:.0f} ms budget",
            arms,
        )
    if min(champion.labelled, challenger.labelled) < rollout.min_labels:
        return Decision(
            "wait",
            f"{challenger.labelled} labelled canary and {champion.labelled} champion predictions; "
            f"deciding needs {rollout.min_labels} of each",
            arms,
        )
    p1, n1 = challenger.accuracy or 0.0, challenger.labelled
    p0, n0 = champion.accuracy or 0.0, champion.labelled
    se = math.sqrt(max(p1 * (1 - p1) / n1 + p0 * (1 - p0) / n0, 1e-12))
    diff = p1 - p0
    information = min(1.0, (n0 + n1) / (2 * rollout.max_labels))
    bar = float(stats.norm.ppf(rollout.confidence)) / math.sqrt(information)
    z_not_worse = (diff + rollout.margin) / se
    z_worse = -diff / se
    test = {
        "accuracy_difference": diff,
        "standard_error": se,
        "z_not_worse": z_not_worse,
        "z_worse": z_worse,
        "boundary": bar,
        "information_fraction": information,
        "confidence": rollout.confidence,
        "margin": rollout.margin,
    }
    evidence = {**arms, "test": test}
    if z_not_worse >= bar:
        return Decision(
            "promote",
            f"challenger accuracy {p1:.2%} vs champion {p0:.2%} over {n1}/{n0} labels: not worse by more than "
            f"{rollout.margin:.1%} (z={z_not_worse:.2f} >= {bar:.2f})",
            evidence,
        )
    if z_worse >= bar:
        return Decision(
            "rollback",
            f"challenger accuracy {p1:.2%} is worse than the champion's {p0:.2%} (z={z_worse:.2f} >= {bar:.2f})",
            evidence,
        )
    if information >= 1.0:
        return Decision(
            "rollback", f"no clear result after {n0 + n1} labels; the champion stays", evidence
        )
    return Decision(
        "wait",
        f"accuracy {p1:.2%} vs {p0:.2%}: not yet conclusive (z={z_not_worse:.2f} < {bar:.2f})",
        evidence,
    )


def _arm(arm: ArmEvidence) -> dict[str, Any]:
    return {
        "version": arm.version,
        "volume": arm.volume,
        "labelled": arm.labelled,
        "accuracy": arm.accuracy,
        "error_rate": arm.error_rate,
        "latency_p95": arm.latency_p95,
    }

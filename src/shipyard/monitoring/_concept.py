"""Concept drift: the model gets worse while its inputs stay the same.

ADWIN (river's implementation) watches the stream of right/wrong outcomes of labelled
predictions in time order and cuts it where the error rate before and after differ more than
chance allows. A cut where the error rate rose, with no data drift on the inputs, is concept
drift: the relation between features and fraud changed, not the features.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from shipyard.core.errors import missing_extra

__all__ = ["ChangePoint", "detect_changes"]


@dataclass(frozen=True)
class ChangePoint:
    """A change of the error rate at row `index`; each rate is over its whole regime (from
    the change before to the one after, or the ends of the stream)."""

    at: datetime
    index: int
    error_rate_before: float
    error_rate_after: float

    @property
    def worse(self) -> bool:
        return self.error_rate_after > self.error_rate_before

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "index": self.index,
            "error_rate_before": self.error_rate_before,
            "error_rate_after": self.error_rate_after,
            "worse": self.worse,
        }


def detect_changes(
    errors: np.ndarray, times: list[datetime], delta: float = 0.002
) -> list[ChangePoint]:
    """Where the error rate of a time-ordered 0/1 stream changed (ADWIN, confidence 1 - delta)."""
    try:
        from river import drift
    except ImportError:  # pragma: no cover - river is a core dependency
        raise missing_extra("river", "all", "Concept-drift detectors") from None
    detector = drift.ADWIN(delta=delta)  # type: ignore[no-untyped-call]
    cuts = [0]
    values = np.asarray(errors, dtype=np.float64)
    for i, value in enumerate(values.tolist()):
        detector.update(value)  # type: ignore[no-untyped-call]
        if detector.drift_detected and i + 1 - cuts[-1] >= 2:
            # ADWIN drops whole buckets (powers of two), so the window it keeps can still hold
            # hundreds of rows of the old regime: locate the change within the stream since
            # the last one instead
            cuts.append(cuts[-1] + _split(values[cuts[-1] : i + 1]))
    # each regime's rate over all its rows, up to the next change (or the end of the stream)
    bounds = [*cuts, len(values)]
    return [
        ChangePoint(
            times[cut],
            cut,
            float(values[bounds[j - 1] : cut].mean()),
            float(values[cut : bounds[j + 1]].mean()),
        )
        for j, cut in enumerate(cuts)
        if j > 0
    ]


def _split(values: np.ndarray) -> int:
    """Where `values` (two or more) is best cut into two runs of constant mean: 1..n-1."""
    n = len(values)
    k = np.arange(1, n)
    left = np.cumsum(values)[:-1]
    total = float(values.sum())
    # between-run sum of squares of a cut after k rows: k (n - k) / n (mean_left - mean_right)^2
    gain = (left / k - (total - left) / (n - k)) ** 2 * k * (n - k) / n
    return int(k[int(np.argmax(gain))])

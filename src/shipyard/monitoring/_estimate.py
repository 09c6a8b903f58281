"""Performance before labels arrive: confidence-based estimation from calibrated scores.

A binary classifier's calibrated score is the probability that the row is positive. For a row
flagged positive the chance of being right is that probability; for one flagged negative, its
complement. Summed over a window, they give expected true and false positives and negatives,
and from those the expected accuracy, precision, recall and false-positive rate, the day the
predictions are made. Scores are calibrated with isotonic regression on the labelled rows that
came before the window; with no labels yet, the scores are taken as calibrated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from shipyard.monitoring._report import CalibrationBin, CalibrationRecord

__all__ = ["Calibration", "calibration_table", "estimate"]


@dataclass
class Calibration:
    """A monotone map from score to probability, fitted on labelled rows."""

    model: Any = None
    fitted_on: int = 0

    @classmethod
    def fit(cls, scores: np.ndarray, positives: np.ndarray, min_rows: int = 200) -> Calibration:
        # one class only (all negative or all positive) says nothing about the score's scale
        if len(scores) < min_rows or np.unique(positives).size < 2:
            return cls()
        from sklearn.isotonic import IsotonicRegression

        model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        model.fit(scores, positives.astype(np.float64))
        return cls(model, len(scores))

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        if self.model is None:
            return np.asarray(np.clip(scores, 0.0, 1.0), dtype=np.float64)
        return np.asarray(self.model.predict(scores), dtype=np.float64)


def estimate(scores: np.ndarray, threshold: float, calibration: Calibration) -> dict[str, Any]:
    """Expected confusion counts and metrics of one window of unlabelled predictions."""
    if len(scores) == 0:
        return {}
    p = calibration(np.asarray(scores, dtype=np.float64))
    flagged = scores >= threshold
    tp = float(p[flagged].sum())
    fp = float((1 - p[flagged]).sum())
    fn = float(p[~flagged].sum())
    tn = float((1 - p[~flagged]).sum())
    n = len(p)
    return {
        "rows": n,
        "calibrated_on": calibration.fitted_on,
        "accuracy": (tp + tn) / n,
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / (tp + fn) if tp + fn else None,
        "false_positive_rate": fp / (fp + tn) if fp + tn else None,
        "expected_positives": tp + fn,
    }


def calibration_table(
    scores: np.ndarray, positives: np.ndarray, bins: int = 10
) -> CalibrationRecord:
    """Reliability bins (mean score vs observed positive rate) and the expected calibration error."""
    if len(scores) == 0:
        return {"bins": [], "ece": None}
    edges = np.linspace(0, 1, bins + 1)
    index = np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, bins - 1)
    rows: list[CalibrationBin] = []
    ece = 0.0
    for b in range(bins):
        mask = index == b
        count = int(mask.sum())
        if not count:
            continue
        mean_score = float(scores[mask].mean())
        rate = float(positives[mask].mean())
        ece += count / len(scores) * abs(mean_score - rate)
        rows.append(
            {
                "from": float(edges[b]),
                "to": float(edges[b + 1]),
                "count": count,
                "mean_score": mean_score,
                "positive_rate": rate,
            }
        )
    return {"bins": rows, "ece": ece}

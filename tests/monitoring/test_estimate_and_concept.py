"""Performance before labels (calibrated confidence) and concept drift (a change in the error
rate), checked against what the simulated stream really did."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from shipyard.monitoring._concept import detect_changes
from shipyard.monitoring._estimate import Calibration, calibration_table, estimate

THRESHOLD = 0.5
TOLERANCE = 0.02  # on accuracy, precision and recall, with 40k rows per window


def _miscalibrated(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores whose true probability of the positive class is score**2 (overconfident)."""
    scores = rng.random(n)
    return scores, rng.random(n) < scores**2


def _realised(scores: np.ndarray, positives: np.ndarray) -> dict[str, float]:
    flagged = scores >= THRESHOLD
    tp = float((flagged & positives).sum())
    fp = float((flagged & ~positives).sum())
    fn = float((~flagged & positives).sum())
    return {
        "accuracy": float((flagged == positives).mean()),
        "precision": tp / (tp + fp),
        "recall": tp / (tp + fn),
    }


def test_calibrated_estimates_of_an_unlabelled_window_match_what_its_labels_later_show() -> None:
    rng = np.random.default_rng(42)
    calibration = Calibration.fit(*_miscalibrated(rng, 40_000))
    assert calibration.fitted_on == 40_000
    window, hidden = _miscalibrated(rng, 40_000)  # the labels the estimate does not see

    estimated = estimate(window, THRESHOLD, calibration)
    realised = _realised(window, hidden)
    assert estimated["rows"] == 40_000
    assert estimated["calibrated_on"] == 40_000
    for name in ("accuracy", "precision", "recall"):
        assert estimated[name] == pytest.approx(realised[name], abs=TOLERANCE), name
    assert estimated["expected_positives"] == pytest.approx(hidden.sum(), rel=0.03)
    # taking the raw scores at face value would be far off: precision 0.75 against 0.58
    raw = estimate(window, THRESHOLD, Calibration())
    assert abs(raw["precision"] - realised["precision"]) > 0.1
    assert abs(raw["recall"] - realised["recall"]) > 0.1


def test_with_too_few_labels_the_scores_are_taken_as_calibrated() -> None:
    rng = np.random.default_rng(3)
    few = Calibration.fit(*_miscalibrated(rng, 150))
    assert few.model is None
    assert few.fitted_on == 0
    scores = np.array([0.9, 0.6, 0.3, 0.1, 1.4])  # a score out of [0, 1] is clipped
    result = estimate(scores, THRESHOLD, few)
    p = np.array([0.9, 0.6, 0.3, 0.1, 1.0])
    tp, fp = 0.9 + 0.6 + 1.0, 0.1 + 0.4 + 0.0
    fn, tn = 0.3 + 0.1, 0.7 + 0.9
    assert result["accuracy"] == pytest.approx((tp + tn) / 5)
    assert result["precision"] == pytest.approx(tp / (tp + fp))
    assert result["recall"] == pytest.approx(tp / (tp + fn))
    assert result["false_positive_rate"] == pytest.approx(fp / (fp + tn))
    assert result["expected_positives"] == pytest.approx(p.sum())
    assert result["calibrated_on"] == 0


@pytest.mark.parametrize("label", [False, True], ids=["all-negative", "all-positive"])
def test_labels_of_one_class_do_not_calibrate(label: bool) -> None:
    scores = np.random.default_rng(1).random(1_000)
    calibration = Calibration.fit(scores, np.full(1_000, label))
    assert calibration.fitted_on == 0
    assert calibration(scores) == pytest.approx(scores)


def test_an_empty_window_has_no_estimate() -> None:
    assert estimate(np.array([]), THRESHOLD, Calibration()) == {}


def test_calibration_table_bins_and_expected_calibration_error_by_hand() -> None:
    scores = np.array([0.05, 0.12, 0.15, 0.5, 0.55, 0.95, 1.0, 0.97])
    positives = np.array([0, 0, 1, 1, 0, 1, 1, 1], dtype=np.float64)
    table = calibration_table(scores, positives, bins=10)
    # 0.5 opens the bin [0.5, 0.6); 1.0 closes the last bin [0.9, 1.0]
    expected = [  # from, to, count, mean score, positive rate
        (0.0, 0.1, 1, 0.05, 0.0),
        (0.1, 0.2, 2, 0.135, 0.5),
        (0.5, 0.6, 2, 0.525, 0.5),
        (0.9, 1.0, 3, (0.95 + 1.0 + 0.97) / 3, 1.0),
    ]
    assert len(table["bins"]) == len(expected)
    for got, want in zip(table["bins"], expected, strict=True):
        keys = ("from", "to", "count", "mean_score", "positive_rate")
        assert [got[k] for k in keys] == pytest.approx(list(want))
    # ECE = sum over bins of count/n * |mean score - positive rate|
    #     = (1 * 0.05 + 2 * 0.365 + 2 * 0.025 + 3 * 0.02666...) / 8 = 0.91 / 8
    assert table["ece"] == pytest.approx(0.11375)
    assert calibration_table(np.array([]), np.array([])) == {"bins": [], "ece": None}


START = datetime(2024, 5, 1, tzinfo=UTC)


def _times(n: int) -> list[datetime]:
    return [START + timedelta(minutes=i) for i in range(n)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_jump_of_the_error_rate_from_2_to_10_percent_is_found_where_it_happened(
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    errors = np.concatenate([rng.random(6_000) < 0.02, rng.random(6_000) < 0.10])
    changes = detect_changes(errors.astype(np.float64), _times(len(errors)))
    assert len(changes) == 1
    (change,) = changes
    assert abs(change.index - 6_000) < 300
    assert change.at == START + timedelta(minutes=change.index)
    assert change.worse
    assert change.error_rate_before == pytest.approx(0.02, abs=0.01)
    assert change.error_rate_after == pytest.approx(0.10, abs=0.02)
    assert change.to_dict()["worse"] is True


def test_a_drop_of_the_error_rate_is_found_and_is_not_worse() -> None:
    rng = np.random.default_rng(9)
    errors = np.concatenate([rng.random(6_000) < 0.12, rng.random(6_000) < 0.03])
    (change,) = detect_changes(errors.astype(np.float64), _times(len(errors)))
    assert abs(change.index - 6_000) < 300
    assert not change.worse


def test_a_stationary_stream_of_20k_rows_has_no_change() -> None:
    errors = np.random.default_rng(7).random(20_000) < 0.05
    assert detect_changes(errors.astype(np.float64), _times(20_000)) == []

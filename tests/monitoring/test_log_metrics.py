"""`LogQueries` over real logs: the per-window numbers DuckDB computes equal numpy and
scikit-learn on the same rows, with labels that arrive late, get corrected or never come."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import confusion_matrix, f1_score, precision_score, recall_score, roc_auc_score
from tests.monitoring._logdata import hand_flushed_writer, made_at

from shipyard.logstore import LogReader, LogWriter
from shipyard.monitoring._logs import LogQueries, Period
from shipyard.store import ArtifactStore

# three 8-hour windows; the last one crosses midnight, so two date folders hold it
START = datetime(2024, 5, 1, 4, tzinfo=UTC)
STEP = timedelta(hours=8)
PERIOD = Period(START, START + 3 * STEP, STEP)
T0, SECONDS = START.timestamp(), STEP.total_seconds()
HOUR = 3600.0
MODEL = "fraud"
GROUPS = [(1, "primary"), (2, "canary")]
BOUNDARY_VERSION = 3  # a version that only serves the rows placed on the edges


@dataclass
class Logged:
    """What was logged: one row per prediction with its final label (None: never labelled)."""

    rows: pd.DataFrame
    first_labels: dict[str, str]  # the label each relabelled id got first (written first)
    store: ArtifactStore


def _log_requests(writer: LogWriter, rng: np.random.Generator) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def request(ts: float, version: int, variant: str, n: int) -> None:
        ids = [made_at(ts) for _ in range(n)]
        latency = round(float(rng.gamma(2.0, 12.0)), 3)
        scores = rng.integers(0, 21, n) / 20  # a coarse grid: many tied scores
        predicted = (scores >= 0.5).astype(int)
        writer.log_predictions(
            model=MODEL, version=version, variant=variant, ids=ids,
            inputs={"amount": rng.lognormal(3, 1, n)},
            outputs={"score": scores, "label": predicted},
            latency_ms=latency, at=ts,
        )  # fmt: skip
        truth = rng.random(n) < 0.1 + 0.8 * scores
        for i in range(n):
            rows.append({
                "prediction_id": ids[i], "ts": ts, "version": version, "variant": variant,
                "latency_ms": latency, "score": float(scores[i]), "label": str(predicted[i]),
                "true_class": str(int(truth[i])),
            })  # fmt: skip

    for _ in range(320):
        # some requests fall just outside the period, on days the period's folders also hold
        ts = T0 + float(rng.uniform(-4 * HOUR, 3 * SECONDS + 4 * HOUR))
        version, variant = GROUPS[int(rng.integers(0, len(GROUPS)))]
        request(ts, version, variant, int(rng.integers(1, 5)))
    for ts in (T0, T0 + SECONDS - 1e-6, T0 + SECONDS, T0 + 3 * SECONDS, T0 - 1e-6):
        request(ts, BOUNDARY_VERSION, "primary", 1)
    return rows


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Logged:
    rng = np.random.default_rng(20240501)
    writer, store = hand_flushed_writer(tmp_path_factory.mktemp("logs"))
    rows = _log_requests(writer, rng)
    writer.flush()

    # labels: 30% never come; 15% come wrong and are corrected later; 10% are corrected
    # by a label received later but written to the log earlier (a slow replica)
    plan = rng.random(len(rows))
    first_labels: dict[str, str] = {}
    late: list[tuple[str, str, float]] = []
    for row, u in zip(rows, plan, strict=True):
        pid, truth, ts = row["prediction_id"], row["true_class"], row["ts"]
        wrong = "0" if truth == "1" else "1"
        if u < 0.30:
            row["truth"] = None
            continue
        row["truth"] = truth
        if u < 0.45:
            writer.log_labels([pid], [int(wrong)], at=ts + HOUR)
            late.append((pid, truth, ts + 2 * HOUR))
            first_labels[pid] = wrong
        elif u < 0.55:
            writer.log_labels([pid], [int(truth)], at=ts + 3 * HOUR)
            late.append((pid, wrong, ts + HOUR))
            first_labels[pid] = truth
        else:
            writer.log_labels([pid], [int(truth)], at=ts + float(rng.uniform(0, 30 * HOUR)))
    writer.flush()
    for pid, label, at in late:
        writer.log_labels([pid], [int(label)], at=at)
    writer.log_labels([made_at(T0)], [1], at=T0)  # a label for no logged prediction
    writer.flush()
    writer.close()
    return Logged(pd.DataFrame(rows), first_labels, store)


def _in_period(rows: pd.DataFrame) -> pd.DataFrame:
    inside = rows[(rows.ts >= T0) & (rows.ts < T0 + 3 * SECONDS)].copy()
    inside["window_start"] = [PERIOD.window_start(int((ts - T0) // SECONDS)) for ts in inside.ts]
    return inside


def _windows(logged: Logged, positive: str = "1") -> dict[tuple[int, str, datetime], Any]:
    rows = LogQueries(LogReader(logged.store), MODEL, PERIOD).windows(positive)
    return {(r["version"], r["variant"], r["window_start"]): r for r in rows}


def _expected_quality(
    group: pd.DataFrame, positive: str = "1", negative: str = "0"
) -> dict[str, Any]:
    """Quality of one window by scikit-learn, on the rows that have a label."""
    labelled = group[group.truth.notna()]
    y_true, y_pred = labelled.truth.to_numpy(), labelled.label.to_numpy()
    (tn, fp), (fn, tp) = confusion_matrix(y_true, y_pred, labels=[negative, positive])
    return {
        "labelled": len(labelled),
        "label_coverage": len(labelled) / len(group),
        "accuracy": float((y_true == y_pred).mean()),
        "precision": precision_score(y_true, y_pred, pos_label=positive),
        "recall": recall_score(y_true, y_pred, pos_label=positive),
        "f1": f1_score(y_true, y_pred, pos_label=positive),
        "false_positive_rate": fp / (fp + tn),
        "confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": tn},
        "auc": roc_auc_score(y_true == positive, labelled.score.to_numpy()),
    }


def test_volume_latency_percentiles_and_scores_per_window_equal_numpy_on_the_same_rows(
    logged: Logged,
) -> None:
    got = _windows(logged)
    inside = _in_period(logged.rows)
    expected = inside.groupby(["version", "variant", "window_start"])
    assert set(got) == set(expected.groups)
    for key, group in expected:
        latency, scores = group.latency_ms.to_numpy(), group.score.to_numpy()
        row = got[key]  # type: ignore[index]
        assert row["volume"] == len(group)
        assert row["throughput_per_s"] == pytest.approx(len(group) / SECONDS)
        for q, name in ((0.5, "latency_p50"), (0.95, "latency_p95"), (0.99, "latency_p99")):
            # numpy's default (linear) quantile is DuckDB's quantile_cont
            assert row[name] == pytest.approx(np.quantile(latency, q), rel=1e-12), (key, name)
        assert row["score_mean"] == pytest.approx(scores.mean(), rel=1e-12)
        assert row["score_p50"] == pytest.approx(np.quantile(scores, 0.5), rel=1e-12)
        assert row["score_p90"] == pytest.approx(np.quantile(scores, 0.9), rel=1e-12)
        assert row["predicted_positive_rate"] == pytest.approx((group.label == "1").mean())


def test_quality_metrics_use_only_labelled_rows_and_the_latest_label_of_each(
    logged: Logged,
) -> None:
    got = _windows(logged)
    checked = 0
    for key, group in _in_period(logged.rows).groupby(["version", "variant", "window_start"]):
        if key[0] == BOUNDARY_VERSION:
            continue
        row = got[key]  # type: ignore[index]
        want = _expected_quality(group)
        assert 0 < want["labelled"] < len(group)  # some rows of every window lack labels
        for name, value in want.items():
            assert row[name] == pytest.approx(value, rel=1e-12), (key, name)
        checked += 1
    assert checked == len(GROUPS) * PERIOD.windows


def test_the_first_label_of_a_corrected_prediction_does_not_count(logged: Logged) -> None:
    """The comparison above could not pass if a query kept the first (or first-written) label."""
    inside = _in_period(logged.rows)
    corrected = inside[inside.prediction_id.isin(logged.first_labels)]
    stale = inside.truth.where(
        ~inside.prediction_id.isin(logged.first_labels),
        inside.prediction_id.map(logged.first_labels),
    )
    assert len(corrected) > 100
    assert (stale != inside.truth).sum() > 50  # the first labels really disagree
    got = _windows(logged)
    for key, group in inside.assign(truth=stale).groupby(["version", "variant", "window_start"]):
        if key[0] != BOUNDARY_VERSION:
            assert got[key]["accuracy"] != pytest.approx(  # type: ignore[index]
                _expected_quality(group)["accuracy"], rel=1e-12
            )


def test_roc_auc_per_window_equals_scikit_learn_with_tied_scores(logged: Logged) -> None:
    got = _windows(logged)
    for key, group in _in_period(logged.rows).groupby(["version", "variant", "window_start"]):
        if key[0] == BOUNDARY_VERSION:
            continue
        labelled = group[group.truth.notna()]
        assert labelled.score.nunique() < len(labelled) / 2  # ties are the case under test
        want = roc_auc_score(labelled.truth == "1", labelled.score)
        assert got[key]["auc"] == pytest.approx(want, rel=1e-12)  # type: ignore[index]


def test_a_prediction_exactly_at_a_window_start_counts_in_that_window(logged: Logged) -> None:
    got = {
        (w[2] - START) / STEP: row["volume"]
        for w, row in _windows(logged).items()
        if w[0] == BOUNDARY_VERSION
    }
    # at the period start and 1 us before the second window: window 0; at the second
    # window's start: window 1; 1 us before the period and at its end: nowhere
    assert got == {0: 2, 1: 1}


def test_a_window_with_labels_of_one_class_has_no_auc_and_no_undefined_rates(
    tmp_path: Path,
) -> None:
    writer, store = hand_flushed_writer(tmp_path)
    ids = [made_at(T0 + i) for i in range(4)]
    writer.log_predictions(
        model=MODEL, version=1, variant="primary", ids=ids, inputs={"amount": [1.0] * 4},
        outputs={"score": [0.1, 0.2, 0.3, 0.4], "label": [0, 0, 0, 0]}, latency_ms=2.0, at=T0,
    )  # fmt: skip
    writer.log_labels(ids[:3], [0, 0, 0], at=T0 + HOUR)
    writer.flush()
    writer.close()
    (row,) = LogQueries(LogReader(store), MODEL, PERIOD).windows("1")
    assert row["accuracy"] == 1.0
    assert row["auc"] is None
    assert row["precision"] is None
    assert row["recall"] is None
    assert row["f1"] is None
    assert row["false_positive_rate"] == 0.0
    assert row["label_coverage"] == 0.75


ERRORS = [  # (hours after START, model, version, variant, status, fields)
    (0.5, MODEL, 1, "primary", 422, ["amount"]),
    (1.0, MODEL, 1, "primary", 422, ["amount", "merchant_category"]),
    (7.9, MODEL, 1, "primary", 503, []),
    (8.0, MODEL, 1, "primary", 422, ["amount"]),  # at the second window's start
    (9.0, MODEL, 2, "canary", 503, []),
    (9.5, MODEL, 2, "canary", 503, []),
    (17.0, MODEL, 1, "primary", 422, ["merchant_category"]),
    (23.0, MODEL, 1, "primary", 400, []),
    (-0.5, MODEL, 1, "primary", 422, ["amount"]),  # before the period
    (24.0, MODEL, 1, "primary", 503, []),  # at its end
    (2.0, "churn", 1, "primary", 422, ["amount"]),  # another model
]


@pytest.fixture(scope="module")
def errors_logged(tmp_path_factory: pytest.TempPathFactory) -> ArtifactStore:
    writer, store = hand_flushed_writer(tmp_path_factory.mktemp("errors"))
    for hours, model, version, variant, status, fields in ERRORS:
        writer.log_error(
            model=model, version=version, variant=variant, status=status,
            error="refused" if status < 500 else "failed", fields=fields, at=T0 + hours * HOUR,
        )  # fmt: skip
    writer.flush()
    writer.close()
    return store


def test_errors_are_counted_per_version_status_and_window_of_the_model_only(
    errors_logged: ArtifactStore,
) -> None:
    got = LogQueries(LogReader(errors_logged), MODEL, PERIOD).errors()
    counts = {(e["version"], e["variant"], e["status"], e["window_start"]): e["count"] for e in got}
    assert len(got) == len(counts)
    w = PERIOD.window_start
    assert counts == {
        (1, "primary", 422, w(0)): 2,
        (1, "primary", 503, w(0)): 1,
        (1, "primary", 422, w(1)): 1,
        (2, "canary", 503, w(1)): 2,
        (1, "primary", 422, w(2)): 1,
        (1, "primary", 400, w(2)): 1,
    }


def test_schema_violations_count_each_field_named_by_refused_requests_in_the_period(
    errors_logged: ArtifactStore,
) -> None:
    expected = Counter(
        field
        for hours, model, _, _, status, fields in ERRORS
        if model == MODEL and status == 422 and 0 <= hours < 24
        for field in fields
    )
    assert expected == {"amount": 3, "merchant_category": 2}
    assert LogQueries(LogReader(errors_logged), MODEL, PERIOD).schema_violations() == expected


def test_text_classes_are_compared_with_the_named_positive_class(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    writer, store = hand_flushed_writer(tmp_path)
    n = 400
    ids = [made_at(T0 + i) for i in range(n)]
    scores = rng.integers(0, 11, n) / 10
    predicted = np.where(scores >= 0.5, "fraud", "legit")
    truth = np.where(rng.random(n) < scores, "fraud", "legit")
    writer.log_predictions(
        model="payments", version=1, variant="primary", ids=ids, inputs={"amount": scores},
        outputs={"score": scores, "label": predicted.tolist()}, latency_ms=3.0, at=T0 + 60,
    )  # fmt: skip
    labelled = rng.random(n) < 0.8
    writer.log_labels(
        [i for i, keep in zip(ids, labelled, strict=True) if keep],
        truth[labelled].tolist(),
        at=T0 + HOUR,
    )
    writer.flush()
    writer.close()
    (row,) = LogQueries(LogReader(store), "payments", PERIOD).windows("fraud")
    known = [t if keep else None for t, keep in zip(truth.tolist(), labelled, strict=True)]
    group = pd.DataFrame({"label": predicted, "truth": known, "score": scores})
    want = _expected_quality(group, positive="fraud", negative="legit")
    assert want["confusion"]["tp"] > 0
    assert want["confusion"]["fp"] > 0
    for name, value in want.items():
        assert row[name] == pytest.approx(value, rel=1e-12), name
    assert not math.isnan(row["auc"])


def test_a_sample_holds_limit_rows_of_the_version_asked_for_and_only_labelled_ones_if_asked(
    tmp_path: Path,
) -> None:
    writer, store = hand_flushed_writer(tmp_path)
    n = 3_000
    for version, variant in ((1, "primary"), (2, "canary"), (1, "shadow")):
        ids = [made_at(T0 + i) for i in range(n)]
        writer.log_predictions(
            model=MODEL, version=version, variant=variant, ids=ids,
            inputs={"amount": np.arange(n, dtype=np.float64)},
            outputs={"score": np.linspace(0, 1, n), "label": [0] * n}, latency_ms=1.0,
            at=T0 + version * HOUR,
        )  # fmt: skip
        writer.log_labels(ids[::4], [1] * len(ids[::4]), at=T0 + 2 * HOUR)
    writer.log_predictions(  # before the period, in a folder the period reads
        model=MODEL, version=1, variant="primary", ids=[made_at(T0 - HOUR) for _ in range(n)],
        inputs={"amount": [0.0] * n}, outputs={"score": [0.5] * n, "label": [0] * n},
        latency_ms=1.0, at=T0 - HOUR,
    )  # fmt: skip
    writer.flush()
    writer.close()
    queries = LogQueries(LogReader(store), MODEL, PERIOD)

    everything = queries.sample(1)
    assert everything.num_rows == n  # under the limit: every row of primary v1, no shadow
    assert queries.sample(2).num_rows == n

    sample = queries.sample(1, limit=500)
    assert sample.num_rows == 500
    times = sample.column("ts").to_pylist()
    assert times == sorted(times)
    assert {t.timestamp() for t in times} == {T0 + HOUR}

    labelled = queries.sample(1, labelled_only=True, limit=500)
    assert labelled.num_rows == 500  # drawn among the 750 labelled rows, not before filtering
    assert set(labelled.column("truth").to_pylist()) == {"1"}
    assert queries.sample(2, labelled_only=True).num_rows == n // 4

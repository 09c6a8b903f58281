"""How good a served predictor is on labelled rows, as its task measures it: binary (accuracy,
precision, recall, F1, AUC, average precision, log loss, Brier), multiclass (accuracy, macro and
weighted F1, macro precision and recall, log loss) and regression (MAE, RMSE, R²), with the
latency per row it took. Retraining's validation gates and the optimiser's accuracy gate both
judge candidates by these figures.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from shipyard.core.values import category_text

__all__ = ["TASK_METRICS", "holdout_metrics"]

TASK_METRICS = {
    "binary": frozenset({"auc", "accuracy", "precision", "recall", "f1", "average_precision", "log_loss", "brier"}),
    "multiclass": frozenset({"accuracy", "macro_f1", "weighted_f1", "macro_precision", "macro_recall", "log_loss"}),
    "regression": frozenset({"mae", "rmse", "r2"}),
}  # fmt: skip


def holdout_metrics(
    predictor: Any,
    columns: dict[str, np.ndarray],
    truth: np.ndarray,
    task: str,
    classes: list[Any] | None,
    threshold: float | None,
) -> dict[str, float]:
    """Quality and per-row latency of a served predictor on the holdout, as its task measures
    it (see the module docstring); `classes` are the model's, in the order of its scores."""
    started = time.perf_counter()
    answers = np.asarray(predictor.predict(columns))
    per_row_ms = (time.perf_counter() - started) * 1e3 / max(1, len(truth))
    if task == "regression":
        out = _regression(answers.reshape(-1), truth)
    elif task == "multiclass":
        out = _multiclass(answers, truth, classes or list(range(answers.shape[1])))
    else:
        positive = classes[1] if classes else 1
        out = _binary(answers, truth, positive, 0.5 if threshold is None else threshold)
    return {**out, "latency_per_row_ms": per_row_ms}


def _binary(
    proba: np.ndarray, truth: np.ndarray, positive: Any, threshold: float
) -> dict[str, float]:
    from sklearn import metrics as m

    scores = proba[:, 1] if proba.ndim == 2 else proba
    y = np.asarray([category_text(t) == category_text(positive) for t in truth], dtype=int)
    flagged = (scores >= threshold).astype(int)
    out = {
        "accuracy": float(m.accuracy_score(y, flagged)),
        "precision": float(m.precision_score(y, flagged, zero_division=0)),
        "recall": float(m.recall_score(y, flagged, zero_division=0)),
        "f1": float(m.f1_score(y, flagged, zero_division=0)),
        "brier": float(m.brier_score_loss(y, np.clip(scores, 0, 1))),
    }
    if 0 < y.sum() < len(y):
        out["auc"] = float(m.roc_auc_score(y, scores))
        out["average_precision"] = float(m.average_precision_score(y, scores))
        out["log_loss"] = float(m.log_loss(y, np.clip(scores, 1e-15, 1 - 1e-15)))
    return out


def _multiclass(proba: np.ndarray, truth: np.ndarray, classes: list[Any]) -> dict[str, float]:
    from sklearn import metrics as m

    names = [category_text(c) for c in classes]
    y = np.asarray([category_text(t) for t in truth], dtype=object)
    predicted = np.asarray(names, dtype=object)[proba.argmax(axis=1)]
    out = {"accuracy": float(m.accuracy_score(y, predicted))}
    for average in ("macro", "weighted"):
        out[f"{average}_f1"] = float(m.f1_score(y, predicted, average=average, zero_division=0))
    out["macro_precision"] = float(
        m.precision_score(y, predicted, average="macro", zero_division=0)
    )
    out["macro_recall"] = float(m.recall_score(y, predicted, average="macro", zero_division=0))
    if set(y) <= set(names):
        # float32 runtimes' rows sum to 1 only within their precision
        normalised = np.asarray(proba, dtype=np.float64)
        normalised = normalised / normalised.sum(axis=1, keepdims=True)
        out["log_loss"] = float(m.log_loss(y, normalised, labels=names))
    return out


def _regression(values: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    from sklearn import metrics as m

    y = np.asarray(truth, dtype=np.float64)
    out = {
        "mae": float(m.mean_absolute_error(y, values)),
        "rmse": float(math.sqrt(m.mean_squared_error(y, values))),
    }
    if len(y) >= 2 and float(np.var(y)) > 0:
        out["r2"] = float(m.r2_score(y, values))
    return out

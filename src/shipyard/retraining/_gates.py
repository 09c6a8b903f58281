"""Validation gates a candidate must pass on the holdout before it may take traffic.

auc >= 0.90                        an absolute bar
auc >= champion - 0.005            not worse than the champion, on the same rows, by more than 0.5 points
rmse <= champion * 1.02            at most 2% worse than the champion (for metrics on the label's scale)
latency_per_row_ms <= 2            fast enough on the runtime that will serve it

The holdout metrics follow the task: binary (accuracy, precision, recall, F1, AUC, average
precision, log loss, Brier), multiclass (accuracy, macro and weighted F1, macro precision and
recall, log loss) and regression (MAE, RMSE, R²). A gate on a metric the model's task does not
have is refused before training (`check_gates_apply`).
"""

from __future__ import annotations

import math
import operator
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from shipyard.core.errors import InvalidInput
from shipyard.core.values import category_text

__all__ = [
    "GATE_METRICS",
    "TASK_GATE_METRICS",
    "Gate",
    "GateResult",
    "check_gates_apply",
    "holdout_metrics",
    "parse_gate",
]

TASK_GATE_METRICS = {
    "binary": frozenset({"auc", "accuracy", "precision", "recall", "f1", "average_precision", "log_loss", "brier"}),
    "multiclass": frozenset({"accuracy", "macro_f1", "weighted_f1", "macro_precision", "macro_recall", "log_loss"}),
    "regression": frozenset({"mae", "rmse", "r2"}),
}  # fmt: skip
GATE_METRICS = frozenset({"latency_per_row_ms"}).union(*TASK_GATE_METRICS.values())
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt,
}  # fmt: skip
_GATE = re.compile(
    r"^\s*(?P<metric>[a-z_0-9]+)\s*(?P<op>>=|<=|>|<)\s*"
    r"(?:(?P<champion>champion)\s*(?:(?P<sign>[+*-])\s*(?P<delta>\d+(?:\.\d+)?))?|(?P<value>-?\d+(?:\.\d+)?))\s*$"
)


@dataclass(frozen=True)
class Gate:
    text: str
    metric: str
    op: str
    value: float | None  # absolute bar
    delta: float | None  # added to the champion's value
    factor: float | None = None  # times the champion's value

    def bar(self, champion: dict[str, float] | None) -> float | None:
        if self.value is not None:
            return self.value
        if champion is None or champion.get(self.metric) is None:
            return None
        if self.factor is not None:
            return champion[self.metric] * self.factor
        return champion[self.metric] + (self.delta or 0.0)


@dataclass(frozen=True)
class GateResult:
    gate: str
    metric: str
    value: float | None
    bar: float | None
    passed: bool
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "gate": self.gate,
            "metric": self.metric,
            "value": self.value,
            "bar": self.bar,
            "passed": self.passed,
            "note": self.note,
        }


def parse_gate(text: str) -> Gate:
    match = _GATE.match(text or "")
    if match is None or match.group("metric") not in GATE_METRICS:
        raise InvalidInput(
            f"cannot read the gate {text!r}; write e.g. 'auc >= 0.90', 'auc >= champion - 0.005' "
            f"or 'rmse <= champion * 1.02' (metrics: {', '.join(sorted(GATE_METRICS))})"
        )
    delta = factor = None
    if match.group("champion"):
        number = float(match.group("delta") or 0.0)
        if match.group("sign") == "*":
            factor = number
        else:
            delta = number * (-1 if match.group("sign") == "-" else 1)
    value = float(match.group("value")) if match.group("value") is not None else None
    return Gate(text.strip(), match.group("metric"), match.group("op"), value, delta, factor)


def check_gates_apply(gates: list[str], task: str, model: str) -> None:
    """Refuse gates on metrics the model's task has no value for (before anything is trained:
    such a gate would reject every candidate)."""
    usable = TASK_GATE_METRICS.get(task)
    if usable is None:
        return
    wrong = [g for g in gates if parse_gate(g).metric not in usable | {"latency_per_row_ms"}]
    if wrong:
        raise InvalidInput(
            f"gate(s) {wrong} do not apply to {model}, a {task} model; its gates can use "
            f"{', '.join(sorted(usable))} and latency_per_row_ms"
        )


def check(
    gates: list[str], candidate: dict[str, float], champion: dict[str, float] | None
) -> list[GateResult]:
    results = []
    for text in gates:
        gate = parse_gate(text)
        value = candidate.get(gate.metric)
        bar = gate.bar(champion)
        if bar is None:
            results.append(
                GateResult(text, gate.metric, value, None, True, "no champion to compare with")
            )
        elif value is None or (isinstance(value, float) and math.isnan(value)):
            results.append(
                GateResult(
                    text, gate.metric, value, bar, False, "the candidate has no value for it"
                )
            )
        else:
            results.append(GateResult(text, gate.metric, value, bar, _OPS[gate.op](value, bar)))
    return results


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

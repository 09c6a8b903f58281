"""Validation gates a candidate must pass on the holdout before it may take traffic.

auc >= 0.90                        an absolute bar
auc >= champion - 0.005            not worse than the champion, on the same rows, by more than 0.5 points
latency_per_row_ms <= 2            fast enough on the runtime that will serve it
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

__all__ = ["GATE_METRICS", "Gate", "GateResult", "holdout_metrics", "parse_gate"]

GATE_METRICS = frozenset(
    {
        "auc",
        "accuracy",
        "precision",
        "recall",
        "f1",
        "average_precision",
        "log_loss",
        "brier",
        "latency_per_row_ms",
    }
)
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt,
}  # fmt: skip
_GATE = re.compile(
    r"^\s*(?P<metric>[a-z_]+)\s*(?P<op>>=|<=|>|<)\s*"
    r"(?:(?P<champion>champion)\s*(?:(?P<sign>[+-])\s*(?P<delta>\d+(?:\.\d+)?))?|(?P<value>-?\d+(?:\.\d+)?))\s*$"
)


@dataclass(frozen=True)
class Gate:
    text: str
    metric: str
    op: str
    value: float | None  # absolute bar
    delta: float | None  # relative to the champion

    def bar(self, champion: dict[str, float] | None) -> float | None:
        if self.value is not None:
            return self.value
        if champion is None or champion.get(self.metric) is None:
            return None
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
            f"cannot read the gate {text!r}; write e.g. 'auc >= 0.90' or 'auc >= champion - 0.005' "
            f"(metrics: {', '.join(sorted(GATE_METRICS))})"
        )
    delta = None
    if match.group("champion"):
        delta = float(match.group("delta") or 0.0) * (-1 if match.group("sign") == "-" else 1)
    value = float(match.group("value")) if match.group("value") is not None else None
    return Gate(text.strip(), match.group("metric"), match.group("op"), value, delta)


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
    positive: Any,
    threshold: float,
) -> dict[str, float]:
    """Binary-classification quality and per-row latency of a served predictor on the holdout."""
    from sklearn import metrics as m

    started = time.perf_counter()
    proba = np.asarray(predictor.predict(columns))
    per_row_ms = (time.perf_counter() - started) * 1e3 / max(1, len(truth))
    scores = proba[:, 1] if proba.ndim == 2 else proba
    y = np.asarray([str(t) == str(positive) for t in truth], dtype=int)
    flagged = (scores >= threshold).astype(int)
    out = {
        "accuracy": float(m.accuracy_score(y, flagged)),
        "precision": float(m.precision_score(y, flagged, zero_division=0)),
        "recall": float(m.recall_score(y, flagged, zero_division=0)),
        "f1": float(m.f1_score(y, flagged, zero_division=0)),
        "brier": float(m.brier_score_loss(y, np.clip(scores, 0, 1))),
        "latency_per_row_ms": per_row_ms,
    }
    if 0 < y.sum() < len(y):
        out["auc"] = float(m.roc_auc_score(y, scores))
        out["average_precision"] = float(m.average_precision_score(y, scores))
        out["log_loss"] = float(m.log_loss(y, np.clip(scores, 1e-15, 1 - 1e-15)))
    return out

"""Validation gates a candidate must pass on the holdout before it may take traffic.

auc >= 0.90                        an absolute bar
auc >= champion - 0.005            not worse than the champion, on the same rows, by more than 0.5 points
rmse <= champion * 1.02            at most 2% worse than the champion (for metrics on the label's scale)
latency_per_row_ms <= 2            fast enough on the runtime that will serve it
fairness_gap(customer_age_band) <= 0.05
                                   outcomes as even across the attribute's groups as that
                                   (`demographic_parity_difference(...)`,
                                   `equalized_odds_difference(...)` too; binary classifiers, with
                                   the attribute declared under `fairness:`)

The holdout metrics follow the task (`monitoring.holdout_metrics`: binary accuracy, precision,
recall, F1, AUC, average precision, log loss, Brier; multiclass accuracy, F1, precision, recall,
log loss; regression MAE, RMSE, R²). A gate on a metric the model's task does not
have is refused before training (`check_gates_apply`).
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shipyard.core.errors import InvalidInput
from shipyard.monitoring import FAIRNESS_METRICS, TASK_METRICS, holdout_metrics

__all__ = [
    "GATE_METRICS",
    "TASK_GATE_METRICS",
    "Gate",
    "GateResult",
    "check_gates_apply",
    "holdout_metrics",
    "parse_gate",
]

TASK_GATE_METRICS = TASK_METRICS
GATE_METRICS = frozenset({"latency_per_row_ms"}).union(
    *TASK_GATE_METRICS.values(), FAIRNESS_METRICS
)
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt,
}  # fmt: skip
_GATE = re.compile(
    r"^\s*(?P<metric>[a-z_0-9]+)\s*(?:\(\s*(?P<attribute>[A-Za-z_][A-Za-z0-9_.-]*)\s*\))?\s*"
    r"(?P<op>>=|<=|>|<)\s*"
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
    attribute: str | None = None  # the sensitive attribute of a fairness gate

    @property
    def key(self) -> str:
        """The name of the measured value: `auc`, `fairness_gap(customer_age_band)`."""
        return f"{self.metric}({self.attribute})" if self.attribute else self.metric

    def bar(self, champion: dict[str, float] | None) -> float | None:
        if self.value is not None:
            return self.value
        if champion is None or champion.get(self.key) is None:
            return None
        if self.factor is not None:
            return champion[self.key] * self.factor
        return champion[self.key] + (self.delta or 0.0)


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
            f"cannot read the gate {text!r}; write e.g. 'auc >= 0.90', 'auc >= champion - 0.005', "
            "'rmse <= champion * 1.02' or 'fairness_gap(customer_age_band) <= 0.05' "
            f"(metrics: {', '.join(sorted(GATE_METRICS))})"
        )
    metric, attribute = match.group("metric"), match.group("attribute")
    if (metric in FAIRNESS_METRICS) != (attribute is not None):
        raise InvalidInput(
            f"gate {text!r}: {metric} needs the sensitive attribute it compares groups of, e.g. "
            f"{metric}(customer_age_band)"
            if attribute is None
            else f"gate {text!r}: only fairness metrics ({', '.join(sorted(FAIRNESS_METRICS))}) "
            "take an attribute"
        )
    delta = factor = None
    if match.group("champion"):
        number = float(match.group("delta") or 0.0)
        if match.group("sign") == "*":
            factor = number
        else:
            delta = number * (-1 if match.group("sign") == "-" else 1)
    value = float(match.group("value")) if match.group("value") is not None else None
    return Gate(text.strip(), metric, match.group("op"), value, delta, factor, attribute)


def check_gates_apply(gates: list[str], task: str, model: str) -> None:
    """Refuse gates on metrics the model's task has no value for (before anything is trained:
    such a gate would reject every candidate)."""
    usable = TASK_GATE_METRICS.get(task)
    if usable is None:
        return
    if task == "binary":
        usable = usable | FAIRNESS_METRICS
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
        value = candidate.get(gate.key)
        bar = gate.bar(champion)
        if bar is None and gate.value is None and champion is not None and gate.attribute:
            results.append(  # a champion whose groups could not be compared
                GateResult(text, gate.key, value, None, True, "the champion has no value for it")
            )
        elif bar is None:
            results.append(
                GateResult(text, gate.key, value, None, True, "no champion to compare with")
            )
        elif value is None or (isinstance(value, float) and math.isnan(value)):
            results.append(
                GateResult(text, gate.key, value, bar, False, "the candidate has no value for it")
            )
        else:
            results.append(GateResult(text, gate.key, value, bar, _OPS[gate.op](value, bar)))
    return results

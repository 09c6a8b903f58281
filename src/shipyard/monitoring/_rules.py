"""Alert rules as people write them: `accuracy < 0.90 over 7d with >= 500 labels`,
`psi(transaction_amount) > 0.2`, `latency_p95 > 100ms`, `drift(merchant_category)`.

    rule     := metric [ "(" feature ")" ] [ op number [unit] ] [ "over" window ] [ "with" ">=" n "labels" ]
    op       := < | <= | > | >= | == | !=
    unit     := ms | %          (latency in milliseconds; % divides by 100)
    window   := <n>m | <n>h | <n>d | <n>w
A metric without a comparison is a yes/no condition (`drift(amount)`, `concept_drift`).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from shipyard.core.durations import MAX_DURATION, parse_duration
from shipyard.core.errors import InvalidInput
from shipyard.monitoring._fairness import FAIRNESS_METRICS

if TYPE_CHECKING:
    from shipyard.monitoring._report import VersionSummary

__all__ = [
    "ATTRIBUTE_METRICS",
    "FEATURE_METRICS",
    "MAX_WINDOW",
    "MODEL_METRICS",
    "TASK_METRICS",
    "Rule",
    "check_task",
    "parse_rule",
    "parse_window",
]

MODEL_METRICS = frozenset(
    {
        "accuracy", "precision", "recall", "f1", "false_positive_rate", "auc",
        "estimated_accuracy", "estimated_precision", "estimated_recall",
        "error_rate", "volume", "throughput", "label_coverage",
        "latency_p50", "latency_p95", "latency_p99", "score_mean", "drift_share",
        "score_drift", "concept_drift", "mae", "rmse", "r2", "mean_residual", "residual_drift",
        "macro_precision", "macro_recall", "macro_f1", "weighted_f1", "top_2_accuracy", "top_3_accuracy",
    }
)  # fmt: skip
# what each kind of model is measured by; the other metrics stay empty for it, so a rule on
# one would never fire (`metrics_for`)
TASK_METRICS = {
    "binary": frozenset({"accuracy", "precision", "recall", "f1", "false_positive_rate", "auc",
                         "estimated_accuracy", "estimated_precision", "estimated_recall", "score_drift",
                         "concept_drift"}),
    "multiclass": frozenset({"accuracy", "macro_precision", "macro_recall", "macro_f1", "weighted_f1",
                             "top_2_accuracy", "top_3_accuracy", "score_drift", "concept_drift"}),
    "regression": frozenset({"mae", "rmse", "r2", "mean_residual", "residual_drift", "score_drift"}),
}  # fmt: skip
_QUALITY = frozenset().union(*TASK_METRICS.values())
FEATURE_METRICS = frozenset(
    {
        "drift",
        "psi",
        "wasserstein",
        "jensen_shannon",
        "ks",
        "missing_rate",
        "out_of_range",
        "unseen",
    }
)
# measured per feature view (of the views the model was trained on): the age of the online
# store's newest value, in seconds (`freshness(customer_stats) > 2h`)
VIEW_METRICS = frozenset({"freshness"})
# measured per declared sensitive attribute, on a binary classifier's labelled predictions
# (`fairness_gap(customer_age_band) > 0.05 over 7d with >= 500 labels`; see `_fairness`)
ATTRIBUTE_METRICS = FAIRNESS_METRICS
BOOLEAN_METRICS = frozenset({"drift", "concept_drift", "score_drift", "residual_drift"})
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
ALIASES = {
    "fpr": "false_positive_rate",
    "js": "jensen_shannon",
    "p95": "latency_p95",
    "p99": "latency_p99",
    "r_squared": "r2",
}
OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq, "!=": operator.ne,
}  # fmt: skip
_RULE = re.compile(
    r"""^\s*(?P<metric>[a-z_0-9]+)\s*(?:\(\s*(?P<feature>[^)]+?)\s*\))?\s*
    (?:(?P<op><=|>=|==|!=|<|>)\s*(?P<value>-?\d+(?:\.\d+)?)\s*(?P<unit>ms|%|s|m|h|d)?)?\s*
    (?:over\s+(?P<window>\d+\s*[a-z]+|\S+))?\s*
    (?:with\s*>=\s*(?P<labels>\d+)\s*labels?)?\s*$""",
    re.VERBOSE | re.IGNORECASE,
)
MAX_WINDOW = MAX_DURATION


def parse_window(text: str) -> timedelta:
    """`30m`, `1h`, `7d`, `2w` -> a timedelta (at most ten years)."""
    return parse_duration(text, "window")


@dataclass(frozen=True)
class Rule:
    """A parsed alert rule."""

    expression: str
    metric: str
    feature: str | None
    op: str | None
    threshold: float | None
    window: timedelta | None
    min_labels: int

    @property
    def key(self) -> str:
        return f"{self.metric}({self.feature})" if self.feature else self.metric

    def check(self, value: float | bool | None) -> bool | None:
        """Whether the rule fires for `value`; None when there is nothing to judge yet."""
        if value is None:
            return None
        if self.op is None:
            return bool(value)
        assert self.threshold is not None
        return OPS[self.op](float(value), self.threshold)

    def describe(self) -> str:
        return self.expression.strip()


def parse_rule(expression: str) -> Rule:
    """Parse an alert rule, or raise `InvalidInput` saying how to write one."""
    match = _RULE.match(expression or "")
    example = "e.g. 'accuracy < 0.90 over 7d with >= 500 labels' or 'psi(transaction_amount) > 0.2'"
    if match is None:
        raise InvalidInput(f"cannot read the rule {expression!r}; {example}")
    metric = ALIASES.get(match.group("metric").lower(), match.group("metric").lower())
    feature = match.group("feature")
    if metric in VIEW_METRICS:
        return _view_rule(expression, metric, feature, match)
    if metric in ATTRIBUTE_METRICS:
        return _attribute_rule(expression, metric, feature, match)
    if feature is not None and metric not in FEATURE_METRICS:
        raise InvalidInput(
            f"{metric} is not measured per feature; per-feature metrics: {', '.join(sorted(FEATURE_METRICS))}"
        )
    if feature is None and metric not in MODEL_METRICS:
        if metric in FEATURE_METRICS:
            raise InvalidInput(f"{metric} needs a feature, e.g. {metric}(transaction_amount)")
        known = ", ".join(sorted(MODEL_METRICS | FEATURE_METRICS | ATTRIBUTE_METRICS))
        raise InvalidInput(f"unknown metric {metric!r}; known metrics: {known}")
    op, raw_value, unit = match.group("op"), match.group("value"), match.group("unit")
    if op is None and metric not in BOOLEAN_METRICS:
        raise InvalidInput(f"{metric} needs a comparison, {example}")
    threshold = float(raw_value) if raw_value is not None else None
    if threshold is not None and unit == "%":
        threshold /= 100
    if unit == "ms" and not metric.startswith("latency"):
        raise InvalidInput(f"'ms' only applies to latency metrics, not {metric}")
    if unit in _SECONDS:
        raise InvalidInput(f"'{unit}' only applies to freshness(view), not {metric}")
    window = parse_window(match.group("window")) if match.group("window") else None
    return Rule(expression, metric, feature, op, threshold, window, int(match.group("labels") or 0))


def _view_rule(expression: str, metric: str, view: str | None, match: re.Match[str]) -> Rule:
    if view is None:
        raise InvalidInput(f"{metric} needs a feature view, e.g. {metric}(customer_stats) > 2h")
    op, raw, unit = match.group("op"), match.group("value"), match.group("unit")
    if op is None or raw is None:
        raise InvalidInput(f"{metric} needs a comparison, e.g. {metric}({view}) > 2h")
    if unit in ("ms", "%"):
        raise InvalidInput(f"{metric} is a duration: write it like 30m, 2h or 1d")
    threshold = float(raw) * _SECONDS.get(unit or "s", 1)
    window = parse_window(match.group("window")) if match.group("window") else None
    return Rule(expression, metric, view, op, threshold, window, int(match.group("labels") or 0))


def _attribute_rule(
    expression: str, metric: str, attribute: str | None, match: re.Match[str]
) -> Rule:
    if attribute is None:
        raise InvalidInput(
            f"{metric} needs a sensitive attribute declared under fairness: in shipyard.yaml, "
            f"e.g. {metric}(customer_age_band) > 0.05"
        )
    op, raw, unit = match.group("op"), match.group("value"), match.group("unit")
    if op is None or raw is None:
        raise InvalidInput(f"{metric} needs a comparison, e.g. {metric}({attribute}) > 0.05")
    if unit not in (None, "%"):
        raise InvalidInput(f"{metric} is a difference of rates: write it like 0.05 or 5%")
    threshold = float(raw) / (100 if unit == "%" else 1)
    window = parse_window(match.group("window")) if match.group("window") else None
    return Rule(
        expression, metric, attribute, op, threshold, window, int(match.group("labels") or 0)
    )


def check_task(rule: Rule, tasks: set[str]) -> None:
    """Refuse a rule on a quality metric that none of the model's tasks measures (a rule on
    `accuracy` for a regressor would never fire), naming the metrics that do apply."""
    if rule.metric in ATTRIBUTE_METRICS and tasks and "binary" not in tasks:
        raise InvalidInput(
            f"{rule.metric} compares a binary classifier's outcomes across groups; this model is "
            f"{' and '.join(sorted(tasks))}"
        )
    if rule.feature is not None or rule.metric not in _QUALITY or not tasks:
        return
    known = tasks & TASK_METRICS.keys()
    if not known or any(rule.metric in TASK_METRICS[t] for t in known):
        return
    usable = sorted(set().union(*(TASK_METRICS[t] for t in known)))
    kinds = " and ".join(sorted(known))
    raise InvalidInput(
        f"{rule.metric} does not measure a {kinds} model; its quality metrics are "
        f"{', '.join(usable)} (and every model has latency_p95, error_rate, volume, drift(...))"
    )


def metric_value(rule: Rule, summary: VersionSummary) -> float | bool | None:
    """The value of `rule`'s metric in a version summary (see `Monitor`), or None if unknown."""
    if rule.metric in VIEW_METRICS:
        health = summary.get("feature_views", {}).get(str(rule.feature))
        return health["freshness_seconds"] if health is not None else None
    if rule.metric in ATTRIBUTE_METRICS:
        groups = summary.get("fairness", {}).get(str(rule.feature))
        gap = groups.get(rule.metric) if groups is not None else None
        return float(gap) if isinstance(gap, int | float) else None
    if rule.feature is None:
        value = summary["metrics"].get(rule.metric)
        return value if isinstance(value, int | float | bool) else None
    column = summary["drift"]["columns"].get(rule.feature)
    if column is None:
        return None
    if rule.metric == "drift":
        return bool(column["drift"])
    if rule.metric == "missing_rate":
        rate = column["missing"]["current_rate"]
        return float(rate) if rate is not None else None
    stats = column["stats"]
    key = {
        "psi": "psi",
        "wasserstein": "wasserstein_norm",
        "jensen_shannon": "jensen_shannon",
        "ks": "ks_statistic",
        "out_of_range": "out_of_range_rate",
        "unseen": "unseen_share",
    }[rule.metric]
    value = stats.get(key)
    return value if isinstance(value, int | float) else None

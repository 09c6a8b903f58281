"""Bias testing: a binary classifier's outcomes per group of a sensitive attribute, and the gaps
between groups, declared beside the model in `shipyard.yaml`:

    models:
      fraud-detector:
        fairness:
          attributes:
            - merchant_category                    # a column, one group per value
            - name: customer_age_band              # bands of a numeric column
              column: customer_age
              edges: [30, 45, 65]                  # <30, 30-45, 45-65, >=65
          min_group_rows: 30                       # smaller groups are shown, not compared

Per group: rows, selection rate (the share flagged positive), true and false positive rates and
accuracy. Between the groups with at least `min_group_rows` rows:

    demographic_parity_difference  largest minus smallest selection rate
    equalized_odds_difference      the larger of the true-positive-rate and the false-positive-rate
                                   spreads (fairlearn's `equalized_odds_difference`, worst case)
    fairness_gap                   the larger of the two

The same definitions as fairlearn's `demographic_parity_difference` and
`equalized_odds_difference` (the tests check them against fairlearn on the same data). They are
monitoring metrics (`fairness_gap(customer_age_band) > 0.05 over 7d with >= 500 labels`), and
retraining gates on the holdout (`fairness_gap(customer_age_band) <= 0.05`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shipyard.core.errors import ConfigurationError, InvalidInput
from shipyard.core.project import read_project_file
from shipyard.core.values import category_text

__all__ = [
    "FAIRNESS_METRICS",
    "Attribute",
    "FairnessSpec",
    "binary_outcomes",
    "fairness_metrics",
    "fairness_of",
    "flat_metrics",
    "group_metrics",
    "load_fairness",
]

FAIRNESS_METRICS = frozenset(
    {"demographic_parity_difference", "equalized_odds_difference", "fairness_gap"}
)
MISSING_GROUP = "(missing)"
MAX_GROUPS = 50  # groups per attribute; more values than this are not groups but identifiers


class Attribute(BaseModel):
    """A sensitive attribute: a column's values, or bands of a numeric column."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$",
        description="what gates, rules and cards call it, e.g. `customer_age_band`",
    )
    column: str | None = Field(
        default=None, max_length=128, description="the column it is read from (default: name)"
    )
    edges: tuple[float, ...] | None = Field(
        default=None,
        min_length=1,
        max_length=20,
        description="band edges of a numeric column, ascending: [30, 45] makes <30, 30-45, >=45",
    )

    @field_validator("edges")
    @classmethod
    def _ascending(cls, value: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if value is not None and (
            any(not math.isfinite(v) for v in value) or list(value) != sorted(set(value))
        ):
            raise ValueError("edges must be finite numbers in ascending order, each once")
        return value

    @property
    def source(self) -> str:
        return self.column or self.name

    @property
    def order(self) -> list[str] | None:
        """The groups in the order people read them: bands from low to high (None: by name)."""
        return [*_band_labels(self.edges), MISSING_GROUP] if self.edges else None

    def groups(self, values: Any) -> np.ndarray:
        """Each row's group: the value as text, or its band; missing values form their own."""
        import pandas as pd

        series = pd.Series(values)
        if self.edges is None:
            return np.asarray(
                [MISSING_GROUP if t is None else t for t in map(category_text, series)],
                dtype=object,
            )
        numbers = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)
        if np.isnan(numbers).all() and series.notna().any():
            raise InvalidInput(
                f"fairness attribute {self.name}: column {self.source!r} holds no numbers to "
                "band by edges; drop the edges to group by its values"
            )
        labels = _band_labels(self.edges)
        index = np.searchsorted(np.asarray(self.edges), numbers, side="right")
        out = np.asarray(labels, dtype=object)[np.minimum(index, len(labels) - 1)]
        out[np.isnan(numbers)] = MISSING_GROUP
        return out


def _band_labels(edges: tuple[float, ...]) -> list[str]:
    def text(v: float) -> str:
        return f"{v:g}"

    inner = [f"{text(a)}-{text(b)}" for a, b in pairwise(edges)]
    return [f"<{text(edges[0])}", *inner, f">={text(edges[-1])}"]


class FairnessSpec(BaseModel):
    """The sensitive attributes of one model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attributes: tuple[Attribute, ...] = Field(
        min_length=1,
        max_length=20,
        description="the sensitive attributes: a column name (one group per value), or "
        "`{name, column, edges}` (bands of a numeric column)",
    )
    min_group_rows: int = Field(
        default=30, ge=1, le=1_000_000, description="groups smaller than this are not compared"
    )

    @field_validator("attributes", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value

    @field_validator("attributes")
    @classmethod
    def _unique(cls, value: tuple[Attribute, ...]) -> tuple[Attribute, ...]:
        names = [a.name for a in value]
        if len(set(names)) != len(names):
            raise ValueError("each attribute name once")
        return value

    def attribute(self, name: str) -> Attribute:
        for found in self.attributes:
            if found.name == name:
                return found
        raise InvalidInput(
            f"{name!r} is not a declared fairness attribute; declared: "
            f"{', '.join(a.name for a in self.attributes)} (fairness.attributes in shipyard.yaml)"
        )


def binary_outcomes(
    answers: Any, truth: Any, positive: Any, threshold: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """(true outcome is positive, flagged positive) per row, from a binary classifier's scores
    (one column, or the two class probabilities) and the true labels."""
    scores = np.asarray(answers, dtype=float)
    scores = scores[:, 1] if scores.ndim == 2 else scores
    flagged = scores >= (0.5 if threshold is None else threshold)
    wanted = category_text(positive)
    actual = np.asarray([category_text(t) == wanted for t in truth], dtype=bool)
    return actual, flagged


def group_metrics(
    actual: np.ndarray,
    flagged: np.ndarray,
    groups: np.ndarray,
    *,
    min_group_rows: int = 30,
    order: list[str] | None = None,
) -> dict[str, Any]:
    """Per-group outcomes and the gaps between the groups with enough rows; the groups listed
    by name, or in `order` (a band attribute's, low to high)."""
    names, inverse = np.unique(groups.astype(str), return_inverse=True)
    if len(names) > MAX_GROUPS:
        raise InvalidInput(
            f"the attribute has {len(names)} distinct values; a fairness attribute groups rows "
            f"(at most {MAX_GROUPS}): band a numeric column with edges"
        )
    rows: list[dict[str, Any]] = []
    for index, name in enumerate(names):
        mine = inverse == index
        y, f = actual[mine], flagged[mine]
        positives, negatives = int(y.sum()), int((~y).sum())
        rows.append(
            {
                "group": str(name),
                "rows": int(mine.sum()),
                "positives": positives,
                "selection_rate": float(f.mean()),
                "true_positive_rate": float((f & y).sum() / positives) if positives else None,
                "false_positive_rate": float((f & ~y).sum() / negatives) if negatives else None,
                "accuracy": float((f == y).mean()),
                "compared": bool(mine.sum() >= min_group_rows),
            }
        )
    if order is not None:
        rank = {name: i for i, name in enumerate(order)}
        rows.sort(key=lambda r: (rank.get(r["group"], len(rank)), r["group"]))
    compared = [r for r in rows if r["compared"]]

    def spread(key: str) -> float | None:
        values = [float(r[key]) for r in compared if r[key] is not None]
        return float(max(values) - min(values)) if len(values) >= 2 else None

    parity, tpr, fpr = (
        spread("selection_rate"),
        spread("true_positive_rate"),
        spread("false_positive_rate"),
    )
    odds = None if tpr is None and fpr is None else max(v for v in (tpr, fpr) if v is not None)
    gaps = [v for v in (parity, odds) if v is not None]
    return {
        "rows": len(groups),
        "groups": rows,
        "compared_groups": len(compared),
        "demographic_parity_difference": parity,
        "equalized_odds_difference": odds,
        "fairness_gap": max(gaps) if gaps else None,
    }


def fairness_metrics(
    spec: FairnessSpec, columns: Mapping[str, Any], actual: np.ndarray, flagged: np.ndarray
) -> dict[str, dict[str, Any]]:
    """`group_metrics` for each declared attribute, read from `columns` (name -> values)."""
    out = {}
    for attribute in spec.attributes:
        if attribute.source not in columns:
            raise InvalidInput(
                f"fairness attribute {attribute.name} reads column {attribute.source!r}, which "
                f"the data does not have ({', '.join(list(columns)[:20])})"
            )
        groups = attribute.groups(columns[attribute.source])
        out[attribute.name] = group_metrics(
            actual, flagged, groups, min_group_rows=spec.min_group_rows, order=attribute.order
        )
    return out


def flat_metrics(report: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """`{"fairness_gap(customer_age_band)": 0.03, ...}`: the gaps as gates and rules name them."""
    return {
        f"{metric}({attribute})": float(found[metric])
        for attribute, found in report.items()
        for metric in sorted(FAIRNESS_METRICS)
        if found.get(metric) is not None
    }


def load_fairness(path: Path | None = None) -> dict[str, FairnessSpec]:
    """The fairness declarations of every model in the project file (see `read_project_file`)."""
    found = read_project_file(path, must_exist=False)
    return {} if found is None else fairness_of(*found)


def fairness_of(raw: Any, source: Path | str) -> dict[str, FairnessSpec]:
    models = raw.get("models") if isinstance(raw, dict) else None
    out: dict[str, FairnessSpec] = {}
    for model, body in (models or {}).items() if isinstance(models, dict) else ():
        declared = body.get("fairness") if isinstance(body, dict) else None
        if declared is None:
            continue
        try:
            out[str(model)] = FairnessSpec.model_validate(declared)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()
            )
            raise ConfigurationError(f"{source}: model {model!r}: fairness: {problems}") from None
    return out

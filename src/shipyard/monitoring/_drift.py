"""Data drift between two data sets: `compare(reference, current) -> DriftReport`.

Verdicts combine significance with size. A p-value alone calls every difference drift once
there are enough rows (at a million rows even a column that did not change fails a
chi-square goodness-of-fit test now and then), and a size threshold alone misses real
changes its binning cannot see (PSI >= 0.1 misses a 0.3-sd mean shift). So by default a
column drifts when its test is significant after Benjamini-Hochberg correction across all
columns *and* the change is big enough to matter:

    numeric       KS test, effect = Wasserstein distance / reference sd >= 0.1
    categorical   chi-square test of homogeneity, effect = Jensen-Shannon distance >= 0.1
                  (scipy's, natural log: 0 for the same shares, sqrt(ln 2) ~ 0.833 for no
                  category in common), or categories never seen in the reference making
                  up >= 1% of rows
    missing rate  two-proportion z-test, effect = Cohen's h >= 0.1 (1% -> 5% is h = 0.25):
                  a change in how often a value is missing is drift too

Every method can be chosen per column instead (`methods={"amount": "psi"}`), including the
classic single-criterion ones (`ks`, `chi2`, `chi2_gof`, `psi`, `wasserstein`,
`jensen_shannon`). PSI fills empty bins as Evidently does (`_stats` says how and why).
Columns are read one at a time, so Parquet inputs never sit in memory whole.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from shipyard.core.errors import InvalidInput
from shipyard.core.values import category_text, jsonable
from shipyard.monitoring._stats import (
    CategoricalStats,
    NumericStats,
    benjamini_hochberg,
    categorical_stats,
    missing_rate_test,
    numeric_stats,
)

if TYPE_CHECKING:
    from shipyard.monitoring._report import ColumnDriftRecord, DriftRecord

__all__ = ["DEFAULT_THRESHOLDS", "METHODS", "ColumnDrift", "DriftReport", "Table", "compare"]

Kind = Literal["numeric", "categorical"]
Status = Literal["ok", "warning", "drift"]

METHODS: dict[Kind, tuple[str, ...]] = {
    "numeric": ("auto", "ks", "wasserstein", "psi", "psi_sturges"),
    "categorical": ("auto", "chi2", "chi2_gof", "jensen_shannon", "psi"),
}
DEFAULT_THRESHOLDS: dict[str, float] = {
    "alpha": 0.05,  # false discovery rate across the report's tests
    "wasserstein": 0.1,  # reference standard deviations
    "jensen_shannon": 0.1,  # a distance, natural log: from 0 to sqrt(ln 2) ~ 0.833
    "psi": 0.2,  # on reference deciles
    "psi_sturges": 0.1,  # Evidently's default for its PSI
    "unseen_share": 0.01,
    "missing_h": 0.1,  # Cohen's h
    "drift_share": 0.5,  # share of drifted columns that makes the data set drift
}
_CATEGORICAL_MAX_DISTINCT_INTS = 5


@dataclass(frozen=True)
class ColumnDrift:
    """The verdict on one column, with the numbers behind it."""

    column: str
    kind: Kind
    method: str
    statistic: float
    p_value: float | None
    p_adjusted: float | None
    effect: str
    effect_size: float
    threshold: float
    status: Status
    missing: dict[str, Any]
    stats: dict[str, Any]
    reason: str

    @property
    def drift(self) -> bool:
        return self.status == "drift"

    def to_dict(self) -> ColumnDriftRecord:
        return {
            "column": self.column,
            "kind": self.kind,
            "method": self.method,
            "statistic": jsonable(self.statistic),
            "p_value": jsonable(self.p_value),
            "p_value_adjusted": jsonable(self.p_adjusted),
            "effect": self.effect,
            "effect_size": jsonable(self.effect_size),
            "threshold": self.threshold,
            "drift": self.drift,
            "status": self.status,
            "missing": {k: jsonable(v) for k, v in self.missing.items()},
            "stats": {k: jsonable(v) for k, v in self.stats.items()},
            "reason": self.reason,
        }


@dataclass(frozen=True)
class DriftReport:
    """Per-column verdicts and the data set's drift share."""

    columns: dict[str, ColumnDrift]
    rows_reference: int
    rows_current: int
    thresholds: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    missing_in_current: list[str] = field(default_factory=list)
    """Reference columns the current data lacks: a schema problem, reported, never compared."""

    @property
    def schema_problems(self) -> list[str]:
        """What is wrong with the current data's columns, one sentence each."""
        return [
            f"column {name!r} is in the reference and missing from the current data"
            for name in self.missing_in_current
        ]

    @property
    def drifted(self) -> list[str]:
        return [name for name, c in self.columns.items() if c.drift]

    @property
    def drift_share(self) -> float:
        return len(self.drifted) / len(self.columns) if self.columns else 0.0

    @property
    def dataset_drift(self) -> bool:
        return bool(self.columns) and self.drift_share >= self.thresholds["drift_share"]

    def ranked(self) -> list[ColumnDrift]:
        """Columns by how much they moved (effect size relative to its threshold), most first."""
        return sorted(self.columns.values(), key=lambda c: -_relative(c))

    def to_dict(self) -> DriftRecord:
        return {
            "rows_reference": self.rows_reference,
            "rows_current": self.rows_current,
            "drifted": self.drifted,
            "drift_share": self.drift_share,
            "dataset_drift": self.dataset_drift,
            "thresholds": self.thresholds,
            "missing_in_current": self.missing_in_current,
            "schema_problems": self.schema_problems,
            "columns": {name: c.to_dict() for name, c in self.columns.items()},
        }


def _relative(column: ColumnDrift) -> float:
    if column.threshold and not math.isnan(column.effect_size):
        return column.effect_size / column.threshold
    return 0.0


class Table:
    """Column-at-a-time access to a pandas DataFrame, an Arrow table or a Parquet file/folder."""

    def __init__(self, data: Any) -> None:
        if isinstance(data, str | Path):
            path = Path(data)
            if not path.exists():
                raise InvalidInput(
                    f"{str(path)!r} does not exist; pass a Parquet file or folder, or a DataFrame"
                )
            self._source: Any = ds.dataset(str(path), format="parquet")
            self.schema: pa.Schema = self._source.schema
            self.num_rows = int(self._source.count_rows())
        elif isinstance(data, ds.Dataset):
            self._source = data
            self.schema = data.schema
            self.num_rows = int(data.count_rows())
        elif isinstance(data, pa.Table):
            self._source = data
            self.schema = data.schema
            self.num_rows = data.num_rows
        elif hasattr(data, "columns") and hasattr(data, "dtypes"):  # pandas
            self._source = data
            self.schema = pa.Schema.from_pandas(data.iloc[:0], preserve_index=False)
            self.num_rows = len(data)
        else:
            raise InvalidInput(
                f"cannot compare a {type(data).__name__}; pass a pandas DataFrame, a pyarrow Table, "
                "or the path of a Parquet file or folder"
            )

    @property
    def names(self) -> list[str]:
        return list(self.schema.names)

    def column(self, name: str) -> pa.ChunkedArray | pa.Array:
        source = self._source
        if isinstance(source, pa.Table):
            return source.column(name)
        if isinstance(source, ds.Dataset):
            return source.to_table(columns=[name]).column(name)
        return pa.array(source[name], from_pandas=True)

    def type_of(self, name: str) -> pa.DataType:
        return self.schema.field(name).type


def _is_number(arrow_type: pa.DataType) -> bool:
    return bool(
        pa.types.is_integer(arrow_type)
        or pa.types.is_floating(arrow_type)
        or pa.types.is_decimal(arrow_type)
    )


def _without_nan(column: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    if pa.types.is_floating(column.type):
        return pc.if_else(pc.is_nan(column), None, column)
    return column


def _integral(column: pa.ChunkedArray | pa.Array) -> bool:
    """Integers, or floats whose every present value is a whole number (an integer column
    that pandas upcast to float because a value was missing)."""
    if pa.types.is_integer(column.type):
        return True
    if not pa.types.is_floating(column.type):
        return False
    values = _without_nan(column)
    whole = pc.all(pc.equal(pc.floor(values), values), skip_nulls=True).as_py()
    return whole is not False  # None: nothing present


def kind_of(name: str, reference: Table, current: Table) -> tuple[Kind, bool]:
    """How column `name` is compared, decided from both sides: (kind, flags as numbers).

    * booleans on either side are flags: categorical, and when the other side holds numbers
      (0/1 codes) the booleans count as 1 and 0, so `True` and `1` are one category;
    * whole numbers on both sides (integers, or floats that are all whole) with at most
      `_CATEGORICAL_MAX_DISTINCT_INTS` values in the reference are codes: categorical;
    * other numbers on both sides: numeric;
    * anything else (text on either side, e.g. digits as strings against integer codes):
      categorical, every value compared by `category_text`.
    """
    ref_type, cur_type = reference.type_of(name), current.type_of(name)
    flags = pa.types.is_boolean(ref_type), pa.types.is_boolean(cur_type)
    if any(flags):
        other = cur_type if flags[0] else ref_type
        return "categorical", not all(flags) and _is_number(other)
    if not (_is_number(ref_type) and _is_number(cur_type)):
        return "categorical", False
    ref = reference.column(name)
    if _integral(ref) and _integral(current.column(name)):
        distinct = pc.count_distinct(_without_nan(ref)).as_py()
        if distinct <= _CATEGORICAL_MAX_DISTINCT_INTS:
            return "categorical", False
    return "numeric", False


def _numeric_array(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """float64 values with NaN for missing."""
    array = pc.cast(column, pa.float64())
    return np.asarray(
        array.to_numpy(zero_copy_only=False) if hasattr(array, "to_numpy") else array,
        dtype=np.float64,
    )


def _counts(
    column: pa.ChunkedArray | pa.Array, flags_as_numbers: bool = False
) -> tuple[dict[str, int], int]:
    """Category counts (as `category_text`) and the number of missing values (None, NaN)."""
    if flags_as_numbers and pa.types.is_boolean(column.type):
        column = pc.cast(column, pa.int8())
    counts = pc.value_counts(_without_nan(column))
    out: dict[str, int] = {}
    missing = 0
    for value, count in zip(
        counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True
    ):
        key = category_text(value)
        if key is None:
            missing += count
        else:
            out[key] = out.get(key, 0) + count
    return out, missing


@dataclass
class _Raw:
    name: str
    kind: Kind
    method: str
    stats: NumericStats | CategoricalStats


def _measure(
    name: str, kind: Kind, flags: bool, method: str, reference: Table, current: Table
) -> _Raw:
    ref, cur = reference.column(name), current.column(name)
    if kind == "numeric":
        return _Raw(name, kind, method, numeric_stats(_numeric_array(ref), _numeric_array(cur)))
    (ref_counts, ref_missing), (cur_counts, cur_missing) = _counts(ref, flags), _counts(cur, flags)
    return _Raw(
        name, kind, method, categorical_stats(ref_counts, cur_counts, ref_missing, cur_missing)
    )


def _primary(
    raw: _Raw, t: Mapping[str, float]
) -> tuple[str, float, float | None, str, float, float]:
    """(method, statistic, p-value or None, effect name, effect size, effect threshold)."""
    s, method = raw.stats, raw.method
    if isinstance(s, NumericStats):
        if method in ("auto", "ks"):
            return (
                "ks",
                s.ks_statistic,
                s.ks_p_value,
                "wasserstein_norm",
                s.wasserstein_norm,
                t["wasserstein"],
            )
        if method == "wasserstein":
            return (
                "wasserstein",
                s.wasserstein_norm,
                None,
                "wasserstein_norm",
                s.wasserstein_norm,
                t["wasserstein"],
            )
        if method == "psi":
            return ("psi", s.psi, None, "psi", s.psi, t["psi"])
        return ("psi_sturges", s.psi_sturges, None, "psi_sturges", s.psi_sturges, t["psi_sturges"])
    if method in ("auto", "chi2"):
        return (
            "chi2",
            s.chi2_statistic,
            s.chi2_p_value,
            "jensen_shannon",
            s.jensen_shannon,
            t["jensen_shannon"],
        )
    if method == "chi2_gof":
        return (
            "chi2_gof",
            s.chi2_gof_statistic,
            s.chi2_gof_p_value,
            "jensen_shannon",
            s.jensen_shannon,
            t["jensen_shannon"],
        )
    if method == "jensen_shannon":
        return (
            "jensen_shannon",
            s.jensen_shannon,
            None,
            "jensen_shannon",
            s.jensen_shannon,
            t["jensen_shannon"],
        )
    return ("psi", s.psi, None, "psi", s.psi, t["psi"])


def _stats_dict(s: NumericStats | CategoricalStats) -> dict[str, Any]:
    if isinstance(s, NumericStats):
        return {
            "ks_statistic": s.ks_statistic,
            "ks_p_value": s.ks_p_value,
            "wasserstein": s.wasserstein,
            "wasserstein_norm": s.wasserstein_norm,
            "psi": s.psi,
            "psi_sturges": s.psi_sturges,
            "reference_min": s.ref_min,
            "reference_max": s.ref_max,
            "out_of_range": s.out_of_range,
            "out_of_range_rate": s.out_of_range / max(1, s.n_cur - s.missing_cur),
            "histogram": s.histogram,
        }
    return {
        "chi2_statistic": s.chi2_statistic,
        "chi2_p_value": s.chi2_p_value,
        "chi2_dof": s.chi2_dof,
        "chi2_gof_statistic": s.chi2_gof_statistic,
        "chi2_gof_p_value": s.chi2_gof_p_value,
        "jensen_shannon": s.jensen_shannon,
        "psi": s.psi,
        "unseen": dict(sorted(s.unseen.items(), key=lambda kv: -kv[1])[:20]),
        "unseen_share": s.unseen_share,
        "shares": s.shares,
    }


def compare(
    reference: Any,
    current: Any,
    methods: str | Mapping[str, str] | None = None,
    *,
    columns: Iterable[str] | None = None,
    categorical: Iterable[str] = (),
    thresholds: Mapping[str, float] | None = None,
    workers: int | None = None,
) -> DriftReport:
    """Compare `current` with `reference`, column by column.

    Args:
        reference: what "normal" looks like: a pandas DataFrame, a pyarrow Table, or the path
            of a Parquet file or folder (read one column at a time).
        current: the data to check, in any of the same forms.
        methods: one method for every column, or a mapping column -> method (`auto`, `ks`,
            `wasserstein`, `psi`, `psi_sturges` for numeric; `auto`, `chi2`, `chi2_gof`,
            `jensen_shannon`, `psi` for categorical). Default `auto` (see the module doc).
        columns: the columns to compare (default: those both sides have).
        categorical: numeric columns to treat as categories (codes, flags).
        thresholds: overrides of `DEFAULT_THRESHOLDS`.
        workers: threads (default: the number of cores).
    """
    ref, cur = Table(reference), Table(current)
    t = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    unknown_thresholds = set(t) - set(DEFAULT_THRESHOLDS)
    if unknown_thresholds:
        raise InvalidInput(
            f"unknown threshold(s) {sorted(unknown_thresholds)}; known: {sorted(DEFAULT_THRESHOLDS)}"
        )
    names = list(columns) if columns is not None else [n for n in ref.names if n in set(cur.names)]
    missing = [n for n in names if n not in ref.names or n not in cur.names]
    if missing:
        raise InvalidInput(f"column(s) {missing} are not in both data sets")
    if not names:
        raise InvalidInput("the two data sets have no column in common to compare")
    # a column the reference has and the current data lacks is a schema problem, not "no drift"
    absent = [n for n in ref.names if n not in set(cur.names)] if columns is None else []
    forced = set(categorical)
    plan: list[tuple[str, Kind, bool, str]] = []
    for name in names:
        kind, flags = kind_of(name, ref, cur)
        if name in forced:
            kind = "categorical"
        method = (methods if isinstance(methods, str) else (methods or {}).get(name)) or "auto"
        if method not in METHODS[kind]:
            raise InvalidInput(
                f"method {method!r} does not apply to {kind} column {name!r}; use one of {', '.join(METHODS[kind])}"
            )
        plan.append((name, kind, flags, method))
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 2)) as pool:
        raws = list(pool.map(lambda p: _measure(p[0], p[1], p[2], p[3], ref, cur), plan))
    report = _verdicts(raws, ref.num_rows, cur.num_rows, t)
    return replace(report, missing_in_current=absent) if absent else report


def _verdicts(raws: list[_Raw], rows_ref: int, rows_cur: int, t: dict[str, float]) -> DriftReport:
    primaries = [_primary(raw, t) for raw in raws]
    missing_tests = [
        missing_rate_test(r.stats.missing_ref, r.stats.n_ref, r.stats.missing_cur, r.stats.n_cur)
        for r in raws
    ]
    # one false-discovery correction over every test in the report
    p_values = [p[2] if p[2] is not None else math.nan for p in primaries] + [
        m[0] for m in missing_tests
    ]
    adjusted = benjamini_hochberg(p_values)
    n = len(raws)
    columns = {}
    for i, (raw, (method, statistic, p, effect, size, threshold)) in enumerate(
        zip(raws, primaries, strict=True)
    ):
        p_adj = adjusted[i] if p is not None else None
        miss_p, miss_h = missing_tests[i]
        miss_adj = adjusted[n + i]
        missing_drift = miss_adj < t["alpha"] and miss_h >= t["missing_h"]
        s = raw.stats
        unseen = isinstance(s, CategoricalStats) and s.unseen_share >= t["unseen_share"]
        significant = p_adj is None or p_adj < t["alpha"]
        big = size >= threshold or (unseen and method in ("chi2",))
        if math.isnan(size):
            status: Status = "ok"
        elif significant and big:
            status = "drift"
        elif significant and size >= threshold / 2:
            status = "warning"
        else:
            status = "ok"
        if missing_drift:
            status = "drift"
        reason = _reason(
            raw.name, method, p_adj, effect, size, threshold, missing_drift, s, unseen, t, status
        )
        columns[raw.name] = ColumnDrift(
            column=raw.name,
            kind=raw.kind,
            method=method,
            statistic=statistic,
            p_value=p,
            p_adjusted=p_adj,
            effect=effect,
            effect_size=size,
            threshold=threshold,
            status=status,
            missing={
                "reference_rate": s.missing_ref / s.n_ref if s.n_ref else 0.0,
                "current_rate": s.missing_cur / s.n_cur if s.n_cur else 0.0,
                "p_value": miss_p,
                "p_value_adjusted": miss_adj,
                "cohen_h": miss_h,
                "drift": missing_drift,
            },
            stats=_stats_dict(s),
            reason=reason,
        )
    return DriftReport(columns, rows_ref, rows_cur, t)


def _reason(
    name: str,
    method: str,
    p_adj: float | None,
    effect: str,
    size: float,
    threshold: float,
    missing_drift: bool,
    s: NumericStats | CategoricalStats,
    unseen: bool,
    t: Mapping[str, float],
    status: Status,
) -> str:
    parts = []
    if p_adj is not None:
        parts.append(f"{method} p={p_adj:.2g} (adjusted)")
    parts.append(f"{effect}={size:.3g} (threshold {threshold:g})")
    if unseen and isinstance(s, CategoricalStats):
        top = ", ".join(list(s.unseen)[:3])
        parts.append(f"{s.unseen_share:.1%} of rows in categories the reference never had ({top})")
    if missing_drift:
        parts.append(f"missing rate {s.missing_ref / s.n_ref:.1%} -> {s.missing_cur / s.n_cur:.1%}")
    return f"{status}: " + "; ".join(parts)

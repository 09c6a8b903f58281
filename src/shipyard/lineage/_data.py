"""Which model versions used which data, and how two data versions differ.

A data version is named by its id (or a prefix of 6+ hex characters) or by the model version
that used it: `fraud-detector:3` is the training set of version 3, `fraud-detector:3/holdout`
its holdout. A diff tells rows added, removed and changed (by the declared key, or as whole
rows without one), schema changes, and per-column drift through `monitoring.compare`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shipyard.core import ModelRef
from shipyard.core.errors import InvalidInput, NotFound
from shipyard.monitoring import compare
from shipyard.registry import Registry
from shipyard.tracking import DataVersion, Tracker

__all__ = ["DataDiff", "DataUse", "data_uses", "diff_data", "resolve_data"]

CHANGED_EXAMPLES = 10  # keys of changed rows a diff names
DRIFT_ROWS = 200_000  # rows per side the drift comparison reads (drawn evenly)


@dataclass(frozen=True)
class DataUse:
    """A model version's use of a data version in the run that trained it."""

    model: str
    version: int
    role: str  # the name the run logged it under: train, holdout, ...
    run_id: str

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version, "role": self.role, "run": self.run_id}


def data_uses(registry: Registry, tracker: Tracker) -> dict[str, list[DataUse]]:
    """Every data version a registered model version's run logged, by data version id."""
    versions = [v for m in registry.list_models() for v in registry.list_versions(m.name)]
    linked = {v.run_id for v in versions if v.run_id}
    runs = {r.id: r for r in tracker.list_runs(limit=len(linked) or 1, among=linked)}
    uses: dict[str, list[DataUse]] = defaultdict(list)
    for v in versions:
        run = runs.get(v.run_id or "")
        for role, entry in (run.datasets if run is not None else {}).items():
            if entry.get("snapshot"):
                uses[entry["sha256"]].append(DataUse(v.name, v.version, role, run.id))  # type: ignore[union-attr]
    return dict(uses)


def resolve_data(registry: Registry, tracker: Tracker, ref: str) -> tuple[DataVersion, str]:
    """The data version `ref` names (an id or prefix; `NAME[:VERSION|:ALIAS][/ROLE]`, a model
    version's `train` set by default), and how to say it (`fraud-detector:3/train (1a2b3c...)`)."""
    name, _, role = ref.strip().partition("/")
    if ":" not in name and all(c in "0123456789abcdef" for c in name.lower()):
        if role:
            raise InvalidInput(f"{ref!r}: a role (/train, /holdout) follows a model version")
        version = tracker.data.get(name)
        return version, version.sha256[:12]
    target = ModelRef.parse(name)
    model = registry.resolve(target)
    role = role or "train"
    if not model.run_id:
        raise NotFound(
            f"{model.ref} was registered outside a tracked run, so no data version is linked to "
            "it; register inside `with shipyard.start_run(...)` to keep its data"
        )
    datasets = tracker.get(model.run_id).datasets
    entry = datasets.get(role)
    if entry is None or not entry.get("snapshot"):
        logged = ", ".join(sorted(k for k, e in datasets.items() if e.get("snapshot"))) or "none"
        raise NotFound(f"{model.ref} has no {role} data version (its run kept: {logged})")
    return tracker.data.get(entry["sha256"]), f"{model.ref}/{role} ({entry['sha256'][:12]})"


@dataclass
class DataDiff:
    """How data version `b` differs from `a`."""

    a: str
    b: str
    rows: tuple[int, int]
    key: list[str] | None
    added: int
    removed: int
    changed: int | None  # None without a key: a row that changed reads as removed + added
    unchanged: int
    changed_keys: list[Any] = field(default_factory=list)
    changed_columns: dict[str, int] = field(default_factory=dict)
    columns_added: list[str] = field(default_factory=list)
    columns_removed: list[str] = field(default_factory=list)
    types_changed: dict[str, tuple[str, str]] = field(default_factory=dict)
    drift: dict[str, Any] = field(default_factory=dict)
    identical: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a, "b": self.b, "identical": self.identical,
            "rows": {"a": self.rows[0], "b": self.rows[1]}, "key": self.key,
            "added": self.added, "removed": self.removed, "changed": self.changed,
            "unchanged": self.unchanged, "changed_keys": self.changed_keys,
            "changed_columns": self.changed_columns,
            "schema": {"added": self.columns_added, "removed": self.columns_removed,
                       "types_changed": {k: list(v) for k, v in self.types_changed.items()}},
            "drift": self.drift,
        }  # fmt: skip


def diff_data(
    a: DataVersion,
    b: DataVersion,
    a_table: Any,
    b_table: Any,
    *,
    key: list[str] | None = None,
    names: tuple[str, str] | None = None,
) -> DataDiff:
    """Compare two data versions' rows, schemas and distributions.

    Args:
        key: the columns that identify a row (default: the key `a` was logged with, if `b`
            has the same columns).
    """
    key = key or (a.key if a.key and all(k in b_table.column_names for k in a.key) else None)
    for side, table in (("first", a_table), ("second", b_table)):
        missing = [k for k in key or [] if k not in table.column_names]
        if missing:
            raise InvalidInput(f"the key {missing} is not a column of the {side} data version")
    left, right = a_table.to_pandas(), b_table.to_pandas()
    schema_a = {c["name"]: c["type"] for c in a.schema}
    schema_b = {c["name"]: c["type"] for c in b.schema}
    common = [c for c in schema_a if c in schema_b]
    result = DataDiff(
        a=names[0] if names else a.sha256[:12], b=names[1] if names else b.sha256[:12],
        rows=(a.rows, b.rows), key=key, added=0, removed=0, changed=None, unchanged=0,
        columns_added=[c for c in schema_b if c not in schema_a],
        columns_removed=[c for c in schema_a if c not in schema_b],
        types_changed={c: (schema_a[c], schema_b[c]) for c in common if schema_a[c] != schema_b[c]},
        identical=a.sha256 == b.sha256,
    )  # fmt: skip
    if key:
        _by_key(result, left, right, key, [c for c in common if c not in key])
    else:
        _by_row(result, left, right, common)
    result.drift = _drift(left, right, [c for c in common if c not in (key or [])])
    return result


def _by_key(result: DataDiff, left: Any, right: Any, key: list[str], columns: list[str]) -> None:
    for side, frame in (("first", left), ("second", right)):
        dupes = int(frame.duplicated(key).sum())
        if dupes:
            raise InvalidInput(
                f"the key {key} does not identify a row of the {side} data version: {dupes} "
                "rows repeat a key; pick the column(s) that are unique per row"
            )
    merged = left.merge(right, on=key, how="outer", suffixes=("__a", "__b"), indicator=True)
    result.added = int((merged["_merge"] == "right_only").sum())
    result.removed = int((merged["_merge"] == "left_only").sum())
    both = merged[merged["_merge"] == "both"]
    differs = np.zeros(len(both), dtype=bool)
    for column in columns:
        x, y = both[f"{column}__a"], both[f"{column}__b"]
        column_differs = ~((x == y) | (x.isna() & y.isna())).to_numpy(dtype=bool)
        if column_differs.any():
            result.changed_columns[column] = int(column_differs.sum())
        differs |= column_differs
    result.changed = int(differs.sum())
    result.unchanged = len(both) - result.changed
    changed = both.loc[differs, key].head(CHANGED_EXAMPLES)
    result.changed_keys = [
        _plain(row[0]) if len(key) == 1 else [_plain(v) for v in row]
        for row in changed.itertuples(index=False)
    ]


def _by_row(result: DataDiff, left: Any, right: Any, columns: list[str]) -> None:
    """Without a key, rows are compared whole over the shared columns, as multisets."""
    import pandas as pd

    def counts(frame: Any) -> Any:
        if not columns:
            return pd.Series(dtype="int64")
        hashes = pd.util.hash_pandas_object(frame[columns], index=False)
        return hashes.value_counts()

    a, b = counts(left), counts(right)
    both = a.index.intersection(b.index)
    kept = int(np.minimum(a[both], b[both]).sum()) if len(both) else 0
    result.unchanged = kept
    result.removed = len(left) - kept
    result.added = len(right) - kept


def _drift(left: Any, right: Any, columns: list[str]) -> dict[str, Any]:
    """Per-column drift of `right` against `left`, for the columns a drift test can read."""
    usable = [
        c
        for c in columns
        if left[c].notna().any()
        and right[c].notna().any()
        and _family(left[c]) is not None
        and _family(left[c]) == _family(right[c])
    ]
    if not usable:
        return {}
    report = compare(_even(left[usable]), _even(right[usable]), columns=usable, workers=1)
    return {
        name: {
            "method": c.method, "statistic": c.statistic, "p_value": c.p_value,
            "effect": c.effect, "status": c.status, "drift": c.drift,
        }
        for name, c in report.columns.items()
    }  # fmt: skip


def _family(column: Any) -> str | None:
    """`numeric` or `categorical` for a column a drift test reads; None for times and the rest."""
    import pandas as pd

    kind = column.dtype
    if pd.api.types.is_bool_dtype(kind) or isinstance(kind, pd.CategoricalDtype):
        return "categorical"
    if pd.api.types.is_numeric_dtype(kind):
        return "numeric"
    if pd.api.types.is_string_dtype(kind) or pd.api.types.is_object_dtype(kind):
        return "categorical"
    return None


def _even(frame: Any) -> Any:
    if len(frame) <= DRIFT_ROWS:
        return frame
    step = len(frame) / DRIFT_ROWS
    return frame.iloc[[int(i * step) for i in range(DRIFT_ROWS)]]


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value

"""One text form for a category value, wherever values are compared as categories.

Logged labels, predicted classes and drift's category counts all compare values as text, so
`1`, `1.0` (an integer column that pandas upcast to float because one value was missing),
`np.int64(1)` and `"1"` must be one category, and `True` must not become `"True"` on one side
and `"true"` on the other.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

__all__ = ["category_text", "jsonable", "typed_label"]


def category_text(value: Any) -> str | None:
    """`value` as a category: None for missing (None, NaN); `true`/`false` for booleans;
    integral floats as integers (`1.0` -> `1`); numpy scalars as their Python values; any
    other value as `str(value)`."""
    if value is None:
        return None
    item = getattr(value, "item", None)
    if item is not None and not isinstance(value, str | bytes):
        value = item()  # numpy scalar -> Python scalar
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if value.is_integer():
            return str(int(value))
    return str(value)


def typed_label(value: Any, task: str, classes: list[Any] | None) -> tuple[Any, str | None]:
    """Ground truth as the model's output type: `(value to store, None)`, or `(None, what is
    wrong)`.

    A classifier's label must be one of its classes, compared as categories (`1`, `1.0` and
    `"1"` are class 1; `true`/`false` stand for 1/0 when the classes are 0 and 1), and is stored
    as that class. A regressor's label must be a finite number (a number as text is one); a
    boolean is not. Other tasks, or a classifier whose classes are unknown, take any label.
    """
    if task == "regression":
        if isinstance(value, bool):
            return None, "a regressor's label is a number, not true/false"
        try:
            number = float(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError):
            return None, f"{str(value)[:40]!r} is not a number; a regressor's label is a number"
        if not math.isfinite(number):
            return None, "a regressor's label is a finite number"
        return number, None
    if task not in ("binary", "multiclass") or not classes:
        return value, None
    by_text = {category_text(c): c for c in classes}
    text = category_text(value)
    if text in by_text:
        return by_text[text], None
    if isinstance(value, bool) and {"0", "1"} <= by_text.keys():
        return by_text["1" if value else "0"], None
    shown = ", ".join(repr(c) for c in list(by_text)[:20]) + (", ..." if len(by_text) > 20 else "")
    return None, f"{str(value)[:40]!r} is not one of the model's classes ({shown})"


def jsonable(value: Any) -> Any:
    """`value` as JSON can hold it, the one sanitiser for reports, records and payloads:
    mappings (keys as text) and sequences recursively, datetimes as ISO 8601, numpy scalars as
    Python numbers, NaN as None (unknown), infinities as +/-1e308 (they keep their order)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    item = getattr(value, "item", None)
    if item is not None and not isinstance(value, str | bytes) and getattr(value, "ndim", 0) == 0:
        return jsonable(item())
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return math.copysign(1e308, value)
    return value

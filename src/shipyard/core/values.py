"""One text form for a category value, wherever values are compared as categories.

Logged labels, predicted classes and drift's category counts all compare values as text, so
`1`, `1.0` (an integer column that pandas upcast to float because one value was missing),
`np.int64(1)` and `"1"` must be one category, and `True` must not become `"True"` on one side
and `"true"` on the other.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["category_text"]


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

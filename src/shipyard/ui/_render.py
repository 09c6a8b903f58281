"""Pages from templates: one Jinja2 environment, autoescaping on, so no text from a model, a
feature name or an alert can become markup; chart data travels as JSON islands (`tojson`
escapes what could end a script element) that `static/app.js` draws with uPlot."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from functools import cache
from typing import Any

import jinja2

__all__ = ["render"]


def fmt(value: Any, digits: int = 4) -> str:
    """A number as a reader wants it: `digits` significant digits, thousands grouped."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def pct(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{float(value) * 100:.{digits}f}%"


def when(value: Any) -> str:
    """A moment as `2026-11-28 14:03 UTC`."""
    if value is None or value == "":
        return "-"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return str(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return f"{value.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def plain_json(value: Any, indent: int | None = None) -> str:
    """JSON as text for a reader (the template escapes it like any text)."""
    return json.dumps(value, default=str, ensure_ascii=False, indent=indent)


def short(value: Any, size: int = 80) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= size else text[: size - 1] + "…"


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("shipyard.ui", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(fmt=fmt, pct=pct, when=when, short=short, plain_json=plain_json)
    return env


def render(template: str, **context: Any) -> str:
    return _environment().get_template(template).render(**context)

"""Durations as people write them in rules, windows and shipyard.yaml: `30s`, `30m`, `6h`, `7d`,
`2w`.

One parser for all of them (alert rules' `over 7d`, monitoring windows, retraining windows,
cool-downs and check intervals) and its inverse for display.
"""

from __future__ import annotations

import re
from datetime import timedelta

from shipyard.core.errors import InvalidInput

__all__ = ["MAX_DURATION", "duration_text", "parse_duration"]

MAX_DURATION = timedelta(days=3660)  # ten years: longer is a typo, and overflows date maths
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_SECONDS = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86_400, "weeks": 604_800}


def parse_duration(text: str, what: str = "duration") -> timedelta:
    """`30s`, `30m`, `1h`, `7d`, `2w` -> a timedelta of at most ten years; `what` names the value in
    the error (e.g. "window")."""
    match = _DURATION.match(text) if isinstance(text, str) and len(text) <= 16 else None
    if match is None or int(match.group(1)) <= 0:
        raise InvalidInput(
            f"{what} {str(text)[:40]!r} is not a duration; write e.g. 30m, 1h, 1d or 7d"
        )
    unit = _UNITS[match.group(2).lower()]
    count = int(match.group(1))
    if count * _SECONDS[unit] > MAX_DURATION.total_seconds():
        raise InvalidInput(f"{what} {text!r} is longer than ten years; choose a shorter one")
    return timedelta(**{unit: count})


def duration_text(length: timedelta) -> str:
    """The inverse of `parse_duration`: the largest unit that divides `length` (`7d`, `90m`),
    seconds when none does."""
    seconds = int(length.total_seconds())
    for unit, size in (("w", 604_800), ("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"

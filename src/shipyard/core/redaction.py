"""What callers other than admins may read: text and records with local paths reduced to the
last part of the path; URLs without their passwords."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["hide_paths", "redact_url"]

# an absolute local path inside text: /tmp/x/y, ~/data, file:///srv/a, C:\\data
_PATH_IN_TEXT = re.compile(r"(?:file://|(?<![\w.:/-]))(?:/|~/|[A-Za-z]:\\)[^\s'\"),;]+")


def hide_paths(value: Any) -> Any:
    """`value` with every local filesystem path reduced to its last part: where training data
    or the server's state lie is for admin keys (a path in a message, too)."""
    if isinstance(value, dict):
        return {k: hide_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [hide_paths(v) for v in value]
    if isinstance(value, str) and ("/" in value or "\\" in value):
        return _PATH_IN_TEXT.sub(_last_part, value)
    return value


_PASSWORD_IN_URL = re.compile(r"^([a-zA-Z][\w+.-]*://[^:/@]*:)[^/]*@")


def redact_url(url: str) -> str:
    """`url` with the password of its user part hidden (`postgresql://me:***@host/db`): a
    database or broker URL in a message, a log or a stored job never shows it."""
    return _PASSWORD_IN_URL.sub(r"\1***@", url)


_ROUTES = ("/v1", "/v2", "/docs", "/redoc", "/metrics", "/openapi")  # this API's own paths


def _last_part(match: re.Match[str]) -> str:
    if match.group(0).startswith(_ROUTES):
        return match.group(0)
    path = match.group(0).rstrip("/\\")
    return re.split(r"[/\\]", path)[-1] or "(path)"

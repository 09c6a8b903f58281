"""Structured logs: one JSON object per line, carrying the id of the request being served."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

__all__ = ["JsonFormatter", "configure_logging", "log_format_for", "request_id"]

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "shipyard_request_id", default=None
)
"""The id of the request this task serves (set by the server for each request)."""

# uvicorn adds `color_message` (the message with terminal colours) to its records
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "color_message",
}


def _context(record: logging.LogRecord) -> dict[str, Any]:
    """The request id and the `extra=` fields of a record."""
    found: dict[str, Any] = {}
    rid = request_id.get()
    if rid is not None:
        found["request_id"] = rid
    for key, value in record.__dict__.items():
        if key not in _STANDARD and not key.startswith("_"):
            found[key] = value
    return found


class JsonFormatter(logging.Formatter):
    """`{"ts": ..., "level": ..., "logger": ..., "msg": ..., "request_id": ..., ...extra}`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_context(record),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class _PeopleFormatter(logging.Formatter):
    """The message, then the request id and extra fields as `key=value` (for Rich and text)."""

    def format(self, record: logging.LogRecord) -> str:
        # uvicorn logs everything, "Started server process" too, as "uvicorn.error"
        record._source = "uvicorn" if record.name == "uvicorn.error" else record.name
        text = super().format(record)
        context = " ".join(f"{k}={v}" for k, v in _context(record).items())
        return f"{text}  {context}" if context else text


class _StartupFailure(logging.Filter):
    """Starlette reports a server that failed to start as the text of the traceback. When what
    failed is one of shipyard's own errors (a database it cannot reach, a setting it refuses),
    its message already says what is wrong and what to do, and the traceback adds nothing a
    person needs: the record keeps the message alone."""

    _ERROR = re.compile(r"^shipyard\.[\w.]+: (?P<message>.*)\Z", re.MULTILINE | re.DOTALL)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:  # every other record passes untouched, unformatted
            return True
        text = record.getMessage()
        if text.startswith("Traceback (most recent call last)"):
            found = self._ERROR.search(text)
            if found is not None:
                record.msg, record.args = f"cannot start: {found['message'].strip()}", ()
                record.exc_info = None
        return True


def log_format_for(fmt: str) -> str:
    """`auto` is `rich` when stderr is a terminal (a person reads it), `json` otherwise."""
    if fmt == "auto":
        return "rich" if sys.stderr.isatty() else "json"
    return fmt


def configure_logging(fmt: str = "auto", level: str = "info") -> None:
    """Send shipyard's and uvicorn's logs to stderr: JSON lines, Rich, or plain text.

    `auto` (the default) writes Rich's coloured, aligned lines on a terminal and JSON lines
    (one object per line, for a log collector) when stderr is a file or a pipe.
    """
    handler: logging.Handler
    fmt = log_format_for(fmt)
    if fmt == "rich":
        from rich.console import Console
        from rich.logging import RichHandler

        handler = RichHandler(console=Console(stderr=True), show_path=False)
        handler.setFormatter(_PeopleFormatter("%(_source)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            JsonFormatter()
            if fmt == "json"
            else _PeopleFormatter("%(asctime)s %(levelname)s %(_source)s: %(message)s")
        )
    handler.addFilter(_StartupFailure())
    for name in ("shipyard", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.propagate = False
        logger.setLevel(level.upper())
    # uvicorn writes an access line per request whenever its logger has a handler; shipyard
    # has its own (SHIPYARD_ACCESS_LOG, off by default: the prediction log records every call)
    access = logging.getLogger("uvicorn.access")
    access.handlers = []
    access.propagate = False

"""Prediction and label logs: a write-ahead spool on the request path, Parquet segments in the
artifact store, DuckDB to read them."""

from __future__ import annotations

from shipyard.logstore._feedback import (
    FeedbackResult,
    ResolvedFeedback,
    horizon_seconds,
    parse_feedback,
    record_feedback,
    resolve_feedback,
)
from shipyard.logstore._reader import LogReader, id_time
from shipyard.logstore._segments import TypesOf, label_text
from shipyard.logstore._writer import LogWriter

__all__ = [
    "FeedbackResult",
    "LogReader",
    "LogWriter",
    "ResolvedFeedback",
    "TypesOf",
    "horizon_seconds",
    "id_time",
    "label_text",
    "parse_feedback",
    "record_feedback",
    "resolve_feedback",
]

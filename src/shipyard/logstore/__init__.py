"""Prediction and label logs: a write-ahead spool on the request path, Parquet segments in the
artifact store, DuckDB to read them."""

from __future__ import annotations

from shipyard.logstore._feedback import (
    FeedbackResult,
    ResolvedFeedback,
    Uploaded,
    horizon_seconds,
    label_changes,
    parse_feedback,
    record_feedback,
    resolve_feedback,
    type_labels,
)
from shipyard.logstore._reader import LogReader, id_time
from shipyard.logstore._segments import TypesOf, label_text, routing_key_hash, write_block
from shipyard.logstore._writer import LogWriter

__all__ = [
    "FeedbackResult",
    "LogReader",
    "LogWriter",
    "ResolvedFeedback",
    "TypesOf",
    "Uploaded",
    "horizon_seconds",
    "id_time",
    "label_changes",
    "label_text",
    "parse_feedback",
    "record_feedback",
    "resolve_feedback",
    "routing_key_hash",
    "type_labels",
    "write_block",
]

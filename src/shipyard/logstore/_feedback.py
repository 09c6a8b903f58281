"""Ground truth that arrives after the prediction: check the ids, then log the labels."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from shipyard.core.errors import MalformedRequest
from shipyard.logstore._reader import LogReader, id_time
from shipyard.logstore._writer import LogWriter

__all__ = ["FeedbackResult", "parse_feedback", "record_feedback"]

MAX_ITEMS = 10_000


@dataclass
class FeedbackResult:
    """What happened to each label: stored (verified or pending) or refused with a reason."""

    accepted: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    unknown: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "accepted": len(self.accepted) + len(self.pending),
            "pending": self.pending,
            "unknown": self.unknown,
        }


def parse_feedback(body: Any) -> list[tuple[str, Any]]:
    """`{"prediction_id", "label"}`, a list of them, or `{"feedback": [...]}` -> pairs."""
    items = (
        body.get("feedback", body)
        if isinstance(body, dict) and "prediction_id" not in body
        else body
    )
    if isinstance(items, dict):
        items = [items]
    if not isinstance(items, list) or not items:
        raise MalformedRequest(
            'send {"prediction_id": "...", "label": ...}, a list of those, or {"feedback": [...]}'
        )
    if len(items) > MAX_ITEMS:
        raise MalformedRequest(
            f"{len(items)} labels in one request is over the limit of {MAX_ITEMS}; split them"
        )
    pairs = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "prediction_id" not in item or "label" not in item:
            raise MalformedRequest(f"feedback[{i}] needs both 'prediction_id' and 'label'")
        pid, label = item["prediction_id"], item["label"]
        if not isinstance(pid, str):
            raise MalformedRequest(f"feedback[{i}].prediction_id must be a string")
        if label is None or isinstance(label, list | dict):
            raise MalformedRequest(f"feedback[{i}].label must be a number, string or boolean")
        pairs.append((pid, label))
    return pairs


def record_feedback(
    pairs: list[tuple[str, Any]],
    writer: LogWriter,
    reader: LogReader,
    *,
    key_id: str | None = None,
    horizon_seconds: float = 30.0,
) -> FeedbackResult:
    """Log labels for ids that are predictions; report the others with the reason.

    An id is verified against this process's unwritten log and the Parquet logs. A well-formed
    id younger than `horizon_seconds` may still sit in another replica's spool: its label is
    stored as pending, and the monitor joins it once the prediction lands.
    """
    result = FeedbackResult()
    now = datetime.now(UTC)
    local = writer.pending_ids()
    candidates = [pid for pid, _ in pairs if pid not in local]
    found = reader.known_ids(candidates) if candidates else set()
    keep_ids: list[str] = []
    keep_labels: list[Any] = []
    for pid, label in pairs:
        made = id_time(pid)
        if made is None:
            result.unknown.append(
                {"prediction_id": pid, "reason": "not a shipyard prediction id (32 hex digits)"}
            )
            continue
        if pid in local or pid in found:
            result.accepted.append(pid)
        elif made > now + timedelta(seconds=5):
            result.unknown.append({"prediction_id": pid, "reason": "the id is from the future"})
            continue
        elif (now - made).total_seconds() <= horizon_seconds:
            result.pending.append(pid)
        else:
            result.unknown.append(
                {"prediction_id": pid, "reason": "no logged prediction has this id"}
            )
            continue
        keep_ids.append(pid)
        keep_labels.append(label)
    if keep_ids:
        writer.log_labels(keep_ids, keep_labels, key_id=key_id, at=time.time())
    return result

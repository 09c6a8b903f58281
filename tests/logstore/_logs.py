"""Small builders for prediction logs and ids."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from shipyard.logstore import LogReader, LogWriter

NOON = datetime(2024, 5, 1, 12, 0, tzinfo=UTC).timestamp()
DAY = 86_400.0


def made_at(ts: float) -> str:
    """A well-formed prediction id made at `ts` (seconds since the epoch)."""
    return f"{round(ts * 1000):012x}{os.urandom(10).hex()}"


def log_scores(
    writer: LogWriter,
    ids: list[str],
    *,
    model: str = "fraud",
    version: int = 1,
    at: float | None = None,
    **inputs: Any,
) -> None:
    """Log binary predictions for `ids` (inputs default to one `amount` column)."""
    columns = inputs or {"amount": [float(i) for i in range(len(ids))]}
    writer.log_predictions(
        model=model,
        version=version,
        variant="primary",
        ids=ids,
        inputs=columns,
        outputs={"score": [0.5] * len(ids), "label": [1] * len(ids)},
        latency_ms=1.5,
        at=at,
    )


def logged_ids(reader: LogReader, model: str | None = None) -> list[str]:
    table: pa.Table = reader.predictions(model)
    if table.num_rows == 0:
        return []
    return sorted(table.column("prediction_id").to_pylist())

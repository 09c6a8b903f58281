"""What a model costs to serve, measured the way serving runs it: file size, latency of one
row, latency per row in batches of 1,000, and throughput."""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from shipyard.core import Columns

__all__ = ["Figures", "measure"]

BATCH_ROWS = 1000


@dataclass
class Figures:
    """A model's size, speed and holdout metrics."""

    size_bytes: int
    latency_ms_1_row: float
    latency_ms_per_row_1000: float
    throughput_rows_per_s: float
    metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rows(columns: Columns, start: int, count: int) -> Columns:
    return {name: values[start : start + count] for name, values in columns.items()}


def _tiled(columns: Columns, rows: int) -> Columns:
    return {name: np.resize(np.asarray(values), rows) for name, values in columns.items()}


def measure(
    predictor: Any, columns: Columns, *, budget_s: float = 1.5
) -> tuple[float, float, float]:
    """(p50 ms for one row, p50 ms per row in batches of 1,000, rows per second in such
    batches) of `predictor` on rows of `columns`, within about `budget_s` seconds each."""
    n = len(next(iter(columns.values())))
    singles = [_rows(columns, i % n, 1) for i in range(min(n, 64))]
    for row in singles[:10]:
        predictor.predict(row)
    timings: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(timings) < 50 or (len(timings) < 2000 and time.perf_counter() < deadline):
        row = singles[len(timings) % len(singles)]
        started = time.perf_counter()
        predictor.predict(row)
        timings.append(time.perf_counter() - started)
    one = statistics.median(timings) * 1e3
    batch = _tiled(columns, BATCH_ROWS)
    predictor.predict(batch)
    batches: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(batches) < 3 or (len(batches) < 50 and time.perf_counter() < deadline):
        started = time.perf_counter()
        predictor.predict(batch)
        batches.append(time.perf_counter() - started)
    per_batch = statistics.median(batches)
    return one, per_batch * 1e3 / BATCH_ROWS, BATCH_ROWS / per_batch

"""Builders for monitoring tests: prediction ids made at a given time, and a log writer that
the test flushes by hand."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shipyard.logstore import LogWriter
from shipyard.serving import PredictionService
from shipyard.store import ArtifactStore


def made_at(ts: float) -> str:
    """A well-formed prediction id made at `ts` (seconds since the epoch)."""
    return f"{round(ts * 1000):012x}{os.urandom(10).hex()}"


def hand_flushed_writer(tmp_path: Path) -> tuple[LogWriter, ArtifactStore]:
    """A writer that is never started (the test calls `flush()`), over a local artifact root."""
    store = ArtifactStore(str(tmp_path / "artifacts"))
    return LogWriter(tmp_path / "spool", store, fsync_seconds=0), store


def log_scored(
    service: PredictionService,
    writer: LogWriter,
    name: str,
    frame: pd.DataFrame,
    truth: np.ndarray,
    start: float,
    *,
    version: int = 1,
    hours: int = 12,
) -> tuple[dict[str, list[Any]], list[str]]:
    """Score `frame` with `name:version` over `hours` hours from `start` (seconds since the
    epoch), log the predictions at those times and `truth` a minute after each; returns the
    logged outputs (value, label, probabilities) and the prediction ids, in row order."""
    served = service.load(name, version)
    outputs: dict[str, list[Any]] = {"value": [], "label": [], "probabilities": []}
    ids: list[str] = []
    for hour, index in enumerate(np.array_split(np.arange(len(frame)), hours)):
        batch = served.signature.validate_frame(frame.iloc[index])
        result = service.score_now(served, batch, len(index))
        at = start + hour * 3600
        writer.log_predictions(
            model=name, version=version, variant="primary", ids=result.ids, inputs=batch,
            outputs=result.outputs(), latency_ms=result.latency_ms, at=at,
        )  # fmt: skip
        writer.log_labels(result.ids, truth[index].tolist(), at=at + 60)
        answered = result.outputs()
        for key in outputs:
            outputs[key].extend(list(answered.get(key, [])))
        ids.extend(result.ids)
    return outputs, ids

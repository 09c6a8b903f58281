"""Builders for monitoring tests: prediction ids made at a given time, and a log writer that
the test flushes by hand."""

from __future__ import annotations

import os
from pathlib import Path

from shipyard.logstore import LogWriter
from shipyard.store import ArtifactStore


def made_at(ts: float) -> str:
    """A well-formed prediction id made at `ts` (seconds since the epoch)."""
    return f"{round(ts * 1000):012x}{os.urandom(10).hex()}"


def hand_flushed_writer(tmp_path: Path) -> tuple[LogWriter, ArtifactStore]:
    """A writer that is never started (the test calls `flush()`), over a local artifact root."""
    store = ArtifactStore(str(tmp_path / "artifacts"))
    return LogWriter(tmp_path / "spool", store, fsync_seconds=0), store

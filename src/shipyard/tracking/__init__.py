"""Experiment tracking: runs with params, metrics, data versions, code version, artifacts."""

from __future__ import annotations

from shipyard.tracking._datasets import DataVersion, DataVersions
from shipyard.tracking._run import (
    Run,
    RunRecord,
    Tracker,
    active_run,
    environment,
    git_state,
    seed_everything,
)

__all__ = [
    "DataVersion",
    "DataVersions",
    "Run",
    "RunRecord",
    "Tracker",
    "active_run",
    "environment",
    "git_state",
    "seed_everything",
]

"""Experiment tracking: runs with params, metrics, data fingerprints, code version, artifacts."""

from __future__ import annotations

from shipyard.tracking._run import Run, RunRecord, Tracker, active_run, git_state

__all__ = ["Run", "RunRecord", "Tracker", "active_run", "git_state"]

"""A retraining pipeline as it is stored and shown: its trigger, status and the steps it took."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

# pydantic (the API's response models) reads these; before Python 3.12 it needs this TypedDict
from typing_extensions import TypedDict

__all__ = ["ACTIVE", "PipelineRecord", "PipelineStatus", "PipelineStep", "Trigger"]

PipelineStatus = Literal[
    "training",  # steps 1 to 4 under way
    "registered",  # a candidate without a canary (asked for none, or no champion to beside)
    "canary",  # serving a share of traffic; `decide` looks at its evidence
    "awaiting_approval",  # the evidence says promote; a person says go
    "promoted",
    "rolled_back",
    "rejected",  # a validation gate refused the candidate
    "failed",  # a step raised
]
ACTIVE: tuple[PipelineStatus, ...] = ("training", "canary", "awaiting_approval")
"""The statuses of a pipeline still under way: one per model at a time."""


class Trigger(TypedDict, total=False):
    """Why a pipeline started: `kind` is manual, schedule, alert or labels; the worker adds
    every reason that was due and the alerts it answers (each alert triggers one retrain)."""

    kind: str
    by: str
    reasons: list[dict[str, Any]]
    alerts: list[int]


class PipelineStep(TypedDict):
    """One step (data, train, validate, register, canary, decide, promote, rollback, failed):
    its outcome, when (ISO 8601), and the evidence it rests on, as JSON (the gates and metrics
    of validate, the arms and the sequential test of decide, ...)."""

    step: str
    status: str
    at: str
    evidence: dict[str, Any]


class PipelineRecord(TypedDict):
    id: int
    model: str
    status: PipelineStatus
    trigger: Trigger
    champion_version: int | None
    candidate_version: int | None
    run_id: str | None
    steps: list[PipelineStep]
    created_at: datetime | None
    updated_at: datetime | None

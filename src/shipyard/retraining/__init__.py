"""The closed loop: retrain a model that degrades, validate it, canary it, and promote or roll
it back on live evidence, every step recorded."""

from __future__ import annotations

from shipyard.retraining._decide import ArmEvidence, Decision, Outcomes, decide
from shipyard.retraining._gates import GATE_METRICS, GateResult, holdout_metrics, parse_gate
from shipyard.retraining._pipeline import (
    FederatedOutcome,
    FederatedTrainer,
    Pipeline,
    decide_by_person,
    pending_approvals,
    pipeline_history,
)
from shipyard.retraining._policies import due_triggers, may_retrain
from shipyard.retraining._records import PipelineRecord, PipelineStep, Trigger
from shipyard.retraining._spec import (
    FEDERATED_METRICS,
    DataSpec,
    FederatedSpec,
    HoldoutSpec,
    PolicySpec,
    RetrainSpec,
    RolloutSpec,
    load_specs,
    parse_duration,
    training_function,
)

__all__ = [
    "FEDERATED_METRICS",
    "GATE_METRICS",
    "ArmEvidence",
    "DataSpec",
    "Decision",
    "FederatedOutcome",
    "FederatedSpec",
    "FederatedTrainer",
    "GateResult",
    "HoldoutSpec",
    "Outcomes",
    "Pipeline",
    "PipelineRecord",
    "PipelineStep",
    "PolicySpec",
    "RetrainSpec",
    "RolloutSpec",
    "Trigger",
    "decide",
    "decide_by_person",
    "due_triggers",
    "holdout_metrics",
    "load_specs",
    "may_retrain",
    "parse_duration",
    "parse_gate",
    "pending_approvals",
    "pipeline_history",
    "training_function",
]

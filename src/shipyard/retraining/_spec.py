"""How a model is retrained, declared next to the code: `shipyard.yaml` or `[tool.shipyard]`.

models:
  fraud-detector:
    train: fraud_training:train        # module:function(frame, params) -> fitted model
    params: {C: 0.5}
    data:
      source: logs                     # logs | parquet | csv | sql
      window: 28d                      # logs: predictions joined with their labels
      label: is_fraud
    holdout: {split: time, fraction: 0.2}
    gates: ["auc >= 0.75", "auc >= champion - 0.005", "latency_per_row_ms <= 2"]
    rollout: {canary: 5, routing_field: customer_id, min_labels: 500, confidence: 0.95}
    policies:
      - schedule: "0 3 * * 1"          # cron: Mondays at 03:00 UTC
      - on_alert: "accuracy < 0.90 over 7d with >= 500 labels"
      - every_labels: 5000
    cooldown: 6h
    max_per_day: 2
"""

from __future__ import annotations

import importlib
import sys
import tomllib
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shipyard.core.errors import ConfigurationError, InvalidInput

__all__ = [
    "DataSpec",
    "HoldoutSpec",
    "PolicySpec",
    "RetrainSpec",
    "RolloutSpec",
    "load_specs",
    "parse_duration",
]

_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    """`30m`, `6h`, `28d`, `2w` -> timedelta."""
    text = str(text).strip()
    if len(text) < 2 or not text[:-1].isdigit() or text[-1] not in _UNITS or int(text[:-1]) <= 0:
        raise InvalidInput(f"duration {text!r} is not one; write e.g. 30m, 6h, 28d or 2w")
    return timedelta(**{_UNITS[text[-1]]: int(text[:-1])})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSpec(_Strict):
    """Where a training set comes from."""

    source: Literal["logs", "parquet", "csv", "sql"] = "logs"
    path: str | None = None
    query: str | None = None
    url: str | None = None
    window: str = "28d"
    label: str = "label"
    time_column: str | None = "timestamp"
    features: list[str] | None = None

    @model_validator(mode="after")
    def _needs(self) -> DataSpec:
        if self.source in ("parquet", "csv") and not self.path:
            raise ValueError(f"data.source {self.source} needs data.path")
        if self.source == "sql" and not (self.query and self.url):
            raise ValueError("data.source sql needs data.query and data.url (a SQLAlchemy URL)")
        parse_duration(self.window)
        return self


class HoldoutSpec(_Strict):
    split: Literal["time", "random"] = "time"
    fraction: float = Field(default=0.2, gt=0, lt=1)
    seed: int = 0


class RolloutSpec(_Strict):
    """How a validated candidate reaches all traffic."""

    canary: float = Field(default=5.0, gt=0, lt=100)
    routing_field: str | None = None
    min_labels: int = Field(default=500, ge=10)
    max_labels: int = Field(default=20_000, ge=10)
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    margin: float = Field(default=0.005, ge=0, lt=0.5)
    max_error_rate: float = Field(default=0.02, ge=0, le=1)
    max_latency_p95_ms: float = Field(default=250.0, gt=0)
    approval: Literal["auto", "manual"] = "auto"
    check_every: str = "5m"

    @field_validator("check_every")
    @classmethod
    def _every(cls, value: str) -> str:
        parse_duration(value)
        return value


class PolicySpec(_Strict):
    """One reason to retrain: a schedule, an alert, or enough new labels."""

    schedule: str | None = None
    on_alert: str | None = None
    every_labels: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one(self) -> PolicySpec:
        chosen = [
            k for k in ("schedule", "on_alert", "every_labels") if getattr(self, k) is not None
        ]
        if len(chosen) != 1:
            raise ValueError("each policy is exactly one of schedule, on_alert or every_labels")
        if self.schedule is not None:
            from croniter import croniter

            if not croniter.is_valid(self.schedule):
                raise ValueError(
                    f"schedule {self.schedule!r} is not a cron expression (e.g. '0 3 * * 1')"
                )
        return self

    @property
    def kind(self) -> str:
        return "schedule" if self.schedule else "alert" if self.on_alert else "labels"


class RetrainSpec(_Strict):
    """Everything the closed loop needs to know about one model."""

    name: str
    train: str
    params: dict[str, Any] = Field(default_factory=dict)
    data: DataSpec = Field(default_factory=DataSpec)
    holdout: HoldoutSpec = Field(default_factory=HoldoutSpec)
    gates: list[str] = Field(default_factory=list)
    rollout: RolloutSpec = Field(default_factory=RolloutSpec)
    policies: list[PolicySpec] = Field(default_factory=list)
    cooldown: str = "6h"
    max_per_day: int = Field(default=2, ge=1)
    threshold_share: float | None = Field(default=None, gt=0, lt=1)

    @field_validator("train")
    @classmethod
    def _entrypoint(cls, value: str) -> str:
        module, sep, function = value.partition(":")
        if not sep or not module or not function:
            raise ValueError(f"train must look like module:function, got {value!r}")
        return value

    @field_validator("cooldown")
    @classmethod
    def _cooldown(cls, value: str) -> str:
        parse_duration(value)
        return value

    @field_validator("gates")
    @classmethod
    def _gates(cls, value: list[str]) -> list[str]:
        from shipyard.retraining._gates import parse_gate

        for gate in value:
            parse_gate(gate)
        return value

    def entrypoint(self, code_dir: Path | None = None) -> Callable[..., Any]:
        """The training function, imported (from `code_dir` first, when given)."""
        module_name, _, function = self.train.partition(":")
        if code_dir is not None and str(code_dir) not in sys.path:
            sys.path.insert(0, str(code_dir))
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise ConfigurationError(
                f"cannot import the training module {module_name!r} of {self.name} ({error}); run from the "
                "folder that holds it or put it on PYTHONPATH"
            ) from None
        target = getattr(module, function, None)
        if not callable(target):
            raise ConfigurationError(
                f"{module_name} has no function {function!r} (train: {self.train})"
            )
        return target  # type: ignore[no-any-return]


def load_specs(path: Path | None = None) -> dict[str, RetrainSpec]:
    """The retraining specs of `path` (a shipyard.yaml or pyproject.toml), or of the first of
    `./shipyard.yaml`, `./pyproject.toml` ([tool.shipyard]) that exists."""
    candidates = (
        [path]
        if path is not None
        else [Path("shipyard.yaml"), Path("shipyard.yml"), Path("pyproject.toml")]
    )
    for candidate in candidates:
        if candidate is None or not candidate.exists():
            continue
        if candidate.suffix == ".toml":
            raw = tomllib.loads(candidate.read_text()).get("tool", {}).get("shipyard")
            if raw is None:
                continue
        else:
            raw = yaml.safe_load(candidate.read_text()) or {}
        return _specs(raw, candidate)
    if path is not None:
        raise ConfigurationError(f"{path} does not exist")
    return {}


def _specs(raw: Any, source: Path) -> dict[str, RetrainSpec]:
    models = raw.get("models") if isinstance(raw, dict) else None
    if not isinstance(models, dict):
        raise ConfigurationError(
            f"{source} has no 'models' mapping; see `shipyard pipeline --help` for the layout"
        )
    specs = {}
    for name, body in models.items():
        try:
            specs[name] = RetrainSpec(name=name, **(body or {}))
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()
            )
            raise ConfigurationError(f"{source}: model {name!r}: {problems}") from None
        except InvalidInput as error:
            raise ConfigurationError(f"{source}: model {name!r}: {error.message}") from None
    return specs

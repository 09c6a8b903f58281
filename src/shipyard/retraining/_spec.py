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

  readmission:                         # trained across hospitals that keep their rows
    federated: {address: "0.0.0.0:9092", rounds: 10, min_sites: 3, secure_aggregation: true}
    gates: ["auc >= 0.8", "auc >= champion - 0.01"]    # scored on the sites' holdouts
    policies: [{schedule: "0 2 1 * *"}]
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shipyard.core.durations import parse_duration
from shipyard.core.errors import ConfigurationError, InvalidInput, UserCodeFailed
from shipyard.core.project import read_project_file
from shipyard.monitoring import FairnessSpec

__all__ = [
    "FEDERATED_METRICS",
    "DataSpec",
    "FederatedSpec",
    "HoldoutSpec",
    "PolicySpec",
    "RetrainSpec",
    "RolloutSpec",
    "load_specs",
    "parse_duration",
    "training_function",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSpec(_Strict):
    """Where a training set comes from."""

    source: Literal["logs", "parquet", "csv", "sql", "features"] = Field(
        default="logs",
        description="`logs`: the model's logged predictions joined with the labels sent back "
        "(`/v1/feedback`); `parquet` / `csv`: a file (`path`); `sql`: a query (`query`, `url`); "
        "`features`: entity rows (`entities`) with point-in-time features from the feature "
        "store (`features` as view:feature)",
    )
    entities: str | None = Field(
        default=None,
        description="Parquet or CSV of entity rows (join keys, an event time, the label and "
        "request-time fields) for source `features`; relative to the folder of shipyard.yaml",
    )
    path: str | None = Field(
        default=None,
        description="the Parquet or CSV file; a relative path is read from the folder of "
        "shipyard.yaml",
    )
    query: str | None = Field(default=None, description="the SQL query (source `sql`)")
    url: str | None = Field(
        default=None,
        description="SQLAlchemy URL the query runs on (source `sql`), e.g. "
        "`postgresql+psycopg://user@host/db`",
    )
    window: str = Field(
        default="28d", description="how far back logged predictions are used (source `logs`)"
    )
    label: str = Field(default="label", description="the column with the true outcome")
    time_column: str | None = Field(
        default="timestamp",
        description="the column that orders rows for a time holdout (source `logs`: the "
        "prediction time); null for none",
    )
    features: list[str] | None = Field(
        default=None,
        description="the columns the model takes; default the serving version's signature. "
        "With source `features`, `view:feature` names a feature-store feature and a plain name "
        "a column of the entity rows",
    )

    key: list[str] | None = Field(
        default=None,
        description="the column(s) that identify a row (e.g. `[transaction_id]`), so `shipyard "
        "data diff` tells rows added, removed and changed between two training sets",
    )

    @model_validator(mode="after")
    def _needs(self) -> DataSpec:
        if self.source in ("parquet", "csv") and not self.path:
            raise ValueError(f"data.source {self.source} needs data.path")
        if self.source == "sql" and not (self.query and self.url):
            raise ValueError("data.source sql needs data.query and data.url (a SQLAlchemy URL)")
        if self.source == "features" and not (
            self.entities and self.features and any(":" in f for f in self.features)
        ):
            raise ValueError(
                "data.source features needs data.entities (a file of entity rows) and "
                "data.features naming at least one view:feature"
            )
        parse_duration(self.window)
        return self


class HoldoutSpec(_Strict):
    """The rows kept out of training to validate the candidate beside the champion."""

    split: Literal["time", "random"] = Field(
        default="time",
        description="`time`: the latest rows by `data.time_column`; `random`: a seeded shuffle",
    )
    fraction: float = Field(default=0.2, gt=0, lt=1, description="share of rows held out")
    seed: int = Field(default=0, description="seed of the random split")


class RolloutSpec(_Strict):
    """How a validated candidate reaches all traffic."""

    canary: float = Field(
        default=5.0, gt=0, lt=100, description="percent of traffic the candidate gets first"
    )
    routing_field: str | None = Field(
        default=None,
        description="request field (or routing key) that keeps a caller on one variant",
    )
    min_labels: int = Field(
        default=500, ge=10, description="labelled predictions each arm needs before a decision"
    )
    max_labels: int = Field(
        default=20_000,
        ge=10,
        description="labels per arm of the sequential test's planned maximum: it ends when its "
        "information equals that of this many labels on each arm (a larger champion arm gets "
        "there sooner)",
    )
    confidence: float = Field(
        default=0.95, gt=0.5, lt=1, description="confidence of the promote / roll-back test"
    )
    margin: float = Field(
        default=0.005,
        ge=0,
        lt=0.5,
        description="how much worse the candidate may be and still be promoted: accuracy points "
        "for a classifier; for a regressor a share of the champion's mean absolute error "
        "(0.05: at most 5% larger)",
    )
    max_error_rate: float = Field(
        default=0.02, ge=0, le=1, description="canary error share that rolls it back at once"
    )
    max_latency_p95_ms: float = Field(
        default=250.0, gt=0, description="canary p95 latency that rolls it back at once"
    )
    min_requests: int = Field(
        default=20,
        ge=1,
        description="canary predictions and failed requests before its error rate or latency "
        "can roll it back (one slow or failed request is not a trend)",
    )
    approval: Literal["auto", "manual"] = Field(
        default="auto",
        description="`manual`: a promotion waits for `shipyard approve NAME VERSION` or Approve "
        "on the dashboard (`shipyard reject NAME VERSION` rolls it back)",
    )
    check_every: str = Field(default="5m", description="how often the worker checks the canary")

    @field_validator("check_every")
    @classmethod
    def _every(cls, value: str) -> str:
        parse_duration(value)
        return value


FEDERATED_METRICS = frozenset({"accuracy", "auc", "log_loss"})  # what the sites report


class FederatedSpec(_Strict):
    """Each retrain is a new federated run: the sites (`shipyard federated site --stay`) train
    on their own rows and score the candidate, and the champion beside it, on their holdouts."""

    address: str = Field(default="0.0.0.0:9092", description="HOST:PORT the sites connect to")
    rounds: int = Field(default=10, ge=1, le=1000, description="training rounds")
    min_sites: int = Field(default=3, ge=1, le=10_000, description="sites every round waits for")
    strategy: Literal["fedavg", "fedprox"] = Field(
        default="fedavg", description="fedavg or fedprox"
    )
    mu: float = Field(default=0.1, ge=0, description="FedProx's proximal term")
    model: str = Field(
        default="logistic", description="logistic, or mlp:64,32 (a PyTorch network's hidden widths)"
    )
    local_steps: int = Field(
        default=20, ge=1, le=10_000, description="training iterations per site per round"
    )
    secure_aggregation: bool = Field(
        default=False, description="Flower's SecAgg+: the server sees only the sum of the updates"
    )
    secure_clip: float = Field(
        default=16.0, gt=0, description="SecAgg+ quantises each update coordinate within +-this"
    )
    dp_noise: float | None = Field(
        default=None, gt=0, description="differential privacy: Gaussian noise times the clip"
    )
    dp_clip: float = Field(default=1.0, gt=0, description="L2 norm each update is clipped to")
    dp_delta: float = Field(default=1e-5, gt=0, lt=1, description="delta of (epsilon, delta)")
    wait: str = Field(default="10m", description="how long to wait for min_sites to connect")
    key_file: str | None = Field(
        default=None,
        description="the federation's shared key, which the server and every site prove they "
        "hold (the sites' --key-file); relative to the folder of shipyard.yaml",
    )
    tls_cert: str | None = Field(
        default=None, description="the server's TLS certificate (PEM); with tls_key, over TLS"
    )
    tls_key: str | None = Field(default=None, description="its private key (PEM)")
    tls_ca: str | None = Field(default=None, description="the CA that signed it (PEM)")

    @model_validator(mode="after")
    def _tls(self) -> FederatedSpec:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TLS needs both tls_cert and tls_key")
        return self

    @field_validator("wait")
    @classmethod
    def _wait(cls, value: str) -> str:
        parse_duration(value)
        return value


class PolicySpec(_Strict):
    """One reason to retrain: a schedule, an alert, or enough new labels."""

    schedule: str | None = Field(
        default=None, description="cron expression in UTC, e.g. `0 3 * * 1` (Mondays 03:00)"
    )
    on_alert: str | None = Field(
        default=None,
        description="an alert rule; its firing starts a retrain, e.g. `accuracy < 0.90 over 7d "
        "with >= 500 labels`",
    )
    every_labels: int | None = Field(
        default=None, gt=0, description="retrain after this many new labels"
    )

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

    name: str = Field(description="the model's name: the key under `models:`")
    train: str | None = Field(
        default=None,
        description="`module:function` that trains: called as `function(frame, params)` with "
        "the training rows (a pandas DataFrame with the data's columns, at least "
        "`data.features` and `data.label`, plus the prediction time for `logs`; the holdout "
        "removed) and `params`, it returns the fitted model (anything `shipyard models "
        "register` takes); the module is imported from the folder of shipyard.yaml first",
    )
    federated: FederatedSpec | None = Field(
        default=None,
        description="train across sites that keep their rows instead (then no `train`, `data`, "
        "`holdout` or `threshold_share`: the sites hold the rows and their holdouts)",
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="passed to the training function; recorded on the run"
    )
    seed: int = Field(
        default=0,
        ge=0,
        le=2**32 - 1,
        description="Python's, numpy's and PyTorch's global random generators start from it "
        "before training, and it is recorded on the run, so `shipyard reproduce` trains the "
        "same way",
    )
    data: DataSpec = Field(
        default_factory=DataSpec, description="where the training rows come from"
    )
    holdout: HoldoutSpec = Field(
        default_factory=HoldoutSpec, description="the rows kept back for validation"
    )
    gates: list[str] = Field(
        default_factory=list,
        description="conditions the candidate must meet on the holdout, e.g. `auc >= 0.75`, "
        "`accuracy >= champion - 0.005`, `latency_per_row_ms <= 2`",
    )
    rollout: RolloutSpec = Field(
        default_factory=RolloutSpec, description="how a candidate that passed reaches all traffic"
    )
    policies: list[PolicySpec] = Field(
        default_factory=list,
        description="when the worker retrains by itself; each item has exactly one key",
    )
    cooldown: str = Field(default="6h", description="least time between two automatic retrains")
    max_per_day: int = Field(default=2, ge=1, description="most automatic retrains in 24 hours")
    fairness: FairnessSpec | None = Field(
        default=None,
        description="sensitive attributes whose groups' outcomes are compared (`attributes`: a "
        "column, or `{name, column, edges}` bands of a numeric one; `min_group_rows`): per-group "
        "metrics in monitoring and the model card, and gates such as "
        "`fairness_gap(customer_age_band) <= 0.05`",
    )
    threshold_share: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="a new model's decision threshold flags this share of training rows; "
        "default: the champion's threshold",
    )

    @field_validator("train")
    @classmethod
    def _entrypoint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        module, sep, function = value.partition(":")
        if not sep or not module or not function:
            raise ValueError(f"train must look like module:function, got {value!r}")
        return value

    @model_validator(mode="after")
    def _how(self) -> RetrainSpec:
        if (self.train is None) == (self.federated is None):
            raise ValueError("say how the model trains: train (module:function) or federated")
        from shipyard.retraining._gates import parse_gate

        declared = {a.name for a in self.fairness.attributes} if self.fairness else set()
        for gate in self.gates:
            attribute = parse_gate(gate).attribute
            if attribute is not None and attribute not in declared:
                raise ValueError(
                    f"gate {gate!r}: declare {attribute} under fairness.attributes (a column of "
                    "the training data, or bands of one)"
                )
        if self.federated is not None:
            local = sorted({"data", "holdout", "threshold_share", "params"} & self.model_fields_set)
            if local:
                raise ValueError(
                    f"a federated model's rows stay at the sites: drop {', '.join(local)} (each "
                    "site holds out --holdout of its rows and scores the candidate there)"
                )
            for gate in self.gates:
                if parse_gate(gate).metric not in FEDERATED_METRICS:
                    raise ValueError(
                        f"gate {gate!r}: the sites report {', '.join(sorted(FEDERATED_METRICS))}"
                    )
        return self

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
        """The training function, imported (from `code_dir` first, when given).

        A module in `code_dir` is loaded afresh from its file each time: a worker that runs
        for days trains with the code as it is now, and two specs whose modules share a name
        in different folders each get their own.
        """
        if self.train is None:
            raise ConfigurationError(
                f"{self.name} is trained federated; it has no training function"
            )
        return training_function(self.train, code_dir, self.name)


def training_function(target: str, code_dir: Path | None, model: str) -> Callable[..., Any]:
    """The function `target` (`module:function`) names, its module imported from `code_dir`
    first (afresh each time; see `RetrainSpec.entrypoint`)."""
    module_name, _, function = target.partition(":")
    if not module_name or not function:
        raise ConfigurationError(
            f"the training function of {model} must look like module:function, got {target!r}"
        )
    if code_dir is not None and str(code_dir) not in sys.path:
        sys.path.insert(0, str(code_dir))
    try:
        module = _fresh_module(module_name, code_dir) or importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigurationError(
            f"cannot import the training module {module_name!r} of {model} ({error}); run from the "
            "folder that holds it or put it on PYTHONPATH"
        ) from None
    found = getattr(module, function, None)
    if not callable(found):
        raise ConfigurationError(f"{module_name} has no function {function!r} (train: {target})")
    return found  # type: ignore[no-any-return]


def _fresh_module(name: str, code_dir: Path | None) -> Any:
    """`name` loaded from its file in `code_dir` (None when it is not there). It replaces any
    module of that name already imported, so models pickled with its classes load again."""
    if code_dir is None:
        return None
    base = code_dir.joinpath(*name.split("."))
    path = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    previous = sys.modules.get(name)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except ImportError:
        _restore(name, previous)
        raise
    except Exception as error:
        _restore(name, previous)
        raise UserCodeFailed.raised("training module", str(path), error) from error
    return module


def _restore(name: str, previous: Any) -> None:
    if previous is None:
        sys.modules.pop(name, None)
    else:
        sys.modules[name] = previous


def load_specs(path: Path | None = None) -> dict[str, RetrainSpec]:
    """The retraining specs of `path` (a shipyard.yaml or pyproject.toml), or of the first of
    `./shipyard.yaml`, `./pyproject.toml` that exists."""
    found = read_project_file(path)
    return {} if found is None else _specs(*found)


def _specs(raw: Any, source: Path) -> dict[str, RetrainSpec]:
    models = raw.get("models") if isinstance(raw, dict) else None
    if models is None and isinstance(raw, dict) and "batch" in raw:
        return {}  # a file of scheduled batch jobs only
    if not isinstance(models, dict):
        raise ConfigurationError(
            f"{source} has no 'models' mapping; see `shipyard pipeline --help` for the layout"
        )
    specs = {}
    for name, body in models.items():
        if body is not None and not isinstance(body, dict):
            raise ConfigurationError(f"{source}: model {name!r} must be a mapping of settings")
        # KPIs are monitoring's and the model card's text is the card's, not ours
        body = {k: v for k, v in (body or {}).items() if k not in ("kpis", "card")}
        if not set(body) - {"fairness"}:
            continue  # a model with KPIs, fairness or a card only: nothing to retrain
        try:
            specs[name] = RetrainSpec(name=name, **body)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()
            )
            raise ConfigurationError(f"{source}: model {name!r}: {problems}") from None
        except InvalidInput as error:
            raise ConfigurationError(f"{source}: model {name!r}: {error.message}") from None
    return specs

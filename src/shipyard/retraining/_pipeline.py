"""The retraining pipeline: build the data, train in a tracked run, validate on the holdout
against the champion, register, canary, and promote or roll back on live evidence.

Each step is recorded on the pipeline (its status and evidence) and in the audit trail, so
`shipyard history NAME` tells the whole story. The first five steps run in one go
(`train_and_canary`); the decision (`decide`) is taken later, once labels have come back,
and is called again until it promotes, rolls back, or waits for a person (`approve`).
"""

from __future__ import annotations

import functools
import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from shipyard.core import Signature
from shipyard.core.errors import Conflict, InvalidInput, NotFound, ShipyardError, UserCodeFailed
from shipyard.features import FeatureStore
from shipyard.logstore import LogReader
from shipyard.monitoring import (
    LogQueries,
    Period,
    binary_outcomes,
    fairness_metrics,
    flat_metrics,
)
from shipyard.registry import Registry
from shipyard.retraining import _repository as repo
from shipyard.retraining._data import build_training_set, model_columns, split_holdout
from shipyard.retraining._decide import ArmEvidence, Decision, Outcomes, decide
from shipyard.retraining._gates import check, check_gates_apply, holdout_metrics, parse_gate
from shipyard.retraining._records import PipelineRecord, PipelineStatus, PipelineStep, Trigger
from shipyard.retraining._spec import FederatedSpec, RetrainSpec
from shipyard.runtime import load_predictor, package
from shipyard.store import record_audit
from shipyard.tracking import Run, Tracker

__all__ = [
    "FederatedOutcome",
    "FederatedTrainer",
    "Pipeline",
    "add_step",
    "decide_by_person",
    "finish",
    "pending_approvals",
    "pipeline_history",
]

log = logging.getLogger("shipyard.retraining")


@dataclass(frozen=True)
class FederatedOutcome:
    """What a federated run gives the pipeline: the global model to register and how it (and
    the champion, when asked) scored on the sites' holdouts, weighted by their rows."""

    model: Any
    signature: dict[str, Any]
    metrics: dict[str, float]  # accuracy, auc, log_loss
    champion: dict[str, float] | None
    params: dict[str, Any]
    lineage: dict[str, Any]
    sites: dict[str, dict[str, Any]]
    rounds: list[dict[str, Any]] = field(default_factory=list)


# (spec, the champion's native model to score beside the candidate or None, its feature names,
# the folder the spec's relative paths start from)
FederatedTrainer = Callable[[FederatedSpec, Any, list[str] | None, Path], FederatedOutcome]


class Pipeline:
    """Retrains one model according to its spec.

    Args:
        registry: versions and deployments.
        tracker: where training runs are recorded.
        reader: the prediction and label logs (training data and live evidence).
        spec: how this model is retrained.
        code_dir: where the training module lives (default: the current folder).
        clock: what time it is (steps and the canary's evidence window are stamped with it).
        federated: runs a federated training for a spec with `federated:` (the entry points
            give it; capabilities do not call each other).
    """

    def __init__(
        self,
        registry: Registry,
        tracker: Tracker,
        reader: LogReader,
        spec: RetrainSpec,
        *,
        code_dir: Path | None = None,
        clock: Callable[[], datetime] | None = None,
        federated: FederatedTrainer | None = None,
    ) -> None:
        self.federated = federated
        self.registry = registry
        self.tracker = tracker
        self.reader = reader
        self.spec = spec
        self.code_dir = code_dir
        self.clock = clock or (lambda: datetime.now(UTC))

    @property
    def name(self) -> str:
        return self.spec.name

    @functools.cached_property
    def feature_store(self) -> FeatureStore:
        """The feature store over this registry (offline: training sets only)."""
        return FeatureStore(self.registry)

    # -- records --------------------------------------------------------------------------------

    def _step(
        self,
        record: PipelineRecord,
        step: str,
        status: str,
        evidence: dict[str, Any],
        version: int | None = None,
    ) -> None:
        add_step(self.registry, self.clock(), record, step, status, evidence, version)

    def _save(self, record: PipelineRecord) -> None:
        with self.registry.database.transaction() as conn:
            repo.save(conn, record)

    def get(self, pipeline_id: int) -> PipelineRecord:
        with self.registry.database.transaction() as conn:
            record = repo.get(conn, pipeline_id)
        if record is None:
            raise NotFound(f"no pipeline {pipeline_id} (shipyard history {self.name})")
        return record

    # -- steps 1 to 5 ---------------------------------------------------------------------------

    def train_and_canary(
        self, trigger: Trigger, *, now: datetime | None = None, canary: bool = True
    ) -> PipelineRecord:
        """Build, train, validate, register and (unless told not to) canary a candidate."""
        now = now or self.clock()
        champion = self._champion()
        if champion is None:
            self.registry.ensure_model(self.name)  # a first version: its pipeline record needs it
        with self.registry.database.transaction() as conn:
            active = repo.latest(conn, self.name, repo.ACTIVE)
            if active is not None:
                raise Conflict(
                    f"pipeline {active['id']} of {self.name} is still {active['status']}; wait for it or roll it back "
                    f"(shipyard deploy {self.name} --rollback)"
                )
            record = repo.create(
                conn, self.name, _plain(trigger), champion.version if champion else None, now
            )
        try:
            return self._run(record, champion, now, canary)
        except ShipyardError as error:
            self._step(record, "failed", "error", {"error": error.message})
            record["status"] = "failed"
            self._save(record)
            raise
        except Exception as error:  # a training function's own bug: recorded, then raised
            self._step(record, "failed", "error", {"error": f"{type(error).__name__}: {error}"})
            record["status"] = "failed"
            self._save(record)
            raise

    def _champion(self) -> Any:
        try:
            return self.registry.resolve(f"{self.name}:production")
        except NotFound:
            return None

    def _run(
        self, record: PipelineRecord, champion: Any, now: datetime, canary: bool
    ) -> PipelineRecord:
        if self.spec.federated is not None:
            return self._run_federated(record, champion, canary)
        spec = self.spec
        signature: Signature | None = champion.signature if champion is not None else None
        declared = model_columns(spec.data.features) if spec.data.features else None
        features = declared or (signature.names if signature is not None else None)
        if not features:
            raise InvalidInput(
                f"say which features {self.name} trains on (data.features); it has no version yet"
            )
        classes = self.registry.classes(self.name, champion.version) if champion else None
        task = champion.task if champion is not None else None
        if task:
            check_gates_apply(spec.gates, task, self.name)
        # 1. the training set, without the rows whose label the model cannot learn from
        data = build_training_set(
            spec.data, self.name, features, classes, self.reader, now, base=self.code_dir,
            task=task, feature_store=self.feature_store if spec.data.source == "features" else None,
        )  # fmt: skip
        frame = data.frame
        train, holdout = split_holdout(frame, spec.holdout, spec.data.time_column)
        self._step(record, "data", "ok", {
            "source": spec.data.source, "rows": len(frame), "train_rows": len(train), "holdout_rows": len(holdout),
            "positive_rate": _positive_rate(frame[spec.data.label], classes), **data.dropped_evidence(),
        })  # fmt: skip
        # 2. training, inside a tracked run
        with self.tracker.start_run(
            experiment=self.name, name=f"retrain ({record['trigger'].get('kind', 'manual')})", params=spec.params,
            tags={"pipeline": record["id"], "trigger": record["trigger"].get("kind", "manual")},
            entrypoint=str(spec.train), code_dir=self.code_dir, seed=spec.seed,
        ) as run:  # fmt: skip
            record["run_id"] = run.id
            self._save(record)
            train_print = run.log_dataset("train", train, key=spec.data.key, label=spec.data.label)
            run.log_dataset("holdout", holdout, key=spec.data.key, label=spec.data.label)
            train_fn = spec.entrypoint(self.code_dir)
            try:
                model = train_fn(train, dict(spec.params))
            except Exception as error:  # the user's code: named, with its line, never a traceback
                raise UserCodeFailed.raised("training function", str(spec.train), error) from error
            self._step(
                record,
                "train",
                "ok",
                {"run": run.id, "entrypoint": spec.train, "data_sha256": train_print["sha256"]},
            )
            # 3. validation on the holdout, beside the champion on the same rows
            sig = signature or Signature.infer(train[features])
            columns = sig.validate_frame(holdout[features])
            truth = holdout[spec.data.label].to_numpy()
            if task is None:
                task = _task_of(model)
                check_gates_apply(spec.gates, task, self.name)
            candidate_classes = _classes_of(model, classes)
            threshold = (
                self._threshold(champion, model, sig, train, features) if task == "binary" else None
            )
            candidate_metrics = self._score(
                model, sig, train[features], columns, truth, task, candidate_classes, threshold,
                holdout,
            )  # fmt: skip
            champion_metrics = None
            if champion is not None:
                served = self.registry.open(self.name, champion.version).predictor
                champion_metrics = holdout_metrics(
                    served, columns, truth, task, classes, champion.threshold
                )
                champion_metrics.update(
                    self._fairness(served, columns, holdout, truth, classes, champion.threshold)
                )
            if not self._validated(run, record, candidate_metrics, champion_metrics):
                return record
            # 4. register, with its lineage
            version = self.registry.register(
                model, name=self.name, sample=train[features].iloc[:2000], training_data=train[[*features, spec.data.label]],
                metrics={k: round(v, 6) for k, v in candidate_metrics.items()}, params=spec.params,
                description=f"retrained by pipeline {record['id']}", purpose=champion.purpose if champion else "",
                threshold=threshold, run_id=run.id,
                lineage={"parent": champion.version if champion else None, "trigger": record["trigger"], "pipeline": record["id"],
                         **({"feature_store": data.lineage} if data.lineage else {})},
            )  # fmt: skip
        return self._registered(record, champion, version, run.id, canary)

    def _run_federated(self, record: PipelineRecord, champion: Any, canary: bool) -> PipelineRecord:
        """Steps 1 to 5 for a model trained across sites: the sites keep the rows, train the
        candidate together, and score it (and the champion) on their holdouts; the gates read
        those scores."""
        spec = self.spec
        fed = spec.federated
        assert fed is not None
        if self.federated is None:
            raise InvalidInput(
                f"{self.name} trains federated; start it with `shipyard pipeline run` or a worker"
            )
        scored = None
        if champion is not None and any(parse_gate(g).value is None for g in spec.gates):
            scored = self.registry.open(self.name, champion.version).native()
            if scored is None:  # served through a wrapper only: nothing the sites could score
                raise InvalidInput(
                    f"the champion {champion.ref} ({champion.flavour}) cannot be scored on the "
                    "sites' holdouts; drop the gates that compare with the champion"
                )
        names = champion.signature.names if champion is not None else None
        self._step(record, "data", "ok", {
            "source": "federated", "address": fed.address, "min_sites": fed.min_sites,
            "note": "the rows stay at the sites; each holds out its own share",
        })  # fmt: skip
        with self.tracker.start_run(
            experiment=self.name, name=f"retrain ({record['trigger'].get('kind', 'manual')}, federated)",
            params=fed.model_dump(), entrypoint="shipyard.federated", code_dir=self.code_dir,
            tags={"pipeline": record["id"], "trigger": record["trigger"].get("kind", "manual")},
        ) as run:  # fmt: skip
            record["run_id"] = run.id
            self._save(record)
            outcome = self.federated(fed, scored, names, self.code_dir or Path.cwd())
            for site, held in outcome.sites.items():  # the rows stay there: their ids only
                for role in ("train", "holdout"):
                    if held.get(f"{role}_sha256"):
                        run.record_dataset(f"{site}/{role}", f"site {site}", {
                            "sha256": held[f"{role}_sha256"], "rows": held.get(f"{role}_rows"),
                            "columns": held.get("columns"),
                        })  # fmt: skip
            for r in outcome.rounds:
                run.log_metrics(
                    {f"federated_{k}": r[k] for k in ("accuracy", "auc", "loss") if r.get(k) is not None},
                    step=int(r["round"]),
                )  # fmt: skip
            self._step(record, "train", "ok", {
                "run": run.id, "entrypoint": "shipyard.federated", "rounds": fed.rounds,
                "sites": {k: v.get("train_rows") for k, v in outcome.sites.items()},
                "secure_aggregation": fed.secure_aggregation, "dp_noise": fed.dp_noise,
            })  # fmt: skip
            holdout = "the sites' holdouts, weighted by their rows"
            if not self._validated(run, record, outcome.metrics, outcome.champion, holdout):
                return record
            version = self.registry.register(
                outcome.model, name=self.name, signature=outcome.signature,
                metrics={k: round(v, 6) for k, v in outcome.metrics.items()}, params=outcome.params,
                description=f"retrained by pipeline {record['id']} (federated)",
                purpose=champion.purpose if champion else "", run_id=run.id,
                lineage={**outcome.lineage, "parent": champion.version if champion else None,
                         "trigger": record["trigger"], "pipeline": record["id"]},
            )  # fmt: skip
        return self._registered(record, champion, version, run.id, canary)

    def _validated(
        self,
        run: Run,
        record: PipelineRecord,
        candidate: dict[str, float],
        champion: dict[str, float] | None,
        holdout: str | None = None,
    ) -> bool:
        """Step 3's verdict: the candidate's (and champion's) holdout metrics on the run, the
        gates checked, and the step recorded; a rejection also ends the pipeline."""
        run.log_metrics({f"holdout_{k}": v for k, v in candidate.items()})
        if champion:
            run.log_metrics({f"champion_{k}": v for k, v in champion.items()})
        results = check(self.spec.gates, candidate, champion)
        failed = [r for r in results if not r.passed]
        evidence: dict[str, Any] = {
            "candidate": candidate,
            "champion": champion,
            "gates": [r.to_dict() for r in results],
            **({"holdout": holdout} if holdout else {}),
        }
        if failed:
            self._step(
                record, "validate", "rejected", {**evidence, "failed": [r.gate for r in failed]}
            )
            record["status"] = "rejected"
            self._save(record)
            return False
        self._step(record, "validate", "passed", evidence)
        return True

    def _registered(
        self, record: PipelineRecord, champion: Any, version: Any, run_id: str, canary: bool
    ) -> PipelineRecord:
        """Step 4's record, then step 5: the candidate canaried beside the champion."""
        spec = self.spec
        record["candidate_version"] = version.version
        self._save(record)
        self._step(
            record,
            "register",
            "ok",
            {"version": version.version, "run": run_id, "runtime": version.runtime},
            version.version,
        )
        if not canary or champion is None:
            record["status"] = "registered"
            self._save(record)
            return record
        # 5. canary, sticky by the routing field
        deployment = self.registry.deploy(
            self.name, version.version, canary=spec.rollout.canary, routing_field=spec.rollout.routing_field,
            reason=f"pipeline {record['id']}: canary",
        )  # fmt: skip
        record["status"] = "canary"
        self._save(record)
        self._step(
            record,
            "canary",
            "started",
            {"revision": deployment.revision, "split": deployment.describe()},
            version.version,
        )
        return record

    def _threshold(
        self, champion: Any, model: Any, sig: Signature, train: pd.DataFrame, features: list[str]
    ) -> float:
        """The champion's threshold, or the score quantile that flags `threshold_share` of rows."""
        if self.spec.threshold_share is None:
            return (
                float(champion.threshold)
                if champion is not None and champion.threshold is not None
                else 0.5
            )
        scores = np.asarray(model.predict_proba(train[features]))[:, 1]
        return round(float(np.quantile(scores, 1 - self.spec.threshold_share)), 6)

    def _score(
        self,
        model: Any,
        sig: Signature,
        sample: pd.DataFrame,
        columns: Any,
        truth: np.ndarray,
        task: str,
        classes: list[Any] | None,
        threshold: float | None,
        holdout: pd.DataFrame,
    ) -> dict[str, float]:
        """Holdout metrics of the candidate on the runtime that would serve it (with the gaps
        between the groups of each declared fairness attribute, for a binary classifier)."""
        folder = Path(tempfile.mkdtemp(prefix="shipyard-candidate-"))
        try:
            packaged = package(model, sig, sig.validate_frame(sample.iloc[:1000]), folder / "model")
            predictor = load_predictor(
                folder / "model", packaged.info, packaged.runtime, packaged.onnx
            )
            scored = holdout_metrics(predictor, columns, truth, task, classes, threshold)
            if task == "binary":
                scored.update(
                    self._fairness(predictor, columns, holdout, truth, classes, threshold)
                )
            return scored
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _fairness(
        self,
        predictor: Any,
        columns: Any,
        holdout: pd.DataFrame,
        truth: np.ndarray,
        classes: list[Any] | None,
        threshold: float | None,
    ) -> dict[str, float]:
        """The fairness gaps (`fairness_gap(attribute)`, ...) of a binary classifier's answers
        on the holdout, for the attributes `fairness:` declares; {} when none is declared."""
        if self.spec.fairness is None:
            return {}
        positive = classes[1] if classes else 1
        actual, flagged = binary_outcomes(predictor.predict(columns), truth, positive, threshold)
        frame = {c: holdout[c].to_numpy() for c in holdout.columns}
        return flat_metrics(fairness_metrics(self.spec.fairness, frame, actual, flagged))

    # -- step 6 ---------------------------------------------------------------------------------

    def decide(self, pipeline_id: int, *, now: datetime | None = None) -> PipelineRecord:
        """Look at the canary's live evidence and promote, roll back, or keep waiting."""
        record = self.get(pipeline_id)
        if record["status"] not in ("canary", "awaiting_approval"):
            return record
        now = now or self.clock()
        started = next(
            datetime.fromisoformat(s["at"])
            for s in record["steps"]
            if s["step"] == "canary" and s["status"] == "started"
        )
        champion_version, candidate = record["champion_version"], record["candidate_version"]
        # a canary has both
        assert champion_version is not None
        assert candidate is not None
        champion = self._arm(champion_version, started, now)
        challenger = self._arm(candidate, started, now)
        decision = decide(champion, challenger, self.spec.rollout, _looks(record))
        if decision.verdict == "wait":
            last = record["steps"][-1] if record["steps"] else None
            evidence = {"reason": decision.reason, **decision.evidence}
            if last is not None and last["step"] == "decide" and last["status"] == "waiting":
                # one "waiting" entry, kept current, rather than one per look
                last["at"], last["evidence"] = self.clock().isoformat(), _plain(evidence)
                self._save(record)
            elif record["status"] != "awaiting_approval":
                self._step(record, "decide", "waiting", evidence, record["candidate_version"])
            return record
        if decision.verdict == "promote" and self.spec.rollout.approval == "manual":
            if record["status"] != "awaiting_approval":
                record["status"] = "awaiting_approval"
                self._save(record)
                self._step(
                    record, "decide", "awaiting_approval",
                    {"reason": decision.reason, "approve_with": f"shipyard approve {self.name} {record['candidate_version']}", **decision.evidence},
                    record["candidate_version"],
                )  # fmt: skip
            return record
        return self._finish(record, decision)

    def _arm(self, version: int, since: datetime, until: datetime) -> ArmEvidence:
        """One variant's evidence since the canary started: traffic, failures and latency,
        and its labelled outcomes summed per routing key (correct or not for a classifier,
        the absolute error for a regressor)."""
        length = max(until - since, timedelta(seconds=1))
        queries = LogQueries(self.reader, self.name, Period(since, until, length))
        regression = self.registry.get_version(self.name, version).task == "regression"
        rows = [
            r for r in queries.windows(None) if r["version"] == version and r["variant"] != "shadow"
        ]
        errors = sum(
            e["count"] for e in queries.errors() if e["version"] == version and e["status"] >= 500
        )
        latency = max(
            (r["latency_p95"] for r in rows if r["latency_p95"] is not None), default=None
        )
        sums = queries.outcome_sums(version, regression=regression)
        outcomes = Outcomes(
            "absolute_error" if regression else "correct",
            clusters=int(sums["clusters"]),
            count=int(sums["count"]),
            total=sums["total"],
            total_sq=sums["total_sq"],
            cluster_total_sq=sums["cluster_total_sq"],
            cluster_cross=sums["cluster_cross"],
            cluster_size_sq=sums["cluster_size_sq"],
            unparsed=int(sums["unparsed"]),
        )
        return ArmEvidence(version, sum(r["volume"] for r in rows), errors, latency, outcomes)

    def _finish(self, record: PipelineRecord, decision: Decision) -> PipelineRecord:
        return finish(self.registry, self.clock(), record, decision)

    def approve(self, version: int) -> PipelineRecord:
        """A person's go-ahead for a candidate waiting for approval."""
        return decide_by_person(self.registry, self.name, version, "approve", now=self.clock())

    def reject(self, version: int) -> PipelineRecord:
        """A person's no to a candidate waiting for approval: it is rolled back."""
        return decide_by_person(self.registry, self.name, version, "reject", now=self.clock())

    def history(self, limit: int = 20) -> list[PipelineRecord]:
        with self.registry.database.transaction() as conn:
            return repo.list_for(conn, self.name, limit)


def _looks(record: PipelineRecord) -> list[dict[str, float]]:
    """The canary test's looks so far: the latest decide step keeps them (its "waiting" entry
    is rewritten at each look), and the next decision needs them to spend its error rate."""
    for step in reversed(record["steps"]):
        if step["step"] == "decide":
            return list(step["evidence"].get("test", {}).get("looks", []))
    return []


def _positive_rate(labels: pd.Series, classes: list[Any] | None) -> float | None:
    if not classes or len(classes) != 2:
        return None
    return float((labels == classes[1]).mean())


def _plain(value: Any) -> Any:
    """JSON-ready: numpy scalars to numbers, datetimes to text, NaN to None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float) and value != value:
        return None
    return value


def _task_of(model: Any) -> str:
    """binary, multiclass or regression, for a first version (no champion to ask): by
    scikit-learn's `classes_`, or (without them) by whether the model has `predict_proba`."""
    classes = getattr(model, "classes_", None)
    if classes is not None:
        return "binary" if len(classes) == 2 else "multiclass"
    return "binary" if hasattr(model, "predict_proba") else "regression"


def _classes_of(model: Any, known: list[Any] | None) -> list[Any] | None:
    """The candidate's classes in the order of its scores (scikit-learn's `classes_`), else
    the champion's."""
    classes = getattr(model, "classes_", None)
    return (
        [c.item() if hasattr(c, "item") else c for c in classes] if classes is not None else known
    )


# -- steps any process may take on a stored pipeline (the worker, a server, the CLI) -----------


def add_step(
    registry: Registry,
    now: datetime,
    record: PipelineRecord,
    step: str,
    status: str,
    evidence: dict[str, Any],
    version: int | None = None,
) -> None:
    """Append one step to `record`, stored with its audit event (by `registry.actor`)."""
    entry: PipelineStep = {
        "step": step,
        "status": status,
        "at": now.isoformat(),
        "evidence": _plain(evidence),
    }
    record["steps"] = [*record["steps"], entry]
    with registry.database.transaction() as conn:
        repo.save(conn, record)
        record_audit(
            conn,
            registry.actor,
            f"pipeline.{step}",
            record["model"],
            version,
            {"pipeline": record["id"], "status": status, **entry["evidence"]},
        )
    log.info("%s pipeline %s: %s %s", record["model"], record["id"], step, status)


def finish(
    registry: Registry, now: datetime, record: PipelineRecord, decision: Decision
) -> PipelineRecord:
    """Promote the candidate of `record` (deploy it to all traffic, make it champion) or roll
    it back, as `decision` says."""
    candidate = record["candidate_version"]
    assert candidate is not None  # only a canary or an approval finishes
    name = record["model"]
    status: PipelineStatus
    status, step = (
        ("promoted", "promote") if decision.verdict == "promote" else ("rolled_back", "rollback")
    )
    with registry.database.transaction() as conn:
        # the worker's decision and a person's (or two people's) may come at once: one wins
        if not repo.claim(conn, record["id"], ("canary", "awaiting_approval"), status):
            raise Conflict(
                f"pipeline {record['id']} of {name} was decided meanwhile (shipyard history {name})"
            )
    record["status"] = status
    try:
        if decision.verdict == "promote":
            deployment = registry.deploy(
                name, candidate, reason=f"pipeline {record['id']}: promoted"
            )
            registry.set_alias(name, candidate, "champion")
        else:
            deployment = registry.rollback(
                name, reason=f"pipeline {record['id']}: {decision.reason}"
            )
    except Exception as error:
        record["status"] = "failed"
        add_step(
            registry,
            now,
            record,
            step,
            "failed",
            {"reason": decision.reason, "error": str(error)[:500]},
            candidate,
        )
        raise
    add_step(
        registry,
        now,
        record,
        step,
        "done",
        {"reason": decision.reason, "revision": deployment.revision, **decision.evidence},
        candidate,
    )
    return record


def pipeline_history(registry: Registry, name: str, limit: int = 20) -> list[PipelineRecord]:
    """The pipelines of `name`, newest first."""
    return registry.database.read(lambda conn: repo.list_for(conn, name, limit))


def pending_approvals(registry: Registry, name: str | None = None) -> list[PipelineRecord]:
    """Pipelines whose candidate waits for a person's approval (of one model, or all)."""
    return registry.database.read(lambda conn: repo.awaiting_approval(conn, name))


def decide_by_person(
    registry: Registry,
    name: str,
    version: int,
    verdict: Literal["approve", "reject"],
    *,
    now: datetime | None = None,
) -> PipelineRecord:
    """A person's answer for candidate `version` of `name`, waiting for approval or still in
    its canary: approve promotes it, reject rolls it back. Recorded as by `registry.actor`.
    `Conflict` when it is neither (or was decided meanwhile)."""
    with registry.database.transaction() as conn:
        record = repo.latest(conn, name, ("awaiting_approval", "canary"))
    if record is None or record["candidate_version"] != version:
        raise Conflict(f"{name}:{version} is not waiting for approval (shipyard history {name})")
    if verdict == "approve":
        decision = Decision("promote", f"approved by {registry.actor}")
    else:
        decision = Decision("rollback", f"rejected by {registry.actor}")
    return finish(registry, now or datetime.now(UTC), record, decision)

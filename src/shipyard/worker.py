"""`Worker`: runs scheduled monitoring, retraining and batch jobs from the jobs table.

    tick      the scheduler: queues monitoring runs, retrains whose policy is due, checks of
              running canaries and batch jobs whose schedule came round; then the next tick
    monitor   a monitoring run of one model (snapshots, alerts)
    retrain   a pipeline's first five steps (data, train, validate, register, canary)
    rollout   a canary's decision; queued again until it promotes, rolls back or waits for a person
    webhook   an alert's webhook post that failed, attempted again after the retry policy's wait
    batch     a batch job of `shipyard.yaml` for one scheduled time (resumes from its staged
              chunks when retried)

Any number of workers may run, on one machine or many: a job is leased to one worker, the
lease renewed while it works, and taken over by another if the worker dies (see
`shipyard.store.JobQueue`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from shipyard.batch import BatchJobSpec, due_slot, load_batch_jobs
from shipyard.core import Settings
from shipyard.core.errors import ConfigurationError, Conflict, ShipyardError
from shipyard.logstore import LogReader
from shipyard.monitoring import Monitor
from shipyard.registry import Registry
from shipyard.retraining import (
    FederatedOutcome,
    FederatedSpec,
    Pipeline,
    RetrainSpec,
    due_triggers,
    load_specs,
    may_retrain,
    parse_duration,
)
from shipyard.store import Job, JobQueue
from shipyard.tracking import Tracker

__all__ = ["Worker", "federated_trainer"]

log = logging.getLogger("shipyard.worker")

KINDS = ("tick", "monitor", "retrain", "rollout", "webhook", "batch")


class Worker:
    """Claims due jobs and runs them; see the module docstring.

    Args:
        settings: where state lives.
        specs: retraining specs by model name (default: `shipyard.yaml` / `[tool.shipyard]` here).
        batch_jobs: scheduled batch jobs by name (default: that file's `batch:`).
        code_dir: where training modules are imported from (default: the current folder).
        name: this worker's id in leases (default: host and process).
        lease: how long a claimed job is ours before another worker may take it over.
        monitor_every: how often each model with a spec is monitored.
        tick_every: how often the scheduler runs.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        specs: dict[str, RetrainSpec] | None = None,
        batch_jobs: dict[str, BatchJobSpec] | None = None,
        code_dir: Path | None = None,
        name: str | None = None,
        lease: timedelta = timedelta(minutes=5),
        monitor_every: str = "1h",
        monitor_window: str = "1d",
        tick_every: timedelta = timedelta(minutes=1),
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock or (lambda: datetime.now(UTC))
        self.registry = Registry.from_settings(settings)
        self.queue = JobQueue(self.registry.database, clock=self.clock)
        self.reader = LogReader(self.registry.artifacts)
        self.monitor = Monitor.from_settings(settings, self.registry)
        self.tracker = Tracker(
            self.registry.database, self.registry.artifacts, actor=settings.actor
        )
        self.specs = specs if specs is not None else load_specs()
        self.batch_jobs = batch_jobs if batch_jobs is not None else load_batch_jobs()
        self.code_dir = code_dir or Path.cwd()
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.lease = lease
        self.monitor_every = parse_duration(monitor_every)
        self.monitor_window = monitor_window
        self.tick_every = tick_every
        self.clock = clock or (lambda: datetime.now(UTC))

    def close(self) -> None:
        self.registry.close()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def pipeline(self, model: str) -> Pipeline:
        spec = self.specs.get(model)
        if spec is None:
            raise ConfigurationError(
                f"{model} has no retraining spec; add it under models: in shipyard.yaml"
            )
        return Pipeline(
            self.registry, self.tracker, self.reader, spec, code_dir=self.code_dir,
            clock=self.clock, federated=federated_trainer,
        )  # fmt: skip

    # -- the loop -------------------------------------------------------------------------------

    def start_schedule(self) -> Job:
        """Queue the first scheduler tick (at most one is ever queued)."""
        return self.queue.enqueue(
            "tick", payload={"last": self.clock().isoformat()}, dedup_key="tick"
        )

    def run_once(self) -> Job | None:
        """Claim and run one due job; None when nothing is due."""
        job = self.queue.claim(self.name, lease=self.lease, kinds=list(KINDS))
        if job is None:
            return None
        stop = threading.Event()
        keeper = threading.Thread(target=self._keep_lease, args=(job, stop), daemon=True)
        keeper.start()
        try:
            result = self._handle(job)
        except Exception as error:  # recorded on the job, retried with backoff, never lost
            message = (
                error.message
                if isinstance(error, ShipyardError)
                else f"{type(error).__name__}: {error}"
            )
            state = self.queue.fail(job, self.name, message)
            log.warning(
                "job %s (%s %s) failed (%s): %s", job.id, job.kind, job.model or "", state, message
            )
        else:
            self.queue.complete(job, self.name, result)
        finally:
            stop.set()
            keeper.join(timeout=5)
        return self.queue.get(job.id)

    def run_until_idle(self, limit: int = 1000) -> list[Job]:
        """Run due jobs until none is left (for tests, CI and `shipyard worker --once`)."""
        done: list[Job] = []
        while len(done) < limit:
            job = self.run_once()
            if job is None:
                break
            done.append(job)
        return done

    def run_forever(self, poll: float = 1.0, stop: threading.Event | None = None) -> None:
        self.start_schedule()
        stop = stop or threading.Event()
        while not stop.is_set():
            if self.run_once() is None:
                stop.wait(poll)

    def _keep_lease(self, job: Job, stop: threading.Event) -> None:
        every = max(1.0, self.lease.total_seconds() / 3)
        while not stop.wait(every):
            if not self.queue.renew(job, self.name, self.lease):
                log.error("lost the lease of job %s; another worker has it now", job.id)
                return

    # -- the jobs -------------------------------------------------------------------------------

    def _handle(self, job: Job) -> dict[str, Any]:
        handler = {
            "tick": self._tick,
            "monitor": self._monitor,
            "retrain": self._retrain,
            "rollout": self._rollout,
            "webhook": self._webhook,
            "batch": self._batch,
        }[job.kind]
        return handler(job)

    def _tick(self, job: Job) -> dict[str, Any]:
        now = self.clock()
        last = datetime.fromisoformat(job.payload.get("last", now.isoformat()))
        queued: list[str] = []
        for name, spec in self.specs.items():
            self._queue_monitoring(name, now)
            firing = (
                self.monitor.alert_manager.alerts(name, "firing")
                if self.monitor.alert_manager
                else []
            )
            reasons = due_triggers(
                spec,
                self.registry.database,
                firing,
                last,
                now,
                lambda since, n=name: self._labels_since(n, since),
            )
            if reasons:
                allowed, why = may_retrain(spec, self.registry.database, now)
                if allowed:
                    trigger = {
                        "kind": reasons[0]["kind"],
                        "reasons": reasons,
                        "alerts": [a for r in reasons for a in r.get("alerts", [])],
                    }
                    self.queue.enqueue(
                        "retrain",
                        model=name,
                        payload={"trigger": trigger},
                        dedup_key=f"retrain:{name}",
                        max_attempts=2,
                    )
                    queued.append(f"retrain {name}: {reasons[0]['kind']}")
                else:
                    log.info("%s would retrain (%s) but %s", name, reasons[0]["kind"], why)
            for record in self.pipeline(name).history(5):
                if record["status"] == "canary":
                    self._queue_rollout(name, record["id"], now)
        queued += self._queue_batch_jobs(last, now)
        self.queue.enqueue(
            "tick",
            payload={"last": now.isoformat()},
            run_at=now + self.tick_every,
            dedup_key="tick",
        )
        return {"queued": queued}

    def _queue_batch_jobs(self, last: datetime, now: datetime) -> list[str]:
        """One job per batch job whose schedule named a time since the last tick (ticks cover
        disjoint spans, and the key keeps two workers' ticks from queueing one time twice)."""
        queued = []
        for name, spec in self.batch_jobs.items():
            slot = due_slot(spec, last, now)
            if slot is None:
                continue
            self.queue.enqueue(
                "batch",
                model=spec.model.split(":")[0],
                payload={"job": name, "slot": slot.isoformat()},
                dedup_key=f"batch:{name}:{slot.isoformat()}",
            )
            queued.append(f"batch {name}: {slot.isoformat()}")
        return queued

    def _batch(self, job: Job) -> dict[str, Any]:
        name = job.payload["job"]
        spec = self.batch_jobs.get(name)
        if spec is None:
            raise ConfigurationError(
                f"batch job {name!r} is no longer in shipyard.yaml; nothing was scored"
            )
        slot = datetime.fromisoformat(job.payload["slot"])
        return spec.run(slot, self.settings, self.registry).to_dict()

    def _queue_monitoring(self, name: str, now: datetime) -> None:
        latest = self.queue.list_jobs(model=name, limit=50)
        recent = [
            j for j in latest if j.kind == "monitor" and j.created_at >= now - self.monitor_every
        ]
        if not recent:
            self.queue.enqueue(
                "monitor",
                model=name,
                payload={"window": self.monitor_window},
                dedup_key=f"monitor:{name}",
            )

    def _queue_rollout(self, name: str, pipeline_id: int, now: datetime) -> None:
        spec = self.specs[name]
        self.queue.enqueue(
            "rollout", model=name, payload={"pipeline": pipeline_id}, run_at=now + parse_duration(spec.rollout.check_every),
            dedup_key=f"rollout:{pipeline_id}",
        )  # fmt: skip

    def _labels_since(self, name: str, since: datetime) -> int:
        table = self.reader.labels()
        if table.num_rows == 0:
            return 0
        received = table.column("received_at").to_pylist()
        return sum(1 for r in received if (r if r.tzinfo else r.replace(tzinfo=UTC)) >= since)

    def _monitor(self, job: Job) -> dict[str, Any]:
        assert job.model is not None
        report = self.monitor.run(
            job.model, window=job.payload.get("window", self.monitor_window), now=self.clock()
        )
        return {"status": report.status, "alerts": [a["id"] for a in report.alerts]}

    def _webhook(self, job: Job) -> dict[str, Any]:
        """An alert's webhook post that failed, attempted again (see `AlertManager`)."""
        assert self.monitor.alert_manager is not None
        return dict(self.monitor.alert_manager.redeliver(job.payload))

    def _retrain(self, job: Job) -> dict[str, Any]:
        assert job.model is not None
        try:
            record = self.pipeline(job.model).train_and_canary(
                job.payload.get("trigger", {"kind": "manual"}), now=self.clock()
            )
        except Conflict as busy:  # another pipeline runs: nothing to retry
            return {"skipped": busy.message}
        if record["status"] == "canary":
            self._queue_rollout(job.model, record["id"], self.clock())
        return {
            "pipeline": record["id"],
            "status": record["status"],
            "candidate": record["candidate_version"],
        }

    def _rollout(self, job: Job) -> dict[str, Any]:
        assert job.model is not None
        pipeline_id = int(job.payload["pipeline"])
        record = self.pipeline(job.model).decide(pipeline_id, now=self.clock())
        if record["status"] == "canary":  # not decided yet: look again later
            self.queue.enqueue(
                "rollout", model=job.model, payload={"pipeline": pipeline_id},
                run_at=self.clock() + parse_duration(self.specs[job.model].rollout.check_every),
                dedup_key=f"rollout:{pipeline_id}",
            )  # fmt: skip
        return {"pipeline": pipeline_id, "status": record["status"]}


def federated_trainer(
    spec: FederatedSpec, champion: Any, champion_features: list[str] | None, base: Path
) -> FederatedOutcome:
    """A retraining pipeline's federated run: serve the rounds at `spec.address` to the sites
    that join, the champion (a native model, when the gates compare with it) scored beside the
    candidate on their holdouts in the last round; TLS and the federation key as the spec says
    (paths from `base`)."""
    from shipyard import federated

    def path(value: str) -> Path:
        return base / Path(value).expanduser()

    certificates = (
        federated.server_certificates(
            path(spec.tls_cert), path(spec.tls_key), path(spec.tls_ca) if spec.tls_ca else None
        )
        if spec.tls_cert and spec.tls_key
        else None
    )
    key = federated.read_key(path(spec.key_file)) if spec.key_file else None

    settings = federated.Settings(
        rounds=spec.rounds, min_sites=spec.min_sites, strategy=spec.strategy, model=spec.model,
        mu=spec.mu, steps=spec.local_steps,
        privacy=federated.Privacy(spec.dp_clip, spec.dp_noise, spec.dp_delta) if spec.dp_noise else None,
        secure=spec.secure_aggregation, secure_clip=spec.secure_clip,
        wait_seconds=parse_duration(spec.wait).total_seconds(),
        champion=(
            federated.champion_parameters(champion, champion_features or [])
            if champion is not None else None
        ),
    )  # fmt: skip
    result = federated.serve(spec.address, settings, certificates=certificates, key=key)
    final = result.final

    def named(found: dict[str, Any]) -> dict[str, float]:
        pairs = {"accuracy": "accuracy", "auc": "auc", "log_loss": "loss"}
        return {k: float(found[v]) for k, v in pairs.items() if found.get(v) is not None}

    metrics = named(final)
    if result.epsilon is not None:
        metrics["dp_epsilon"] = result.epsilon
    return FederatedOutcome(
        model=result.estimator(),
        signature={"columns": [{"name": f, "type": "float64"} for f in result.features]},
        metrics=metrics,
        champion=named(final["champion"]) if final.get("champion") else None,
        params={"model": spec.model, "strategy": spec.strategy, "rounds": spec.rounds,
                "sites": len(result.sites), "secure_aggregation": spec.secure_aggregation},
        lineage=result.lineage(),
        sites=result.sites,
        rounds=result.rounds,
    )  # fmt: skip

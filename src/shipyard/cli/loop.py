"""The closed loop from the command line: `shipyard pipeline run`, `approve`, `history`,
`worker` and `jobs`."""

from __future__ import annotations

import contextlib
import json
import signal
import threading
from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from rich.traceback import Traceback

from shipyard.batch import load_batch_jobs
from shipyard.cli._common import console, emit_json, err_console, json_flag, open_registry, settings
from shipyard.core.errors import ConfigurationError, InvalidInput, UserCodeFailed
from shipyard.logstore import LogReader
from shipyard.retraining import Pipeline, PipelineRecord, RetrainSpec, load_specs
from shipyard.store import JobQueue
from shipyard.tracking import Tracker

pipeline_app = typer.Typer(
    help="Run the retraining pipeline on demand (what a CI job calls).", no_args_is_help=True
)
jobs_app = typer.Typer(help="The background jobs the workers run.", no_args_is_help=True)

REJECTED_EXIT = 10


def _spec(name: str, config: Path | None) -> RetrainSpec:
    specs = load_specs(config)
    if name not in specs:
        where = config or "shipyard.yaml or [tool.shipyard] in pyproject.toml"
        raise ConfigurationError(f"{name} has no retraining spec in {where}; add it under models:")
    return specs[name]


def _pipeline(ctx: typer.Context, name: str, config: Path | None) -> Pipeline:
    registry = open_registry(ctx)
    tracker = Tracker(registry.database, registry.artifacts, actor=registry.actor)
    code_dir = (config.parent if config else Path.cwd()).resolve()
    from shipyard.worker import federated_trainer

    return Pipeline(
        registry, tracker, LogReader(registry.artifacts), _spec(name, config), code_dir=code_dir,
        federated=federated_trainer,
    )  # fmt: skip


@pipeline_app.command("run")
def run(
    ctx: typer.Context,
    name: str,
    config: Path | None = typer.Option(
        None, "--config", "-c", help="shipyard.yaml (default: ./shipyard.yaml or pyproject.toml)"
    ),
    canary: bool = typer.Option(
        True, "--canary/--no-canary", help="canary the candidate once it passes"
    ),
    as_json: bool = json_flag(
        "the run's record: each step's outcome, metrics, gates and the decision"
    ),
    debug: bool = typer.Option(
        False, "--debug", help="when your training function fails, print its whole traceback"
    ),
) -> None:
    """Build the data, train, validate against the champion, register and canary NAME now.

    Exits 10 when a validation gate refuses the candidate, so a CI job fails there, and 2
    when the training function raises (its exception and line; --debug for the traceback).
    """
    pipeline = _pipeline(ctx, name, config)
    try:
        record = pipeline.train_and_canary(
            {"kind": "manual", "by": settings(ctx).actor}, canary=canary
        )
    except UserCodeFailed as error:
        cause = error.__cause__
        if debug and cause is not None:
            err_console.print(Traceback.from_exception(type(cause), cause, cause.__traceback__))
        elif not debug:
            error.message += "; --debug shows the traceback"
        raise
    finally:
        pipeline.registry.close()
    if as_json:
        emit_json(record)
    else:
        _timeline(name, [record])
    if record["status"] == "rejected":
        raise typer.Exit(REJECTED_EXIT)


def approve(
    ctx: typer.Context,
    name: str,
    version: int,
    config: Path | None = typer.Option(None, "--config", "-c"),
) -> None:
    """Promote VERSION of NAME, which waits for a person's approval after its canary."""
    record = _person_decides(ctx, name, version, config, "approve")
    console.print(f"[green]promoted[/] {name}:{version} (pipeline {record['id']})")


def reject(
    ctx: typer.Context,
    name: str,
    version: int,
    config: Path | None = typer.Option(None, "--config", "-c"),
) -> None:
    """Roll back VERSION of NAME, which waits for a person's approval after its canary."""
    record = _person_decides(ctx, name, version, config, "reject")
    console.print(f"[yellow]rolled back[/] {name}:{version} (pipeline {record['id']})")


def _person_decides(
    ctx: typer.Context, name: str, version: int, config: Path | None, verdict: str
) -> PipelineRecord:
    pipeline = _pipeline(ctx, name, config)
    try:
        return pipeline.approve(version) if verdict == "approve" else pipeline.reject(version)
    finally:
        pipeline.registry.close()


def history(
    ctx: typer.Context,
    name: str,
    limit: int = typer.Option(200, "--limit"),
    as_json: bool = json_flag("the audit events"),
) -> None:
    """Everything that happened to NAME, oldest first: registrations, deployments, alerts,
    pipeline steps with their evidence."""
    with open_registry(ctx) as registry:
        events = list(reversed(registry.history(name, limit=limit)))
    if as_json:
        emit_json([e.to_dict() for e in events])
        return
    table = Table("when", "what", "version", "evidence", title=f"{name}: history")
    for ev in events:
        table.add_row(
            f"{ev.at:%Y-%m-%d %H:%M:%S}", ev.action, str(ev.version or ""), _evidence(ev.details)
        )
    console.print(table)


def _evidence(details: dict[str, Any]) -> str:
    keep = {
        k: v
        for k, v in details.items()
        if k not in ("variants", "data_fingerprint", "gates", "candidate", "champion", "challenger")
    }
    text = ", ".join(f"{k}={_short(v)}" for k, v in keep.items())
    return text[:160]


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)[:60]
    return str(value)


def _timeline(name: str, records: list[PipelineRecord]) -> None:
    for record in records:
        console.print(
            f"[bold]{name} pipeline {record['id']}[/]: {record['status']} (trigger {record['trigger'].get('kind')})"
        )
        for step in record["steps"]:
            evidence = step["evidence"]
            if step["step"] == "validate":
                gates = "; ".join(
                    f"{g['gate']} ({_short(g['value'])} vs {_short(g['bar'])}: {'pass' if g['passed'] else 'FAIL'})"
                    for g in evidence["gates"]
                )
                console.print(f"  {step['step']:<9} {step['status']:<10} {gates}")
            else:
                console.print(f"  {step['step']:<9} {step['status']:<10} {_evidence(evidence)}")


def worker(
    ctx: typer.Context,
    config: Path | None = typer.Option(
        None, "--config", "-c", help="shipyard.yaml with the retraining specs and batch jobs"
    ),
    once: bool = typer.Option(False, "--once", help="run every due job, then exit"),
    poll: float = typer.Option(2.0, "--poll", help="seconds between looks at the queue when idle"),
    monitor_every: str = typer.Option(
        "1h", "--monitor-every", help="how often each model is monitored"
    ),
) -> None:
    """Run scheduled monitoring, retraining and batch jobs. Start as many as you like."""
    from shipyard.worker import Worker

    specs = load_specs(config)
    batch_jobs = load_batch_jobs(config)
    code_dir = (config.parent if config else Path.cwd()).resolve()
    base = settings(ctx)
    if config is not None:  # the KPIs beside the models come from the same file
        base = base.model_copy(update={"config": config})
    with Worker(
        base,
        specs=specs,
        batch_jobs=batch_jobs,
        code_dir=code_dir,
        monitor_every=monitor_every,
    ) as runner:
        if once:
            runner.start_schedule()
            done = runner.run_until_idle()
            console.print(
                f"ran {len(done)} job(s): " + ", ".join(f"{j.id} {j.kind} {j.status}" for j in done)
            )
            return
        stop = _stop_on_sigterm()  # before it says it runs: a stop from then on is heard
        console.print(
            f"worker {runner.name} running ({len(specs)} model(s) with a retraining spec, "
            f"{len(batch_jobs)} scheduled batch job(s)); Ctrl-C to stop"
        )
        with contextlib.suppress(KeyboardInterrupt):
            runner.run_forever(poll=poll, stop=stop)
        console.print("stopped")


def _stop_on_sigterm() -> threading.Event:
    """SIGTERM (Kubernetes stopping the pod) lets the job in hand finish, so its lease is not
    left to run out before another worker may retry it; a second SIGTERM stops at once."""
    stop = threading.Event()

    def on_sigterm(sig: int, frame: Any) -> None:
        if stop.is_set():
            raise SystemExit(128 + sig)
        stop.set()
        err_console.print("SIGTERM: finishing the job in hand, then stopping")

    signal.signal(signal.SIGTERM, on_sigterm)
    return stop


@jobs_app.command("list")
def list_jobs(
    ctx: typer.Context,
    status: str | None = typer.Option(None, "--status", help="queued, running, done or failed"),
    model: str | None = typer.Option(None, "--model", "-m"),
    limit: int = typer.Option(50, "--limit"),
    as_json: bool = json_flag("the jobs' records"),
) -> None:
    """Jobs, newest first."""
    if status is not None and status not in ("queued", "running", "done", "failed"):
        raise InvalidInput(f"status {status!r} is not one of queued, running, done, failed")
    with open_registry(ctx) as registry:
        jobs = JobQueue(registry.database).list_jobs(status=status, model=model, limit=limit)
    if as_json:
        emit_json([j.to_dict() for j in jobs])
        return
    table = Table("id", "kind", "model", "status", "attempts", "run at", "worker", "result / error")
    for j in jobs:
        outcome = (
            j.last_error
            if j.status in ("failed", "queued") and j.last_error
            else json.dumps(j.result or {}, default=str)
        )
        table.add_row(
            str(j.id),
            j.kind,
            j.model or "",
            j.status,
            f"{j.attempts}/{j.max_attempts}",
            f"{j.run_at:%m-%d %H:%M:%S}",
            j.leased_by or "",
            (outcome or "")[:70],
        )
    console.print(table if jobs else "no jobs")

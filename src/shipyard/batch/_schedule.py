"""Batch jobs declared in `shipyard.yaml` and run on a cron schedule by the worker.

    batch:
      nightly-scores:
        model: fraud-detector              # NAME, NAME:VERSION or NAME:ALIAS
        input: data/transactions/{date}.parquet
        output: scores/{date}.parquet
        schedule: "0 2 * * *"              # cron, UTC: every night at 02:00
        chunk_rows: 100000                 # optional, as `shipyard batch` takes them

`{date}` (YYYY-MM-DD), `{time}` (HHMM) and `{slot}` (YYYYMMDDTHHMM) in input, output and
query are the scheduled time's, so each run reads and writes its own files. The worker queues
one job per scheduled time (the latest one it missed, if it was down: a nightly job does not
run five times after five nights away); a job that fails is retried and resumes from its
staged chunks.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shipyard.batch._job import DEFAULT_CHUNK_ROWS, BatchResult, score
from shipyard.core import Settings
from shipyard.core.errors import ConfigurationError
from shipyard.core.project import read_project_file
from shipyard.registry import Registry

__all__ = ["BatchJobSpec", "due_slot", "load_batch_jobs"]


class BatchJobSpec(BaseModel):
    """One scheduled batch job."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    model: str = Field(min_length=1, max_length=200)
    schedule: str = Field(description="cron expression, UTC")
    input: str | None = Field(default=None, max_length=4096)
    query: str | None = Field(default=None, max_length=100_000)
    db: str | None = Field(default=None, max_length=4096)
    key: str | None = Field(default=None, max_length=200)
    output: str = Field(min_length=1, max_length=4096)
    output_db: str | None = Field(default=None, max_length=4096)
    keep: list[str] | None = Field(default=None, max_length=1000)
    chunk_rows: int = Field(default=DEFAULT_CHUNK_ROWS, ge=1, le=10_000_000)
    overwrite: bool = False
    log: bool = True
    engine: str = Field(default="local", pattern="^(local|spark|ray)$")
    workers: int | None = Field(default=None, ge=1, le=100_000)
    cpus_per_worker: float | None = Field(default=None, gt=0, le=1024)

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        from croniter import croniter

        if not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a cron expression (e.g. '0 2 * * *')")
        return value

    def run(self, slot: datetime, settings: Settings, registry: Registry) -> BatchResult:
        """Run the job for the scheduled time `slot`."""
        fill = _placeholders(slot)
        return score(
            self.model,
            _render(self.input, fill),
            _render(self.output, fill),
            query=_render(self.query, fill),
            db=self.db,
            output_db=self.output_db,
            key=self.key,
            keep=self.keep,
            chunk_rows=self.chunk_rows,
            overwrite=self.overwrite,
            log=self.log,
            settings=settings,
            registry=registry,
            engine=self.engine,
            workers=self.workers,
            cpus_per_worker=self.cpus_per_worker,
        )


def _placeholders(slot: datetime) -> dict[str, str]:
    slot = slot.astimezone(UTC)
    return {
        "date": slot.strftime("%Y-%m-%d"),
        "time": slot.strftime("%H%M"),
        "slot": slot.strftime("%Y%m%dT%H%M"),
    }


def _render(template: str | None, fill: dict[str, str]) -> Any:
    if template is None:
        return None
    for name, value in fill.items():
        template = template.replace(f"{{{name}}}", value)
    return template


def due_slot(spec: BatchJobSpec, after: datetime, upto: datetime) -> datetime | None:
    """The latest time the schedule names in (`after`, `upto`], if any."""
    from croniter import croniter

    # get_prev is strictly before its start: a second later finds a slot at `upto` itself
    slot: datetime = croniter(spec.schedule, upto.astimezone(UTC) + timedelta(seconds=1)).get_prev(
        datetime
    )
    return slot if slot > after.astimezone(UTC) else None


def load_batch_jobs(path: Path | None = None) -> dict[str, BatchJobSpec]:
    """The `batch:` jobs of `path` (a shipyard.yaml or pyproject.toml), or of the first of
    `./shipyard.yaml`, `./shipyard.yml`, `./pyproject.toml` ([tool.shipyard]) that exists."""
    found = read_project_file(path, must_exist=False)
    return {} if found is None else _jobs(*found)


def _jobs(raw: Any, source: Path) -> dict[str, BatchJobSpec]:
    jobs = raw.get("batch") if isinstance(raw, dict) else None
    if jobs is None:
        return {}
    if not isinstance(jobs, dict):
        raise ConfigurationError(f"{source}: 'batch' must map job names to jobs")
    specs = {}
    for name, body in jobs.items():
        if not isinstance(body, dict):
            raise ConfigurationError(f"{source}: batch job {name!r} must be a mapping")
        try:
            specs[str(name)] = BatchJobSpec(name=str(name), **body)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()
            )
            raise ConfigurationError(f"{source}: batch job {name!r}: {problems}") from None
    return specs

"""The jobs table: work for background workers, leased so that no job runs twice at once and
none is lost when a worker dies.

A worker claims a due job by setting a lease (`lease_until`); while it works it renews the
lease. A job whose lease ran out (its worker crashed or was killed) is due again and another
worker takes it. On PostgreSQL the claim is `SELECT ... FOR UPDATE SKIP LOCKED`, so workers
never wait on each other; on SQLite the write lock taken at the start of every transaction
(`BEGIN IMMEDIATE`) serialises claims, which is as safe with one machine's workers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, insert, or_, select, update

from shipyard.store import tables
from shipyard.store._database import Database, utcnow

__all__ = ["Job", "JobQueue"]

J = tables.jobs


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    model: str | None
    payload: dict[str, Any]
    status: str
    run_at: datetime
    attempts: int
    max_attempts: int
    lease_until: datetime | None
    leased_by: str | None
    last_error: str | None
    result: dict[str, Any] | None
    dedup_key: str | None
    created_at: datetime
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            out[key] = value.isoformat() if isinstance(value, datetime) else value
        return out


def _aware(value: datetime | None) -> datetime | None:
    return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)


def _job(row: Any) -> Job:
    return Job(
        id=row.id, kind=row.kind, model=row.model_name, payload=row.payload or {}, status=row.status,
        run_at=_aware(row.run_at), attempts=row.attempts, max_attempts=row.max_attempts,  # type: ignore[arg-type]
        lease_until=_aware(row.lease_until), leased_by=row.leased_by, last_error=row.last_error,
        result=row.result, dedup_key=row.dedup_key, created_at=_aware(row.created_at),  # type: ignore[arg-type]
        updated_at=_aware(row.updated_at),  # type: ignore[arg-type]
    )  # fmt: skip


class JobQueue:
    """Enqueue, claim, renew, finish and list jobs."""

    def __init__(self, database: Database, clock: Callable[[], datetime] | None = None) -> None:
        self.database = database
        self.clock = clock or utcnow

    def enqueue(
        self,
        kind: str,
        *,
        model: str | None = None,
        payload: dict[str, Any] | None = None,
        run_at: datetime | None = None,
        max_attempts: int = 3,
        dedup_key: str | None = None,
    ) -> Job:
        """Add a job; with `dedup_key`, a job with that key still waiting in the queue is returned
        instead (a running one is not: a job may queue its own next run)."""
        now = self.clock()
        with self.database.transaction() as conn:
            if dedup_key is not None:
                existing = conn.execute(
                    select(J).where(J.c.dedup_key == dedup_key, J.c.status == "queued")
                ).first()
                if existing is not None:
                    return _job(existing)
            result = conn.execute(
                insert(J).values(
                    kind=kind, model_name=model, payload=payload or {}, status="queued", run_at=run_at or now,
                    attempts=0, max_attempts=max_attempts, dedup_key=dedup_key, created_at=now, updated_at=now,
                )
            )  # fmt: skip
            job_id = int(result.inserted_primary_key[0])  # type: ignore[index]
            return _job(conn.execute(select(J).where(J.c.id == job_id)).one())

    def claim(
        self,
        worker: str,
        *,
        lease: timedelta = timedelta(minutes=5),
        kinds: list[str] | None = None,
    ) -> Job | None:
        """The next due job, leased to `worker`; None when there is nothing to do.

        Due: queued with `run_at` passed, or running with an expired lease (its worker died).
        """
        now = self.clock()
        due = or_(
            and_(J.c.status == "queued", J.c.run_at <= now),
            and_(J.c.status == "running", J.c.lease_until < now),
        )
        query = select(J).where(due).order_by(J.c.run_at, J.c.id).limit(1)
        if kinds:
            query = query.where(J.c.kind.in_(kinds))
        with self.database.transaction() as conn:
            if conn.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            row = conn.execute(query).first()
            if row is None:
                return None
            conn.execute(
                update(J)
                .where(J.c.id == row.id)
                .values(
                    status="running",
                    lease_until=now + lease,
                    leased_by=worker,
                    attempts=row.attempts + 1,
                    updated_at=now,
                )
            )
            return _job(conn.execute(select(J).where(J.c.id == row.id)).one())

    def renew(self, job: Job, worker: str, lease: timedelta = timedelta(minutes=5)) -> bool:
        """Extend the lease of a job this worker holds; False if it lost it (and must stop)."""
        with self.database.transaction() as conn:
            result = conn.execute(
                update(J)
                .where(J.c.id == job.id, J.c.leased_by == worker, J.c.status == "running")
                .values(lease_until=self.clock() + lease, updated_at=self.clock())
            )
            return bool(result.rowcount)

    def complete(self, job: Job, worker: str, result: dict[str, Any] | None = None) -> bool:
        with self.database.transaction() as conn:
            done = conn.execute(
                update(J)
                .where(J.c.id == job.id, J.c.leased_by == worker, J.c.status == "running")
                .values(
                    status="done", result=result or {}, lease_until=None, updated_at=self.clock()
                )
            )
            return bool(done.rowcount)

    def fail(
        self, job: Job, worker: str, error: str, *, backoff: timedelta = timedelta(seconds=30)
    ) -> str:
        """Record a failure: queued again after a backoff, or `failed` after the last attempt."""
        now = self.clock()
        final = job.attempts >= job.max_attempts
        with self.database.transaction() as conn:
            conn.execute(
                update(J)
                .where(J.c.id == job.id, J.c.leased_by == worker)
                .values(
                    status="failed" if final else "queued",
                    run_at=now if final else now + backoff * 2 ** (job.attempts - 1),
                    lease_until=None, last_error=error[:4000], updated_at=now,
                )
            )  # fmt: skip
        return "failed" if final else "queued"

    def get(self, job_id: int) -> Job | None:
        with self.database.transaction() as conn:
            row = conn.execute(select(J).where(J.c.id == job_id)).first()
        return None if row is None else _job(row)

    def list_jobs(
        self, *, status: str | None = None, model: str | None = None, limit: int = 100
    ) -> list[Job]:
        query = select(J).order_by(J.c.id.desc()).limit(limit)
        if status is not None:
            query = query.where(J.c.status == status)
        if model is not None:
            query = query.where(J.c.model_name == model)
        return self.database.read(lambda conn: [_job(r) for r in conn.execute(query)])

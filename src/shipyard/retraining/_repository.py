"""SQL for pipeline records; functions take the caller's connection."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from shipyard.retraining._records import ACTIVE, PipelineRecord, Trigger
from shipyard.store import tables, utcnow

__all__ = ["ACTIVE", "claim", "count_since", "create", "get", "latest", "list_for", "save"]

P = tables.pipelines


def _aware(value: datetime | None) -> datetime | None:
    return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)


def _record(row: Any) -> PipelineRecord:
    return {
        "id": row.id,
        "model": row.model_name,
        "status": row.status,
        "trigger": dict(row.trigger or {}),  # type: ignore[typeddict-item]  # stored JSON
        "champion_version": row.champion_version,
        "candidate_version": row.candidate_version,
        "run_id": row.run_id,
        "steps": list(row.steps or []),
        "created_at": _aware(row.created_at),
        "updated_at": _aware(row.updated_at),
    }


def create(
    conn: Connection,
    model: str,
    trigger: Trigger,
    champion: int | None,
    now: datetime | None = None,
) -> PipelineRecord:
    now = now or utcnow()
    result = conn.execute(
        insert(P).values(
            model_name=model,
            status="training",
            trigger=trigger,
            champion_version=champion,
            steps=[],
            created_at=now,
            updated_at=now,
        )
    )
    found = get(conn, int(result.inserted_primary_key[0]))  # type: ignore[index]
    assert found is not None  # inserted in this transaction
    return found


def get(conn: Connection, pipeline_id: int) -> PipelineRecord | None:
    row = conn.execute(select(P).where(P.c.id == pipeline_id)).first()
    return None if row is None else _record(row)


def save(conn: Connection, record: PipelineRecord) -> None:
    conn.execute(
        update(P)
        .where(P.c.id == record["id"])
        .values(
            status=record["status"],
            candidate_version=record["candidate_version"],
            run_id=record["run_id"],
            steps=record["steps"],
            updated_at=utcnow(),
        )
    )


def claim(conn: Connection, pipeline_id: int, statuses: tuple[str, ...], status: str) -> bool:
    """Move the pipeline to `status` if it is in one of `statuses` now; False when another
    process moved it first (one decision per pipeline, whoever asks at the same time)."""
    result = conn.execute(
        update(P)
        .where(P.c.id == pipeline_id, P.c.status.in_(statuses))
        .values(status=status, updated_at=utcnow())
    )
    return bool(result.rowcount)


def latest(
    conn: Connection, model: str, statuses: tuple[str, ...] | None = None
) -> PipelineRecord | None:
    query = select(P).where(P.c.model_name == model).order_by(P.c.id.desc()).limit(1)
    if statuses is not None:
        query = query.where(P.c.status.in_(statuses))
    row = conn.execute(query).first()
    return None if row is None else _record(row)


def list_for(conn: Connection, model: str, limit: int = 50) -> list[PipelineRecord]:
    rows = conn.execute(
        select(P).where(P.c.model_name == model).order_by(P.c.id.desc()).limit(limit)
    )
    return [_record(r) for r in rows]


def awaiting_approval(conn: Connection, model: str | None = None) -> list[PipelineRecord]:
    query = select(P).where(P.c.status == "awaiting_approval").order_by(P.c.id.desc()).limit(200)
    if model is not None:
        query = query.where(P.c.model_name == model)
    return [_record(r) for r in conn.execute(query)]


def handled_alerts(conn: Connection, model: str) -> set[int]:
    """Alerts some pipeline of `model` was started for (each alert triggers one retrain)."""
    rows = conn.execute(select(P.c.trigger).where(P.c.model_name == model))
    return {int(a) for (trigger,) in rows for a in (trigger or {}).get("alerts", [])}


def count_since(conn: Connection, model: str, since: datetime) -> int:
    return int(
        conn.execute(
            select(func.count())
            .select_from(P)
            .where(P.c.model_name == model, P.c.created_at >= since)
        ).scalar_one()
    )

"""SQL for feature views and materialization runs; functions take the caller's connection."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypedDict

from sqlalchemy import Connection, func, insert, select, update

from shipyard.store import tables, utcnow

__all__ = [
    "MaterializationRun",
    "StoredView",
    "add_run",
    "add_view",
    "describe_view",
    "last_run",
    "latest_views",
    "runs",
    "view",
    "view_versions",
]

V = tables.feature_views
M = tables.feature_materializations


class StoredView(TypedDict):
    """One version of a feature view as applied: its spec (`FeatureView.spec()`)."""

    name: str
    version: int
    spec: dict[str, Any]
    fingerprint: str
    origin: str
    created_at: datetime | None
    created_by: str


class MaterializationRun(TypedDict):
    """One materialization of a view version into an online store."""

    id: int
    view: str
    version: int
    store: str
    mode: str  # full | incremental | range
    start: datetime | None
    end: datetime | None
    watermark: datetime | None
    rows_read: int
    entities_written: int
    newest_event: datetime | None
    profile: dict[str, Any] | None
    files: dict[str, Any] | None
    layout: dict[str, Any] | None
    source_state: dict[str, Any] | None
    started_at: datetime | None
    finished_at: datetime | None
    created_by: str


def _aware(value: datetime | None) -> datetime | None:
    return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)


def _view(row: Any) -> StoredView:
    return {
        "name": row.name,
        "version": row.version,
        "spec": row.spec,
        "fingerprint": row.fingerprint,
        "origin": row.origin,
        "created_at": _aware(row.created_at),
        "created_by": row.created_by,
    }


def add_view(
    conn: Connection, name: str, spec: dict[str, Any], fingerprint: str, origin: str, actor: str
) -> int:
    """Store a new version of `name` (the next number) and return it."""
    latest = conn.execute(select(func.max(V.c.version)).where(V.c.name == name)).scalar()
    version = int(latest or 0) + 1
    conn.execute(
        insert(V).values(
            name=name,
            version=version,
            spec=spec,
            fingerprint=fingerprint,
            origin=origin[:1024],
            created_at=utcnow(),
            created_by=actor,
        )
    )
    return version


def view(conn: Connection, name: str, version: int | None = None) -> StoredView | None:
    query = select(V).where(V.c.name == name)
    query = (
        query.where(V.c.version == version)
        if version is not None
        else query.order_by(V.c.version.desc()).limit(1)
    )
    row = conn.execute(query).first()
    return None if row is None else _view(row)


def view_versions(conn: Connection, name: str) -> list[StoredView]:
    rows = conn.execute(select(V).where(V.c.name == name).order_by(V.c.version))
    return [_view(r) for r in rows]


def latest_views(conn: Connection) -> list[StoredView]:
    newest = select(V.c.name, func.max(V.c.version).label("version")).group_by(V.c.name).subquery()
    rows = conn.execute(
        select(V)
        .join(newest, (V.c.name == newest.c.name) & (V.c.version == newest.c.version))
        .order_by(V.c.name)
    )
    return [_view(r) for r in rows]


def _run(row: Any) -> MaterializationRun:
    return {
        "id": row.id,
        "view": row.view,
        "version": row.version,
        "store": row.store,
        "mode": row.mode,
        "start": _aware(row.start),
        "end": _aware(row.end),
        "watermark": _aware(row.watermark),
        "rows_read": row.rows_read,
        "entities_written": row.entities_written,
        "newest_event": _aware(row.newest_event),
        "profile": row.profile,
        "files": row.files,
        "layout": row.layout,
        "source_state": row.source_state,
        "started_at": _aware(row.started_at),
        "finished_at": _aware(row.finished_at),
        "created_by": row.created_by,
    }


def add_run(conn: Connection, **values: Any) -> int:
    result = conn.execute(insert(M).values(**values))
    return int(result.inserted_primary_key[0])  # type: ignore[index]


def last_run(conn: Connection, view: str, version: int, store: str) -> MaterializationRun | None:
    row = conn.execute(
        select(M)
        .where(M.c.view == view, M.c.version == version, M.c.store == store)
        .order_by(M.c.id.desc())
        .limit(1)
    ).first()
    return None if row is None else _run(row)


def runs(conn: Connection, view: str, limit: int = 20) -> list[MaterializationRun]:
    rows = conn.execute(select(M).where(M.c.view == view).order_by(M.c.id.desc()).limit(limit))
    return [_run(r) for r in rows]


def describe_view(conn: Connection, name: str, version: int, spec: dict[str, Any]) -> None:
    """Replace a version's spec by one that differs only in owner, descriptions and tags."""
    conn.execute(update(V).where(V.c.name == name, V.c.version == version).values(spec=spec))

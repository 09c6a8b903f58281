"""SQL for API keys; every function takes the connection of the caller's transaction."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Row, insert, select, update

from shipyard.access._keys import ApiKey
from shipyard.store import tables, utcnow

__all__ = ["all_keys", "end_sessions", "get_key", "insert_key", "list_keys", "revoke_key"]

K = tables.api_keys


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _key(row: Row[Any]) -> ApiKey:
    created = _aware(row.created_at)
    assert created is not None
    return ApiKey(
        id=row.id,
        name=row.name,
        scope=row.scope,
        model=row.model_name,
        rate_per_second=row.rate_per_second,
        burst=row.burst,
        created_at=created,
        created_by=row.created_by,
        revoked_at=_aware(row.revoked_at),
        feature_views=tuple(row.feature_views) if row.feature_views is not None else None,
        sessions_after=_aware(row.sessions_after),
    )


def insert_key(conn: Connection, key: ApiKey, secret_sha256: str) -> None:
    conn.execute(
        insert(K).values(
            id=key.id,
            name=key.name,
            secret_sha256=secret_sha256,
            scope=key.scope,
            model_name=key.model,
            rate_per_second=key.rate_per_second,
            burst=key.burst,
            created_at=key.created_at,
            created_by=key.created_by,
            feature_views=list(key.feature_views) if key.feature_views is not None else None,
        )
    )


def get_key(conn: Connection, key_id: str) -> tuple[ApiKey, str] | None:
    """The key and its secret's SHA-256, or None."""
    row = conn.execute(select(K).where(K.c.id == key_id)).first()
    return None if row is None else (_key(row), row.secret_sha256)


def all_keys(conn: Connection) -> dict[str, tuple[ApiKey, str]]:
    """Every key with its secret's SHA-256, by id."""
    return {row.id: (_key(row), row.secret_sha256) for row in conn.execute(select(K))}


def list_keys(conn: Connection, include_revoked: bool) -> list[ApiKey]:
    query = select(K).order_by(K.c.created_at, K.c.id)
    if not include_revoked:
        query = query.where(K.c.revoked_at.is_(None))
    return [_key(r) for r in conn.execute(query)]


def revoke_key(conn: Connection, key_id: str, actor: str) -> bool:
    """Revoke an active key; False when it was already revoked."""
    result = conn.execute(
        update(K)
        .where(K.c.id == key_id, K.c.revoked_at.is_(None))
        .values(revoked_at=utcnow(), revoked_by=actor)
    )
    return bool(result.rowcount)


def end_sessions(conn: Connection, key_id: str, at: datetime) -> None:
    """Every dashboard session of `key_id` issued before `at` is over."""
    conn.execute(update(K).where(K.c.id == key_id).values(sessions_after=at))

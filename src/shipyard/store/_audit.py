"""The audit trail: one append-only table every domain records its changes in."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, insert

from shipyard.store import tables
from shipyard.store._database import utcnow

__all__ = ["record_audit"]


def record_audit(
    conn: Connection,
    actor: str,
    action: str,
    model_name: str | None,
    version: int | None,
    details: dict[str, Any],
) -> None:
    """Append one event inside the caller's transaction, so it lands only if the change does."""
    conn.execute(
        insert(tables.audit_events).values(
            at=utcnow(),
            actor=actor,
            action=action,
            model_name=model_name,
            version=version,
            details=details,
        )
    )

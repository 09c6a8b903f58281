"""SQL for uploaded edge predictions (`uploaded_predictions`); every function takes the
connection of the caller's transaction."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from shipyard.store import tables

__all__ = ["claim", "find", "owners"]

U = tables.uploaded_predictions
_KEY = ["prediction_id", "model_name"]
_CHUNK = 1_000  # ids per IN (...): well under every driver's limit on bound values


def _chunks(ids: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)  # SQLite drops the zone


def claim(
    conn: Connection,
    model: str,
    version: int,
    device_id: str,
    rows: Sequence[tuple[str, datetime]],
    at: datetime,
) -> set[str]:
    """Record `rows` (prediction id, when the device made it) as uploaded for `model`, skipping
    ids it has already; returns the ids recorded now.

    `INSERT ... ON CONFLICT DO NOTHING`: on PostgreSQL an id another transaction holds
    uncommitted makes this one wait for it, then skip it if it committed. The rows go in in
    id order, so two overlapping uploads wait on each other's rows in the same order and never
    deadlock.
    """
    values: list[dict[str, Any]] = [
        {"prediction_id": pid, "model_name": model, "version": version,
         "device_id": device_id, "ts": ts, "uploaded_at": at}
        for pid, ts in sorted(rows)
    ]  # fmt: skip
    if not values:
        return set()
    statement: Any
    if conn.dialect.name == "postgresql":
        statement = pg_insert(U).on_conflict_do_nothing(index_elements=_KEY)
    elif conn.dialect.name == "sqlite":
        statement = sqlite_insert(U).on_conflict_do_nothing(index_elements=_KEY)
    else:  # no portable upsert: skip what is there (the transaction serialises the rest)
        present = set(owners(conn, model, [v["prediction_id"] for v in values]))
        values = [v for v in values if v["prediction_id"] not in present]
        if values:
            conn.execute(insert(U), values)
        return {v["prediction_id"] for v in values}
    result = conn.execute(statement.returning(U.c.prediction_id), values)
    return {row[0] for row in result}


def owners(conn: Connection, model: str, ids: Sequence[str]) -> dict[str, str]:
    """The device that uploaded each of `ids` that `model` has."""
    found: dict[str, str] = {}
    for chunk in _chunks(ids):
        rows = conn.execute(
            select(U.c.prediction_id, U.c.device_id).where(
                U.c.model_name == model, U.c.prediction_id.in_(chunk)
            )
        )
        found.update({row.prediction_id: row.device_id for row in rows})
    return found


def find(conn: Connection, ids: Sequence[str]) -> dict[str, list[tuple[str, int, datetime]]]:
    """The uploaded predictions with each of `ids`: (model, version, when it was made), one per
    model that has the id."""
    found: dict[str, list[tuple[str, int, datetime]]] = {}
    for chunk in _chunks(ids):
        rows = conn.execute(
            select(U.c.prediction_id, U.c.model_name, U.c.version, U.c.ts)
            .where(U.c.prediction_id.in_(chunk))
            .order_by(U.c.prediction_id, U.c.model_name)
        )
        for row in rows:
            found.setdefault(row.prediction_id, []).append(
                (row.model_name, int(row.version), _aware(row.ts))
            )
    return found

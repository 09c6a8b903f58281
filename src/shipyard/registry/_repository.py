"""SQL for the registry's tables; every function takes the connection of the caller's transaction."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Row, delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from shipyard.core import Signature
from shipyard.registry._deployments import Deployment, Variant
from shipyard.registry._records import AuditEvent, Model, ModelVersion
from shipyard.store import record_audit as add_audit
from shipyard.store import tables, utcnow

__all__ = [
    "add_audit",
    "aliases_of",
    "allocate_version",
    "audit_trail",
    "current_deployment",
    "current_deployments",
    "delete_model",
    "delete_model_if_empty",
    "delete_version",
    "deployment_at",
    "deployment_history",
    "ensure_model",
    "finalise_version",
    "get_alias",
    "get_model",
    "get_version",
    "insert_deployment",
    "insert_pending_version",
    "list_models",
    "list_versions",
    "pending_version",
    "pending_versions",
    "release_version_number",
    "remove_alias",
    "set_alias",
    "set_claim",
    "set_status",
]

M, V, A, E = tables.models, tables.model_versions, tables.aliases, tables.audit_events
D = tables.deployments


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def get_model(conn: Connection, name: str) -> Model | None:
    row = conn.execute(select(M).where(M.c.name == name)).first()
    if row is None:
        return None
    count = conn.execute(
        select(func.count()).select_from(V).where(V.c.model_name == name, V.c.status != "pending")
    ).scalar_one()
    return _model(row, int(count), aliases_of(conn, name))


def _model(row: Row[Any], count: int, aliases: dict[str, int]) -> Model:
    return Model(
        name=row.name,
        description=row.description,
        created_at=_aware(row.created_at),
        created_by=row.created_by,
        latest_version=row.latest_version or None,
        version_count=count,
        aliases=aliases,
    )


def list_models(conn: Connection) -> list[Model]:
    counts: dict[str, int] = dict(
        conn.execute(
            select(V.c.model_name, func.count())
            .where(V.c.status != "pending")
            .group_by(V.c.model_name)
        ).all()
    )
    all_aliases: dict[str, dict[str, int]] = {}
    for row in conn.execute(select(A.c.model_name, A.c.alias, A.c.version)):
        all_aliases.setdefault(row.model_name, {})[row.alias] = row.version
    rows = conn.execute(select(M).order_by(M.c.name)).all()
    return [_model(r, int(counts.get(r.name, 0)), all_aliases.get(r.name, {})) for r in rows]


def ensure_model(conn: Connection, name: str, actor: str, description: str) -> bool:
    """Create the model row if missing; True when it was created.

    `ON CONFLICT DO NOTHING` lets two first registrations of one name race safely.
    """
    values = {
        "name": name,
        "description": description,
        "created_at": utcnow(),
        "created_by": actor,
        "latest_version": 0,
        "next_version": 1,
    }
    if conn.dialect.name == "postgresql":
        statement: Any = (
            pg_insert(M).values(**values).on_conflict_do_nothing(index_elements=["name"])
        )
    elif conn.dialect.name == "sqlite":
        statement = (
            sqlite_insert(M).values(**values).on_conflict_do_nothing(index_elements=["name"])
        )
    else:
        if conn.execute(select(M.c.name).where(M.c.name == name)).first() is not None:
            return False
        statement = insert(M).values(**values)
    return bool(conn.execute(statement).rowcount)


def allocate_version(conn: Connection, name: str) -> int:
    """Hand out the next version number; the row lock makes concurrent registrations queue."""
    current = conn.execute(
        select(M.c.next_version).where(M.c.name == name).with_for_update()
    ).scalar_one()
    conn.execute(update(M).where(M.c.name == name).values(next_version=current + 1))
    return int(current)


def insert_pending_version(
    conn: Connection, name: str, version: int, actor: str, claim: dict[str, Any]
) -> None:
    """A version being written: invisible to readers; `claim` says which process writes it
    (kept in `tags` until the version is finalised, which replaces them)."""
    conn.execute(
        insert(V).values(
            model_name=name,
            version=version,
            status="pending",
            created_at=utcnow(),
            created_by=actor,
            description="",
            purpose="",
            flavour="",
            runtime="",
            task="",
            metrics={},
            params={},
            tags={"registering": claim},
            features=[],
            bundle_path="",
            metadata_sha256="",
            size_bytes=0,
        )
    )


def finalise_version(conn: Connection, name: str, version: int, values: dict[str, Any]) -> None:
    """Mark a fully written version ready and move the model's `latest` pointer to it."""
    conn.execute(
        update(V)
        .where(V.c.model_name == name, V.c.version == version)
        .values(status="ready", **values)
    )
    conn.execute(
        update(M)
        .where(M.c.name == name, M.c.latest_version < version)
        .values(latest_version=version)
    )


def delete_version(conn: Connection, name: str, version: int) -> None:
    conn.execute(delete(V).where(V.c.model_name == name, V.c.version == version))


def release_version_number(conn: Connection, name: str, version: int) -> None:
    """Hand `version` out again if no later one was handed out since (a failed registration
    burns no number)."""
    conn.execute(
        update(M)
        .where(M.c.name == name, M.c.next_version == version + 1)
        .values(next_version=version)
    )


def delete_model_if_empty(conn: Connection, name: str) -> bool:
    """Remove a model that has no versions at all (not even one being written) and was never
    deployed; True when it was removed."""
    has_version = conn.execute(select(V.c.version).where(V.c.model_name == name).limit(1)).first()
    deployed = conn.execute(select(D.c.id).where(D.c.model_name == name).limit(1)).first()
    if has_version is not None or deployed is not None:
        return False
    return bool(conn.execute(delete(M).where(M.c.name == name)).rowcount)


def delete_model(conn: Connection, name: str) -> None:
    """Remove a model and everything recorded under it, except the audit trail."""
    conn.execute(delete(A).where(A.c.model_name == name))
    for table in (
        tables.alerts,
        tables.monitoring_snapshots,
        tables.pipelines,
        tables.deployments,
        tables.uploaded_predictions,  # its logs go too: uploaded again, they are logged again
    ):
        conn.execute(delete(table).where(table.c.model_name == name))
    conn.execute(delete(tables.alert_rules).where(tables.alert_rules.c.model_name == name))
    conn.execute(delete(V).where(V.c.model_name == name))
    conn.execute(delete(M).where(M.c.name == name))


def pending_version(
    conn: Connection, name: str, version: int
) -> tuple[datetime, dict[str, Any]] | None:
    """A version still being written, locked for the caller's transaction: started, claim."""
    row = conn.execute(
        select(V.c.created_at, V.c.tags)
        .where(V.c.model_name == name, V.c.version == version, V.c.status == "pending")
        .with_for_update()
    ).first()
    if row is None:
        return None
    return _aware(row.created_at), (row.tags or {}).get("registering") or {}


def set_claim(conn: Connection, name: str, version: int, claim: dict[str, Any]) -> None:
    """Say which process now answers for a pending version."""
    conn.execute(
        update(V)
        .where(V.c.model_name == name, V.c.version == version, V.c.status == "pending")
        .values(tags={"registering": claim})
    )


def pending_versions(conn: Connection) -> list[tuple[str, int, datetime, dict[str, Any]]]:
    """Versions still being written (or abandoned half-way): name, version, started, claim."""
    rows = conn.execute(
        select(V.c.model_name, V.c.version, V.c.created_at, V.c.tags).where(V.c.status == "pending")
    )
    return [
        (r.model_name, r.version, _aware(r.created_at), (r.tags or {}).get("registering") or {})
        for r in rows
    ]


def set_status(conn: Connection, name: str, version: int, status: str) -> None:
    conn.execute(
        update(V).where(V.c.model_name == name, V.c.version == version).values(status=status)
    )


def get_version(conn: Connection, name: str, version: int) -> tuple[ModelVersion, str] | None:
    """The version and the SHA-256 of its metadata.json, or None (pending versions too)."""
    row = conn.execute(
        select(V).where(V.c.model_name == name, V.c.version == version, V.c.status != "pending")
    ).first()
    if row is None:
        return None
    aliases = tuple(sorted(a for a, v in aliases_of(conn, name).items() if v == version))
    return _version(row, aliases), row.metadata_sha256


def list_versions(conn: Connection, name: str) -> list[ModelVersion]:
    by_version: dict[int, list[str]] = {}
    for alias, version in aliases_of(conn, name).items():
        by_version.setdefault(version, []).append(alias)
    rows = conn.execute(
        select(V).where(V.c.model_name == name, V.c.status != "pending").order_by(V.c.version)
    ).all()
    return [_version(r, tuple(sorted(by_version.get(r.version, [])))) for r in rows]


def _version(row: Row[Any], aliases: tuple[str, ...]) -> ModelVersion:
    return ModelVersion(
        name=row.model_name,
        version=row.version,
        status=row.status,
        created_at=_aware(row.created_at),
        created_by=row.created_by,
        description=row.description,
        purpose=row.purpose,
        flavour=row.flavour,
        runtime=row.runtime,
        task=row.task,
        threshold=row.threshold,
        signature=Signature.from_dict(row.signature or {"columns": []}),
        metrics=row.metrics or {},
        params=row.params or {},
        tags=row.tags or {},
        features=row.features or [],
        data_fingerprint=row.data_fingerprint,
        bundle_path=row.bundle_path,
        size_bytes=row.size_bytes,
        run_id=row.run_id,
        lineage=row.lineage,
        importance=row.importance,
        aliases=aliases,
    )


def aliases_of(conn: Connection, name: str) -> dict[str, int]:
    rows = conn.execute(
        select(A.c.alias, A.c.version).where(A.c.model_name == name).order_by(A.c.alias)
    )
    return {r.alias: r.version for r in rows}


def get_alias(conn: Connection, name: str, alias: str) -> int | None:
    return conn.execute(
        select(A.c.version).where(A.c.model_name == name, A.c.alias == alias)
    ).scalar_one_or_none()


def set_alias(conn: Connection, name: str, alias: str, version: int, actor: str) -> int | None:
    """Point `alias` at `version`; returns where it pointed before."""
    previous = conn.execute(
        select(A.c.version).where(A.c.model_name == name, A.c.alias == alias).with_for_update()
    ).scalar_one_or_none()
    values = {"version": version, "updated_at": utcnow(), "updated_by": actor}
    if previous is None:
        conn.execute(insert(A).values(model_name=name, alias=alias, **values))
    else:
        conn.execute(update(A).where(A.c.model_name == name, A.c.alias == alias).values(**values))
    return previous


def remove_alias(conn: Connection, name: str, alias: str) -> int | None:
    previous = get_alias(conn, name, alias)
    conn.execute(delete(A).where(A.c.model_name == name, A.c.alias == alias))
    return previous


def audit_trail(conn: Connection, name: str | None = None, limit: int = 500) -> list[AuditEvent]:
    query = select(E).order_by(E.c.id.desc()).limit(limit)
    if name is not None:
        query = query.where(E.c.model_name == name)
    return [
        AuditEvent(r.id, _aware(r.at), r.actor, r.action, r.model_name, r.version, r.details or {})
        for r in conn.execute(query)
    ]


def _deployment(row: Row[Any]) -> Deployment:
    return Deployment(
        name=row.model_name,
        revision=row.revision,
        variants=tuple(Variant.from_dict(v) for v in row.variants),
        routing_field=row.routing_field,
        previous_revision=row.previous_revision,
        created_at=_aware(row.created_at),
        created_by=row.created_by,
        reason=row.reason,
    )


def current_deployment(conn: Connection, name: str, *, lock: bool = False) -> Deployment | None:
    query = select(D).where(D.c.model_name == name).order_by(D.c.revision.desc()).limit(1)
    if lock:
        # serialise deploys of one model: lock the model row (the deployment may not exist yet)
        conn.execute(select(M.c.name).where(M.c.name == name).with_for_update())
    row = conn.execute(query).first()
    return None if row is None else _deployment(row)


def deployment_at(conn: Connection, name: str, revision: int) -> Deployment | None:
    row = conn.execute(select(D).where(D.c.model_name == name, D.c.revision == revision)).first()
    return None if row is None else _deployment(row)


def deployment_history(conn: Connection, name: str, limit: int) -> list[Deployment]:
    rows = conn.execute(
        select(D).where(D.c.model_name == name).order_by(D.c.revision.desc()).limit(limit)
    )
    return [_deployment(r) for r in rows]


def current_deployments(conn: Connection) -> dict[str, Deployment]:
    """The live deployment of every model that has one, in one query."""
    latest = (
        select(D.c.model_name, func.max(D.c.revision).label("revision"))
        .group_by(D.c.model_name)
        .subquery()
    )
    rows = conn.execute(
        select(D).join(
            latest,
            (D.c.model_name == latest.c.model_name) & (D.c.revision == latest.c.revision),
        )
    )
    return {r.model_name: _deployment(r) for r in rows}


def insert_deployment(
    conn: Connection,
    name: str,
    revision: int,
    variants: tuple[Variant, ...],
    routing_field: str | None,
    previous_revision: int | None,
    actor: str,
    reason: str,
) -> Deployment:
    created_at = utcnow()
    conn.execute(
        insert(D).values(
            model_name=name,
            revision=revision,
            variants=[v.to_dict() for v in variants],
            routing_field=routing_field,
            previous_revision=previous_revision,
            created_at=created_at,
            created_by=actor,
            reason=reason,
        )
    )
    return Deployment(
        name, revision, variants, routing_field, previous_revision, created_at, actor, reason
    )

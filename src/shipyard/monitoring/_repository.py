"""SQL for monitoring snapshots, alert rules and alerts; functions take the caller's connection."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from shipyard.monitoring._report import Alert, AlertRule, ReportRecord
from shipyard.store import tables, utcnow

__all__ = [
    "add_rule",
    "alerts",
    "delete_rule",
    "feature_health",
    "feature_view_exists",
    "get_alert",
    "latest_snapshot",
    "model_exists",
    "model_tasks",
    "open_alert",
    "rules",
    "save_alert",
    "save_snapshot",
    "snapshots",
]

S, R, A = tables.monitoring_snapshots, tables.alert_rules, tables.alerts


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _moment(value: datetime) -> datetime:
    """A NOT NULL timestamp column, as an aware datetime."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def save_snapshot(
    conn: Connection,
    model: str,
    window: str,
    start: datetime,
    end: datetime,
    summary: ReportRecord,
) -> int:
    # one snapshot per model, window length and period: a re-run replaces it
    conn.execute(
        delete(S).where(S.c.model_name == model, S.c.window == window, S.c.period_end == end)
    )
    result = conn.execute(
        insert(S).values(
            model_name=model,
            window=window,
            period_start=start,
            period_end=end,
            computed_at=utcnow(),
            summary=summary,
        )
    )
    return int(result.inserted_primary_key[0])  # type: ignore[index]


def latest_snapshot(conn: Connection, model: str, window: str | None = None) -> ReportRecord | None:
    query = (
        select(S)
        .where(S.c.model_name == model)
        .order_by(S.c.period_end.desc(), S.c.id.desc())
        .limit(1)
    )
    if window is not None:
        query = query.where(S.c.window == window)
    row = conn.execute(query).first()
    if row is None:
        return None
    stored: ReportRecord = row.summary
    return stored


def newest_snapshot(conn: Connection, model: str) -> dict[str, Any] | None:
    """The model's newest snapshot of any window length."""
    row = conn.execute(
        select(S.c.window, S.c.period_end, S.c.summary)
        .where(S.c.model_name == model)
        .order_by(S.c.computed_at.desc(), S.c.period_end.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    return {"window": row.window, "period_end": _aware(row.period_end), "summary": row.summary}


def snapshots(conn: Connection, model: str, window: str, limit: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(S.c.period_start, S.c.period_end, S.c.computed_at, S.c.summary)
        .where(S.c.model_name == model, S.c.window == window)
        .order_by(S.c.period_end.desc())
        .limit(limit)
    )
    return [
        {
            "period_start": _aware(r.period_start),
            "period_end": _aware(r.period_end),
            "summary": r.summary,
        }
        for r in rows
    ]


def model_exists(conn: Connection, model: str) -> bool:
    models = tables.models
    return conn.execute(select(models.c.name).where(models.c.name == model)).first() is not None


def model_tasks(conn: Connection, model: str) -> set[str]:
    """The tasks (binary, multiclass, regression) of the model's registered versions."""
    versions = tables.model_versions
    rows = conn.execute(
        select(versions.c.task).where(versions.c.model_name == model).distinct()
    ).scalars()
    return {t for t in rows if t}


def add_rule(
    conn: Connection, model: str, expression: str, severity: str, webhooks: list[str], actor: str
) -> int:
    result = conn.execute(
        insert(R).values(
            model_name=model, expression=expression, severity=severity, webhooks=webhooks, enabled=1,
            created_at=utcnow(), created_by=actor,
        )
    )  # fmt: skip
    return int(result.inserted_primary_key[0])  # type: ignore[index]


def rules(
    conn: Connection, model: str | None = None, rule_id: int | None = None
) -> list[AlertRule]:
    query = select(R).order_by(R.c.id)
    if model is not None:
        query = query.where(R.c.model_name == model)
    if rule_id is not None:
        query = query.where(R.c.id == rule_id)
    return [
        {
            "id": r.id,
            "model": r.model_name,
            "expression": r.expression,
            "severity": r.severity,
            "webhooks": list(r.webhooks or []),
            "enabled": bool(r.enabled),
            "created_at": _aware(r.created_at),
            "created_by": r.created_by,
        }
        for r in conn.execute(query)
    ]


def delete_rule(conn: Connection, rule_id: int) -> str | None:
    """Delete a rule (its alerts go with it); returns its model, None if there was no rule."""
    model = conn.execute(select(R.c.model_name).where(R.c.id == rule_id)).scalar()
    if model is None:
        return None
    conn.execute(delete(R).where(R.c.id == rule_id))
    return str(model)


def _alert(row: Any) -> Alert:
    return {
        "id": row.id,
        "rule_id": row.rule_id,
        "model": row.model_name,
        "version": row.version,
        "status": row.status,
        "opened_at": _moment(row.opened_at),
        "last_seen_at": _moment(row.last_seen_at),
        "resolved_at": _aware(row.resolved_at),
        "value": row.value,
        "evidence": row.evidence or {},
        "deliveries": list(row.deliveries or []),
    }


def open_alert(conn: Connection, rule_id: int, version: int | None) -> Alert | None:
    row = conn.execute(
        select(A)
        .where(A.c.rule_id == rule_id, A.c.version == version, A.c.status == "firing")
        .with_for_update()
    ).first()
    return None if row is None else _alert(row)


def get_alert(conn: Connection, alert_id: int) -> Alert | None:
    row = conn.execute(select(A).where(A.c.id == alert_id)).first()
    return None if row is None else _alert(row)


def save_alert(conn: Connection, alert: Alert) -> int:
    values = {
        "rule_id": alert["rule_id"],
        "model_name": alert["model"],
        "version": alert["version"],
        "status": alert["status"],
        "opened_at": alert["opened_at"],
        "last_seen_at": alert["last_seen_at"],
        "resolved_at": alert.get("resolved_at"),
        "value": alert.get("value"),
        "evidence": alert.get("evidence", {}),
        "deliveries": alert.get("deliveries", []),
    }
    alert_id = alert.get("id")
    if alert_id is None:
        return int(conn.execute(insert(A).values(**values)).inserted_primary_key[0])  # type: ignore[index]
    conn.execute(update(A).where(A.c.id == alert_id).values(**values))
    return alert_id


def alerts(
    conn: Connection, model: str | None = None, status: str | None = None, limit: int = 200
) -> list[Alert]:
    query = select(A).order_by(A.c.id.desc()).limit(limit)
    if model is not None:
        query = query.where(A.c.model_name == model)
    if status is not None:
        query = query.where(A.c.status == status)
    return [_alert(r) for r in conn.execute(query)]


def feature_health(conn: Connection, views: list[str]) -> dict[str, dict[str, Any]]:
    """Per feature view: its latest materialization (any store) and its TTL."""
    runs, specs = tables.feature_materializations, tables.feature_views
    out: dict[str, dict[str, Any]] = {}
    for view in views:
        run = conn.execute(
            select(runs).where(runs.c.view == view).order_by(runs.c.id.desc()).limit(1)
        ).first()
        spec = conn.execute(
            select(specs.c.spec)
            .where(specs.c.name == view)
            .order_by(specs.c.version.desc())
            .limit(1)
        ).scalar()
        profile = (run.profile or {}) if run is not None else {}
        out[view] = {
            "version": run.version if run is not None else None,
            "store": run.store if run is not None else None,
            "newest_event": _aware(run.newest_event) if run is not None else None,
            "materialized_at": _aware(run.finished_at) if run is not None else None,
            "ttl_seconds": (spec or {}).get("ttl_seconds"),
            "drift_share": profile.get("drift_share"),
            "drifted": list(profile.get("drifted") or []),
        }
    return out


def feature_view_exists(conn: Connection, view: str) -> bool:
    views = tables.feature_views
    return conn.execute(select(views.c.id).where(views.c.name == view).limit(1)).first() is not None

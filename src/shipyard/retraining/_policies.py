"""When to retrain: on a schedule (cron), when an alert fires, or every N new labels; never
more often than the cooldown and the daily cap allow, and never while a pipeline is running."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from shipyard.core.errors import InvalidInput
from shipyard.monitoring import parse_rule
from shipyard.retraining import _repository as repo
from shipyard.retraining._spec import RetrainSpec, parse_duration
from shipyard.store import Database, tables

__all__ = ["due_triggers", "may_retrain"]


def _same_rule(a: str, b: str) -> bool:
    """Whether two rule texts say the same thing (`0.9` and `0.90` do)."""
    try:
        x, y = parse_rule(a), parse_rule(b)
    except InvalidInput:
        return a.strip() == b.strip()
    return (x.metric, x.feature, x.op, x.threshold, x.window, x.min_labels) == (
        y.metric,
        y.feature,
        y.op,
        y.threshold,
        y.window,
        y.min_labels,
    )


def due_triggers(
    spec: RetrainSpec,
    database: Database,
    firing: Sequence[Mapping[str, Any]],
    last_tick: datetime,
    now: datetime,
    labels_since: Any,
) -> list[dict[str, Any]]:
    """The reasons to retrain `spec.name` now (empty when there is none).

    `firing` are the model's firing alerts; `labels_since(moment)` counts labels logged since.
    """
    from croniter import croniter

    reasons: list[dict[str, Any]] = []
    with database.transaction() as conn:
        last = repo.latest(conn, spec.name)
        handled = repo.handled_alerts(conn, spec.name) if firing else set()
    for policy in spec.policies:
        if policy.schedule is not None:
            fire_at = croniter(policy.schedule, last_tick).get_next(datetime)
            fire_at = fire_at if fire_at.tzinfo else fire_at.replace(tzinfo=UTC)
            if fire_at <= now:
                reasons.append(
                    {"kind": "schedule", "schedule": policy.schedule, "at": fire_at.isoformat()}
                )
        elif policy.on_alert is not None:
            for alert in firing:
                matches = policy.on_alert == "any" or _same_rule(
                    policy.on_alert, alert["evidence"].get("rule", "")
                )
                if matches and alert["id"] not in handled:
                    reasons.append({
                        "kind": "alert", "alerts": [alert["id"]], "rule": alert["evidence"].get("rule"),
                        "value": alert.get("value"), "version": alert.get("version"),
                    })  # fmt: skip
        elif policy.every_labels is not None:
            since = last["created_at"] if last is not None else datetime(1970, 1, 1, tzinfo=UTC)
            count = int(labels_since(since))
            if count >= policy.every_labels:
                reasons.append({"kind": "labels", "labels": count, "every": policy.every_labels})
    return reasons


def may_retrain(spec: RetrainSpec, database: Database, now: datetime) -> tuple[bool, str]:
    """Whether a new pipeline may start now (cooldown, daily cap, nothing running)."""
    with database.transaction() as conn:
        active = repo.latest(conn, spec.name, repo.ACTIVE)
        last = repo.latest(conn, spec.name)
        today = repo.count_since(conn, spec.name, now - timedelta(days=1))
        versions = conn.execute(
            select(func.count())
            .select_from(tables.model_versions)
            .where(tables.model_versions.c.model_name == spec.name)
        ).scalar_one()
    if not versions:
        return False, f"{spec.name} has no registered version yet"
    if active is not None:
        return False, f"pipeline {active['id']} is {active['status']}"
    started = last["created_at"] if last is not None else None
    if started is not None and now - started < parse_duration(spec.cooldown):
        return (
            False,
            f"cooling down until {(started + parse_duration(spec.cooldown)):%Y-%m-%d %H:%M}",
        )
    if today >= spec.max_per_day:
        return (
            False,
            f"already retrained {today} time(s) in the last day (max_per_day {spec.max_per_day})",
        )
    return True, ""

"""Alerts on scored events: `score > 0.9` raises one alert per entity per cooldown.

The cooldown lives in the metadata database (one row per model, rule and entity, moved on
with a conditional UPDATE), so neither a second consumer of the group nor a restarted one
raises an alert again before it is due, even for events scored twice after a crash.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import and_, insert, select, update
from sqlalchemy.exc import IntegrityError

from shipyard.core.errors import InvalidInput
from shipyard.core.values import jsonable
from shipyard.store import Database, utcnow
from shipyard.store.tables import event_alert_cooldowns as C
from shipyard.store.tables import event_alerts as A

__all__ = ["EventAlerts", "EventRule", "event_alerts"]

log = logging.getLogger("shipyard.streaming")

_RULE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(>=|<=|==|!=|>|<)\s*(.+?)\s*$")
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}


@dataclass(frozen=True)
class EventRule:
    """`FIELD OP VALUE` over a scored event: the prediction's fields (score, label, value,
    probabilities.CLASS) or the event's own."""

    text: str
    field: str
    op: str
    value: float | str

    @classmethod
    def parse(cls, text: str) -> EventRule:
        match = _RULE.match(text or "")
        if match is None or len(text) > 512:
            raise InvalidInput(
                f"cannot read the alert rule {text!r}: write FIELD OP VALUE, e.g. 'score > 0.9' "
                "or 'label == fraud' (OP one of > >= < <= == !=)"
            )
        field, op, raw = match.groups()
        raw = raw.strip().strip("'\"")
        try:
            value: float | str = float(raw)
        except ValueError:
            if op not in ("==", "!="):
                raise InvalidInput(
                    f"the alert rule {text!r} compares {field} {op} with {raw!r}, which is not a "
                    "number; > >= < <= take numbers"
                ) from None
            value = raw
        return cls(" ".join([field, op, raw]), field, op, value)

    def reading(self, record: Mapping[str, Any], event: Mapping[str, Any]) -> Any:
        """The field's value for this event, or None when it has none."""
        if self.field.startswith("probabilities."):
            return (record.get("probabilities") or {}).get(self.field.split(".", 1)[1])
        return record[self.field] if self.field in record else event.get(self.field)

    def matches(self, record: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
        value = self.reading(record, event)
        if value is None:
            return False
        if isinstance(self.value, float):
            if isinstance(value, bool) or not isinstance(value, int | float):
                try:
                    value = float(value)
                except (TypeError, ValueError):
                    return False
            return _OPS[self.op](value, self.value)
        return _OPS[self.op](str(value), self.value)


class EventAlerts:
    """Raises `rule`'s alerts for one model's stream; see the module docstring.

    Args:
        entity_field: the event field naming what an alert is about (a device, a customer);
            None: each event is its own entity.
        cooldown: how long after an alert the same entity raises no other for this rule.
        webhooks: URLs each alert is posted to (JSON; a failure is logged, never retried here).
    """

    def __init__(
        self,
        database: Database,
        model: str,
        rule: EventRule,
        *,
        group: str,
        entity_field: str | None,
        cooldown: timedelta,
        webhooks: list[str] | None = None,
        clock: Callable[[], datetime] = utcnow,
        post: Callable[..., Any] | None = None,
    ) -> None:
        self.database = database
        self.model = model
        self.rule = rule
        self.group = group
        self.entity_field = entity_field
        self.cooldown = cooldown
        self.webhooks = webhooks or []
        self.clock = clock
        self.post = post or (lambda url, json: httpx.post(url, json=json, timeout=5.0))

    def check(
        self, version: int, hits: list[tuple[str, str, Mapping[str, Any], Mapping[str, Any]]]
    ) -> list[dict[str, Any]]:
        """Raise the alerts due among scored events (event id, prediction id, record, event);
        returns those raised."""
        raised = []
        for event_id, prediction_id, record, event in hits:
            if not self.rule.matches(record, event):
                continue
            entity = str(event.get(self.entity_field, "")) if self.entity_field else event_id
            if not entity:
                entity = event_id
            alert = self._raise(version, entity[:256], event_id, prediction_id, record, event)
            if alert is not None:
                raised.append(alert)
        for alert in raised:
            self._deliver(alert)
        return raised

    def _raise(
        self,
        version: int,
        entity: str,
        event_id: str,
        prediction_id: str,
        record: Mapping[str, Any],
        event: Mapping[str, Any],
    ) -> dict[str, Any] | None:
        now = self.clock()
        key = and_(C.c.model_name == self.model, C.c.rule == self.rule.text, C.c.entity == entity)
        with self.database.transaction() as conn:
            moved = conn.execute(
                update(C).where(key, C.c.until <= now).values(until=now + self.cooldown)
            )
            if moved.rowcount != 1:
                if conn.execute(select(C.c.until).where(key)).first() is not None:
                    return None  # in its cooldown
                try:
                    with conn.begin_nested():
                        conn.execute(
                            insert(C).values(
                                model_name=self.model, rule=self.rule.text, entity=entity,
                                until=now + self.cooldown,
                            )
                        )  # fmt: skip
                except IntegrityError:
                    return None  # another consumer raised it just now
            value = self.rule.reading(record, event)
            alert = {
                "model": self.model,
                "version": version,
                "rule": self.rule.text,
                "entity": entity,
                "event_id": event_id,
                "prediction_id": prediction_id,
                "value": float(value) if isinstance(value, int | float) else None,
                "raised_at": now,
                "group": self.group,
                "evidence": jsonable({"prediction": dict(record), "event": dict(event)}),
            }
            result = conn.execute(
                insert(A).values(
                    model_name=self.model, version=version, rule=self.rule.text, entity=entity,
                    event_id=event_id, prediction_id=prediction_id, value=alert["value"],
                    raised_at=now, group_name=self.group, evidence=alert["evidence"],
                    deliveries=[],
                )
            )  # fmt: skip
            alert["id"] = int(result.inserted_primary_key[0])  # type: ignore[index]
        log.warning("alert: %s %s for %s (event %s)", self.model, self.rule.text, entity, event_id)
        return alert

    def _deliver(self, alert: dict[str, Any]) -> None:
        if not self.webhooks:
            return
        payload = jsonable({**alert, "kind": "event_alert"})
        deliveries = []
        for url in self.webhooks:
            try:
                response = self.post(url, json=payload)
                ok = 200 <= int(getattr(response, "status_code", 0)) < 300
                deliveries.append({"url": url, "ok": ok, "status": response.status_code})
            except httpx.HTTPError as error:
                deliveries.append({"url": url, "ok": False, "error": str(error)[:200]})
            if not deliveries[-1]["ok"]:
                log.warning("alert webhook %s failed: %s", url, deliveries[-1])
        with self.database.transaction() as conn:
            conn.execute(update(A).where(A.c.id == alert["id"]).values(deliveries=deliveries))


def event_alerts(database: Database, model: str, *, limit: int = 100) -> list[dict[str, Any]]:
    """The latest alerts streams raised for `model`, newest first."""

    def query(conn: Any) -> list[dict[str, Any]]:
        rows = conn.execute(
            select(A).where(A.c.model_name == model).order_by(A.c.id.desc()).limit(limit)
        ).mappings()
        return [
            {
                "id": r["id"], "model": r["model_name"], "version": r["version"],
                "rule": r["rule"], "entity": r["entity"], "event_id": r["event_id"],
                "prediction_id": r["prediction_id"], "value": r["value"],
                "raised_at": r["raised_at"], "group": r["group_name"],
                "evidence": r["evidence"], "deliveries": r["deliveries"],
            }
            for r in rows
        ]  # fmt: skip

    result: list[dict[str, Any]] = database.read(query)
    return result

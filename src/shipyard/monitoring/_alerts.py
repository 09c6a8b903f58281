"""Alerts: rules evaluated after each monitoring run, one open alert per rule and version,
resolved when the condition clears, delivered to the log and to webhooks (with retries).

An alert is a record first (the retraining loop reads them); delivery is a side effect whose
outcome is stored on the alert, so a webhook that is down never loses the alert itself.

Each webhook is posted once when the alert changes, never with a sleep in between: a failed
post becomes a `webhook` job in the jobs table, due after the retry policy's backoff, which a
worker (`shipyard worker`) attempts again, and so on until the policy's attempts are spent.
Every attempt updates the alert's delivery record for that URL.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import httpx

from shipyard.core import validate_model_name
from shipyard.core.errors import InvalidInput, ModelNotFound, NotFound
from shipyard.core.retry import RetryPolicy
from shipyard.core.values import jsonable
from shipyard.monitoring import _repository as repo
from shipyard.monitoring._fairness import FAIRNESS_METRICS, FairnessSpec
from shipyard.monitoring._report import Alert, AlertRule, Delivery, VersionSummary
from shipyard.monitoring._rules import VIEW_METRICS, Rule, check_task, metric_value, parse_rule
from shipyard.store import Database, JobQueue, record_audit, utcnow

__all__ = ["SEVERITIES", "AlertManager"]

log = logging.getLogger("shipyard.monitoring.alerts")

SEVERITIES = ("warning", "critical")
# three attempts: at once, then about 30 s and 60 s later (full jitter), at most 10 minutes apart
WEBHOOK_RETRY = RetryPolicy(retries=2, backoff=30.0, max_backoff=600.0)
WEBHOOK_JOB = "webhook"


class AlertManager:
    """Stores rules, turns monitoring summaries into alert records, and delivers them.

    Args:
        database: the metadata database.
        actor: recorded on rule changes.
        webhooks: URLs every alert is posted to, besides each rule's own.
        post: how a webhook is called (an httpx-style `post(url, json=...)`); tests pass a
            client bound to a real local server.
    """

    def __init__(
        self,
        database: Database,
        *,
        actor: str = "unknown",
        webhooks: list[str] | None = None,
        post: Callable[..., Any] | None = None,
        retry: RetryPolicy = WEBHOOK_RETRY,
        clock: Callable[[], datetime] = utcnow,
        fairness: Mapping[str, FairnessSpec] | None = None,
    ) -> None:
        self.database = database
        # each model's declared sensitive attributes: a fairness rule must name one of them,
        # else the monitor never measures it and the rule could never fire
        self.fairness = dict(fairness or {})
        self.actor = actor
        self.webhooks = list(webhooks or [])
        self._post = post
        self.retry = retry
        self.clock = clock
        self._rng = random.Random()

    def _check_attribute(self, model: str, attribute: str) -> None:
        declared = self.fairness.get(model)
        if declared is None:
            raise InvalidInput(
                f"{model} declares no sensitive attributes to compare groups of; declare "
                f"{attribute} under models.{model}.fairness.attributes in shipyard.yaml first"
            )
        declared.attribute(attribute)

    def acting_as(self, actor: str) -> AlertManager:
        """The same manager, recording `actor` on the rules it changes."""
        twin = object.__new__(AlertManager)
        twin.__dict__.update(self.__dict__, actor=actor)
        return twin

    # -- rules ----------------------------------------------------------------------------------

    def add_rule(
        self,
        model: str,
        expression: str,
        *,
        severity: str = "warning",
        webhooks: Sequence[str] = (),
    ) -> AlertRule:
        validate_model_name(model)
        rule = parse_rule(expression)  # refuse what cannot be evaluated, now rather than at 3 a.m.
        if severity not in SEVERITIES:
            raise InvalidInput(f"severity {severity!r} is not one of {', '.join(SEVERITIES)}")
        for url in webhooks:
            if not url.startswith(("http://", "https://")):
                raise InvalidInput(f"webhook {url!r} must be an http:// or https:// URL")
        with self.database.transaction() as conn:
            if not repo.model_exists(conn, model):  # else a foreign-key error from the database
                raise ModelNotFound(
                    f"no model named {model!r}; register it before adding alert rules "
                    "(shipyard models list)"
                )
            check_task(rule, repo.model_tasks(conn, model))
            if rule.metric in FAIRNESS_METRICS:
                self._check_attribute(model, str(rule.feature))
            if rule.metric in VIEW_METRICS and not repo.feature_view_exists(
                conn, str(rule.feature)
            ):
                raise InvalidInput(
                    f"no feature view named {rule.feature!r} (shipyard features list)"
                )
            rule_id = repo.add_rule(
                conn, model, expression.strip(), severity, list(webhooks), self.actor
            )
            record_audit(
                conn,
                self.actor,
                "alert_rule.created",
                model,
                None,
                {"rule": rule_id, "expression": expression},
            )
        return next(r for r in self.rules(model) if r["id"] == rule_id)

    def rules(self, model: str | None = None) -> list[AlertRule]:
        return self.database.read(lambda conn: repo.rules(conn, model))

    def model_of_rule(self, rule_id: int) -> str:
        """The model a rule watches; `NotFound` when there is no such rule."""
        found = [
            r["model"] for r in self.database.read(lambda conn: repo.rules(conn, None, rule_id))
        ]
        if not found:
            raise NotFound(f"no alert rule {rule_id} (shipyard monitor rules)")
        return str(found[0])

    def remove_rule(self, rule_id: int) -> None:
        with self.database.transaction() as conn:
            model = repo.delete_rule(conn, rule_id)
            if model is None:
                raise NotFound(f"no alert rule {rule_id} (shipyard monitor rules)")
            record_audit(conn, self.actor, "alert_rule.removed", model, None, {"rule": rule_id})

    def alerts(
        self, model: str | None = None, status: str | None = None, limit: int = 200
    ) -> list[Alert]:
        return self.database.read(lambda conn: repo.alerts(conn, model, status, limit))

    # -- evaluation -----------------------------------------------------------------------------

    def evaluate(
        self,
        model: str,
        summary_for: Callable[[Rule, int], VersionSummary | None],
        versions: list[int],
        now: datetime,
    ) -> list[Alert]:
        """Evaluate every rule of `model` on each version; returns the alerts that changed.

        `summary_for(rule, version)` gives the version's monitoring summary over the rule's
        window (or None when the version had no traffic in it).
        """
        changed = []
        for rule_row in self.rules(model):
            if not rule_row["enabled"]:
                continue
            rule = parse_rule(rule_row["expression"])
            for version in versions:
                summary = summary_for(rule, version)
                if summary is None:
                    continue
                labelled = summary["metrics"].get("labelled", 0) or 0
                if rule.min_labels and labelled < rule.min_labels:
                    continue  # not enough evidence either way: leave the state as it is
                value = metric_value(rule, summary)
                firing = rule.check(value)
                if firing is None:
                    continue
                alert = self._transition(rule_row, rule, version, firing, value, summary, now)
                if alert is not None:
                    changed.append(alert)
        return changed

    def retire(self, model: str, live: set[int], now: datetime) -> list[Alert]:
        """Resolve the firing alerts of versions that no longer serve `model`.

        A version that was rolled back or replaced gets no traffic, so its breach can neither
        clear nor be confirmed; left firing, it would stay open for ever and keep answering
        "retrain on alert" policies. Returns the alerts resolved (delivered like any other).
        """
        rules = {r["id"]: r for r in self.rules(model)}
        with self.database.transaction() as conn:
            stale = [
                a for a in repo.alerts(conn, model, "firing", limit=100_000)
                if a["version"] is not None and a["version"] not in live
            ]  # fmt: skip
            for alert in stale:
                alert["status"], alert["resolved_at"], alert["last_seen_at"] = "resolved", now, now
                alert["evidence"] = {
                    **alert["evidence"],
                    "resolution": f"version {alert['version']} no longer serves {model}",
                }
                repo.save_alert(conn, alert)
                record_audit(
                    conn, "monitor", "alert.resolved", model, alert["version"],
                    {"alert": alert["id"], "rule": alert["evidence"].get("rule"),
                     "value": alert["value"], "reason": "version no longer serves"},
                )  # fmt: skip
        for alert in stale:
            rule_row = rules[alert["rule_id"]]
            alert["severity"] = rule_row["severity"]
            self._deliver(alert, rule_row)
        return stale

    def _transition(
        self,
        rule_row: AlertRule,
        rule: Rule,
        version: int,
        firing: bool,
        value: float | bool | None,
        summary: VersionSummary,
        now: datetime,
    ) -> Alert | None:
        numeric = float(value) if value is not None else None
        evidence = {
            "rule": rule.describe(),
            "value": value,
            "threshold": rule.threshold,
            "window": summary["window"],
            "period": summary["period"],
            "labelled": summary["metrics"].get("labelled"),
            "drifted": summary["drift"]["drifted"],
            "root_cause": summary["root_cause"],
        }
        with self.database.transaction() as conn:
            current = repo.open_alert(conn, rule_row["id"], version)
            if firing and current is not None:  # still firing: one alert, updated, not re-sent
                current["last_seen_at"], current["value"], current["evidence"] = (
                    now,
                    numeric,
                    evidence,
                )
                repo.save_alert(conn, current)
                return None
            if firing:
                alert: Alert = {
                    "id": None, "rule_id": rule_row["id"], "model": rule_row["model"], "version": version,
                    "status": "firing", "opened_at": now, "last_seen_at": now, "value": numeric,
                    "evidence": evidence, "deliveries": [],
                }  # fmt: skip
            elif current is not None:
                alert = {
                    **current,
                    "status": "resolved",
                    "resolved_at": now,
                    "last_seen_at": now,
                    "value": numeric,
                }
            else:
                return None
            alert["id"] = repo.save_alert(conn, alert)
            record_audit(
                conn, "monitor", f"alert.{alert['status']}", rule_row["model"], version,
                {"alert": alert["id"], "rule": rule.describe(), "value": value},
            )  # fmt: skip
        alert["severity"] = rule_row["severity"]
        self._deliver(alert, rule_row)
        return alert

    # -- delivery -------------------------------------------------------------------------------

    def _deliver(self, alert: Alert, rule_row: AlertRule) -> None:
        rule = alert["evidence"].get("rule", "")
        message = (
            f"{rule_row['severity'].upper()} alert {alert['id']} {alert['status']}: {alert['model']}:{alert['version']} "
            f"{rule} (value {alert['value']})"
        )
        (log.warning if alert["status"] == "firing" else log.info)(message)
        payload = {
            "alert": jsonable({k: v for k, v in alert.items() if k != "deliveries"}),
            "message": message,
        }
        alert_id = alert["id"]
        assert alert_id is not None, "an alert is stored before it is delivered"
        deliveries = [
            self._attempt(alert_id, url, payload, 1)
            for url in [*rule_row["webhooks"], *self.webhooks]
        ]
        if deliveries:
            self._record(alert_id, deliveries)
        alert["deliveries"] = deliveries

    def redeliver(self, job: dict[str, Any]) -> Delivery:
        """Attempt a queued webhook delivery again (a `webhook` job's payload); queues the next
        attempt when this one fails and the policy allows more. Returns the delivery record."""
        attempt = int(job["attempt"])
        delivery = self._attempt(int(job["alert"]), str(job["url"]), job["payload"], attempt)
        self._record(int(job["alert"]), [delivery])
        return delivery

    def _attempt(self, alert_id: int, url: str, payload: dict[str, Any], attempt: int) -> Delivery:
        """One post; a failure with attempts left queues the next as a job (no waiting here)."""
        post = self._post or httpx.post
        try:
            response = post(url, json=payload, timeout=5.0)
            if response.status_code < 300:
                return {"url": url, "ok": True, "attempts": attempt, "status": response.status_code,
                        "at": self.clock().isoformat()}  # fmt: skip
            error = f"HTTP {response.status_code}"
        except httpx.HTTPError as failure:
            error = f"{type(failure).__name__}: {failure}"
        delivery: Delivery = {"url": url, "ok": False, "attempts": attempt, "error": error,
                    "at": self.clock().isoformat()}  # fmt: skip
        if attempt < self.retry.attempts:
            due = self.clock() + timedelta(seconds=self.retry.wait(attempt - 1, None, self._rng))
            JobQueue(self.database, self.clock).enqueue(
                WEBHOOK_JOB,
                payload={"alert": alert_id, "url": url, "payload": payload, "attempt": attempt + 1},
                run_at=due,
                max_attempts=1,  # the job's own attempts: the policy counts the deliveries
            )
            delivery["retry_at"] = due.isoformat()
        else:
            log.error("webhook %s failed after %d attempts: %s", url, attempt, error)
        return delivery

    def _record(self, alert_id: int, deliveries: list[Delivery]) -> None:
        """Store the latest attempt per URL on the alert (an earlier one for the URL replaced)."""
        with self.database.transaction() as conn:
            record = repo.get_alert(conn, alert_id)
            if record is None:  # deleted with its model: nothing left to record on
                return
            urls = {d["url"] for d in deliveries}
            record["deliveries"] = [
                *(d for d in record["deliveries"] if d["url"] not in urls),
                *deliveries,
            ]
            repo.save_alert(conn, record)

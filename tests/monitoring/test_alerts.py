"""Alert rules as people write them, and alerts as records: opened once, updated while the
breach lasts, resolved when it clears, audited, and delivered to webhooks with retries."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from tests.webhooks import Hook

from shipyard.core import Settings
from shipyard.core.errors import InvalidInput, ModelNotFound, NotFound
from shipyard.monitoring import AlertManager, Rule, parse_rule
from shipyard.registry import Registry
from shipyard.store import JobQueue
from shipyard.worker import Worker

MODEL = "fraud"
NOW = datetime(2024, 5, 8, tzinfo=UTC)
LATER = NOW + timedelta(days=1)


# -- parsing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "metric", "feature", "op", "threshold", "window", "min_labels"),
    [
        (
            "accuracy < 0.90 over 7d with >= 500 labels",
            "accuracy",
            None,
            "<",
            0.90,
            timedelta(days=7),
            500,
        ),
        ("psi(transaction_amount) > 0.2", "psi", "transaction_amount", ">", 0.2, None, 0),
        ("latency_p95 > 100ms", "latency_p95", None, ">", 100.0, None, 0),
        ("drift(merchant_category)", "drift", "merchant_category", None, None, None, 0),
        ("fpr > 5%", "false_positive_rate", None, ">", 0.05, None, 0),
        ("recall <= 0.7 over 12h", "recall", None, "<=", 0.7, timedelta(hours=12), 0),
    ],
)
def test_rules_as_people_write_them_are_read_into_their_parts(
    expression: str,
    metric: str,
    feature: str | None,
    op: str | None,
    threshold: float | None,
    window: timedelta | None,
    min_labels: int,
) -> None:
    rule = parse_rule(expression)
    assert (rule.metric, rule.feature, rule.op, rule.window, rule.min_labels) == (
        metric, feature, op, window, min_labels,
    )  # fmt: skip
    assert rule.threshold == pytest.approx(threshold)
    assert rule.describe() == expression


@pytest.mark.parametrize(
    ("expression", "says"),
    [
        ("accurcy < 0.9", "unknown metric 'accurcy'; known metrics: accuracy, auc"),
        ("psi > 0.2", "psi needs a feature, e.g. psi(transaction_amount)"),
        (
            "accuracy(amount) < 0.9",
            "accuracy is not measured per feature; per-feature metrics: drift",
        ),
        ("accuracy", "accuracy needs a comparison, e.g. 'accuracy < 0.90 over 7d"),
        ("accuracy < 90ms", "'ms' only applies to latency metrics, not accuracy"),
        ("accuracy < 0.9 over 7x", "window '7x' is not a duration; write e.g. 30m, 1h, 1d or 7d"),
        ("accuracy < 0.9 over 0d", "window '0d' is not a duration; write e.g. 30m"),
        ("accuracy < 0.9 over 7 days", "window '7 days' is not a duration"),
        (
            "accuracy is low",
            "cannot read the rule 'accuracy is low'; e.g. 'accuracy < 0.90 over 7d",
        ),
        ("", "cannot read the rule ''"),
    ],
)
def test_a_bad_rule_is_refused_with_how_to_write_one(expression: str, says: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_rule(expression)
    assert says in str(refused.value)


def test_a_rule_compares_its_value_and_has_nothing_to_say_without_one() -> None:
    rule = parse_rule("fpr > 5%")
    assert rule.check(0.07) is True
    assert rule.check(0.05) is False
    assert rule.check(None) is None
    assert parse_rule("drift(amount)").check(True) is True
    assert parse_rule("drift(amount)").check(False) is False


# -- evaluation ---------------------------------------------------------------------------------


def summary(
    accuracy: float | None = 0.95,
    labelled: int = 1_000,
    *,
    psi: float = 0.05,
    drifted: bool = False,
    fpr: float = 0.02,
) -> dict[str, Any]:
    """A version summary shaped like `Monitor`'s, with the numbers rules look at."""
    return {
        "window": "1d",
        "period": {"start": "2024-05-01T00:00:00+00:00", "end": "2024-05-08T00:00:00+00:00"},
        "metrics": {
            "accuracy": accuracy,
            "labelled": labelled,
            "latency_p95": 42.0,
            "false_positive_rate": fpr,
            "volume": 5_000,
        },
        "drift": {
            "columns": {
                "transaction_amount": {
                    "drift": drifted,
                    "missing": {"current_rate": 0.0, "reference_rate": 0.0},
                    "stats": {"psi": psi},
                }
            },
            "drifted": ["transaction_amount"] if drifted else [],
        },
        "root_cause": {"features": [], "segments": []},
    }


def evaluate(
    manager: AlertManager, now: datetime, **by_version: dict[str, Any]
) -> list[dict[str, Any]]:
    """Evaluate with one summary per version (`v1=summary(...)`)."""
    summaries = {int(k[1:]): s for k, s in by_version.items()}

    def summary_for(rule: Rule, version: int) -> dict[str, Any] | None:
        return summaries.get(version)

    return manager.evaluate(MODEL, summary_for, sorted(summaries), now)


@pytest.fixture
def model(registry: Registry) -> str:
    """A registered model (alert rules belong to one)."""
    frame = pd.DataFrame({"amount": np.arange(40.0), "hour": np.arange(40.0) % 24})
    registry.register(LogisticRegression().fit(frame, np.arange(40) % 2), name=MODEL, sample=frame)
    return MODEL


@pytest.fixture
def manager(registry: Registry, model: str) -> AlertManager:
    return AlertManager(registry.database, actor="tester")


def retry_due(registry: Registry, manager: AlertManager) -> dict[str, Any] | None:
    """Run the next queued webhook retry as a worker would, as if its wait had passed; None
    when none is queued."""
    queue = JobQueue(registry.database, clock=lambda: datetime.now(UTC) + timedelta(hours=1))
    job = queue.claim("test-worker", kinds=["webhook"])
    if job is None:
        return None
    delivery = manager.redeliver(job.payload)
    queue.complete(job, "test-worker", delivery)
    return delivery


def alert_events(registry: Registry) -> list[tuple[str, int | None, dict[str, Any]]]:
    """Alert audit events, oldest first."""
    return [
        (e.action, e.version, e.details)
        for e in reversed(registry.history(MODEL))
        if e.action.startswith("alert.")
    ]


def test_a_breach_opens_one_alert_with_its_evidence(
    manager: AlertManager, registry: Registry
) -> None:
    rule = manager.add_rule(MODEL, "accuracy < 0.90 with >= 500 labels", severity="critical")
    (alert,) = evaluate(manager, NOW, v1=summary(accuracy=0.85, labelled=800, drifted=True))
    assert alert["status"] == "firing"
    assert alert["severity"] == "critical"
    assert (alert["rule_id"], alert["model"], alert["version"]) == (rule["id"], MODEL, 1)
    assert alert["opened_at"] == alert["last_seen_at"] == NOW
    assert alert["value"] == pytest.approx(0.85)
    assert alert["evidence"] == {
        "rule": "accuracy < 0.90 with >= 500 labels",
        "value": 0.85,
        "threshold": 0.90,
        "window": "1d",
        "period": {"start": "2024-05-01T00:00:00+00:00", "end": "2024-05-08T00:00:00+00:00"},
        "labelled": 800,
        "drifted": ["transaction_amount"],
        "root_cause": {"features": [], "segments": []},
    }
    (stored,) = manager.alerts(MODEL)
    assert stored["id"] == alert["id"]
    assert stored["status"] == "firing"
    assert stored["evidence"] == alert["evidence"]
    assert stored["resolved_at"] is None
    assert alert_events(registry) == [
        ("alert.firing", 1, {"alert": alert["id"], "rule": rule["expression"], "value": 0.85})
    ]


def test_a_healthy_summary_opens_nothing(manager: AlertManager) -> None:
    manager.add_rule(MODEL, "accuracy < 0.90")
    assert evaluate(manager, NOW, v1=summary(accuracy=0.95)) == []
    assert evaluate(manager, NOW, v1=summary(accuracy=None)) == []  # nothing to judge
    assert manager.alerts(MODEL) == []


def test_a_lasting_breach_updates_its_open_alert_and_is_not_delivered_again(
    manager: AlertManager, hook: Hook
) -> None:
    manager.add_rule(MODEL, "accuracy < 0.90", webhooks=[hook.url])
    (opened,) = evaluate(manager, NOW, v1=summary(accuracy=0.85))
    assert evaluate(manager, LATER, v1=summary(accuracy=0.80)) == []
    (stored,) = manager.alerts(MODEL)
    assert stored["id"] == opened["id"]
    assert stored["status"] == "firing"
    assert (stored["opened_at"], stored["last_seen_at"]) == (NOW, LATER)
    assert stored["value"] == pytest.approx(0.80)
    assert stored["evidence"]["value"] == 0.80
    assert len(hook.received) == 1
    assert len(stored["deliveries"]) == 1


def test_a_cleared_breach_resolves_its_alert_and_a_new_breach_opens_another(
    manager: AlertManager, registry: Registry, hook: Hook
) -> None:
    manager.add_rule(MODEL, "accuracy < 0.90", webhooks=[hook.url])
    (opened,) = evaluate(manager, NOW, v1=summary(accuracy=0.85))
    (resolved,) = evaluate(manager, LATER, v1=summary(accuracy=0.93))
    assert resolved["id"] == opened["id"]
    assert resolved["status"] == "resolved"
    assert resolved["resolved_at"] == LATER
    assert manager.alerts(MODEL, status="firing") == []
    assert evaluate(manager, LATER + timedelta(days=1), v1=summary(accuracy=0.95)) == []

    again = LATER + timedelta(days=2)
    (reopened,) = evaluate(manager, again, v1=summary(accuracy=0.70))
    assert reopened["id"] != opened["id"]
    assert reopened["opened_at"] == again
    stored = {a["id"]: a for a in manager.alerts(MODEL)}
    assert stored[opened["id"]]["status"] == "resolved"
    assert stored[opened["id"]]["resolved_at"] == LATER
    assert stored[reopened["id"]]["status"] == "firing"
    assert [(body["alert"]["id"], body["alert"]["status"]) for body in hook.received] == [
        (opened["id"], "firing"),
        (opened["id"], "resolved"),
        (reopened["id"], "firing"),
    ]
    assert [
        (action, version, details["alert"]) for action, version, details in alert_events(registry)
    ] == [
        ("alert.firing", 1, opened["id"]),
        ("alert.resolved", 1, opened["id"]),
        ("alert.firing", 1, reopened["id"]),
    ]


def test_below_the_labels_a_rule_asks_for_the_alert_state_does_not_change(
    manager: AlertManager,
) -> None:
    manager.add_rule(MODEL, "accuracy < 0.90 with >= 500 labels")
    assert evaluate(manager, NOW, v1=summary(accuracy=0.50, labelled=499)) == []
    assert manager.alerts(MODEL) == []

    (opened,) = evaluate(manager, NOW, v1=summary(accuracy=0.85, labelled=500))
    # a good accuracy on too few labels neither resolves nor touches the alert
    assert evaluate(manager, LATER, v1=summary(accuracy=0.99, labelled=20)) == []
    (stored,) = manager.alerts(MODEL)
    assert (stored["id"], stored["status"], stored["last_seen_at"]) == (opened["id"], "firing", NOW)


def test_each_version_has_its_own_alert(manager: AlertManager, registry: Registry) -> None:
    manager.add_rule(MODEL, "accuracy < 0.90")
    (first,) = evaluate(manager, NOW, v1=summary(accuracy=0.80), v2=summary(accuracy=0.95))
    assert first["version"] == 1
    (second,) = evaluate(manager, LATER, v1=summary(accuracy=0.80), v2=summary(accuracy=0.85))
    assert second["version"] == 2
    assert second["id"] != first["id"]
    (resolved,) = evaluate(manager, LATER, v1=summary(accuracy=0.95), v2=summary(accuracy=0.85))
    assert (resolved["id"], resolved["status"]) == (first["id"], "resolved")
    by_version = {a["version"]: a["status"] for a in manager.alerts(MODEL)}
    assert by_version == {1: "resolved", 2: "firing"}
    assert [(action, version) for action, version, _ in alert_events(registry)] == [
        ("alert.firing", 1),
        ("alert.firing", 2),
        ("alert.resolved", 1),
    ]


def test_alerts_of_a_version_that_no_longer_serves_are_resolved_and_delivered(
    manager: AlertManager, registry: Registry, hook: Hook
) -> None:
    manager.add_rule(MODEL, "accuracy < 0.90", webhooks=[hook.url])
    (old,) = evaluate(manager, NOW, v1=summary(accuracy=0.80))
    (new,) = evaluate(manager, NOW, v2=summary(accuracy=0.85))
    (retired,) = manager.retire(MODEL, {2, 3}, LATER)
    assert (retired["id"], retired["status"], retired["resolved_at"]) == (
        old["id"], "resolved", LATER,
    )  # fmt: skip
    assert retired["evidence"]["resolution"] == "version 1 no longer serves fraud"
    assert retired["evidence"]["rule"] == "accuracy < 0.90"  # the rest of the evidence is kept
    assert {a["version"]: a["status"] for a in manager.alerts(MODEL)} == {
        1: "resolved",
        2: "firing",
    }
    assert manager.retire(MODEL, {2, 3}, LATER) == []  # nothing left to retire
    assert [(body["alert"]["id"], body["alert"]["status"]) for body in hook.received] == [
        (old["id"], "firing"),
        (new["id"], "firing"),
        (old["id"], "resolved"),
    ]
    assert alert_events(registry)[-1] == (
        "alert.resolved",
        1,
        {"alert": old["id"], "rule": "accuracy < 0.90", "value": pytest.approx(0.80),
         "reason": "version no longer serves"},
    )  # fmt: skip


def test_feature_rules_look_at_their_feature_and_percent_rules_at_rates(
    manager: AlertManager,
) -> None:
    psi = manager.add_rule(MODEL, "psi(transaction_amount) > 0.2")
    drift = manager.add_rule(MODEL, "drift(transaction_amount)")
    fpr = manager.add_rule(MODEL, "fpr > 5%")
    elsewhere = manager.add_rule(MODEL, "drift(merchant_category)")  # not in the summaries
    assert evaluate(manager, NOW, v1=summary(psi=0.1, fpr=0.05)) == []
    fired = evaluate(manager, LATER, v1=summary(psi=0.3, drifted=True, fpr=0.07))
    assert {a["rule_id"]: a["value"] for a in fired} == {
        psi["id"]: 0.3,
        drift["id"]: 1.0,
        fpr["id"]: 0.07,
    }
    assert elsewhere["id"] not in {a["rule_id"] for a in manager.alerts(MODEL)}


def test_a_webhook_that_fails_twice_gets_the_alert_on_the_third_attempt(
    registry: Registry, manager: AlertManager, hook: Hook
) -> None:
    hook.failures = 2
    manager.add_rule(MODEL, "accuracy < 0.90", webhooks=[hook.url])
    (alert,) = evaluate(manager, NOW, v1=summary(accuracy=0.85))
    # the evaluation posted once and went on: the retry is a queued job, not a sleep
    (first,) = alert["deliveries"]
    assert (first["ok"], first["attempts"], first["error"]) == (False, 1, "HTTP 500")
    assert "retry_at" in first
    assert len(hook.received) == 1
    second = retry_due(registry, manager)
    assert second is not None
    assert (second["ok"], second["attempts"]) == (False, 2)
    delivery = retry_due(registry, manager)
    assert delivery is not None
    assert (delivery["url"], delivery["ok"], delivery["attempts"], delivery["status"]) == (
        hook.url, True, 3, 200,
    )  # fmt: skip
    assert retry_due(registry, manager) is None  # delivered: nothing more queued
    assert len(hook.received) == 3  # the same alert each time
    body = hook.received[-1]
    assert body["alert"]["id"] == alert["id"]
    assert body["alert"]["status"] == "firing"
    assert (body["alert"]["model"], body["alert"]["version"]) == (MODEL, 1)
    assert body["alert"]["opened_at"] == NOW.isoformat()
    assert body["alert"]["evidence"]["rule"] == "accuracy < 0.90"
    assert f"WARNING alert {alert['id']} firing: {MODEL}:1 accuracy < 0.90" in body["message"]
    assert all(b == body for b in hook.received)
    (stored,) = manager.alerts(MODEL)
    assert stored["deliveries"] == [delivery]  # one record per URL: its latest attempt


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_an_unreachable_webhook_is_recorded_as_failed_and_the_alert_is_kept(
    registry: Registry, manager: AlertManager
) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/alerts"
    manager.add_rule(MODEL, "accuracy < 0.90", webhooks=[url])
    (alert,) = evaluate(manager, NOW, v1=summary(accuracy=0.85))
    assert retry_due(registry, manager) is not None
    assert retry_due(registry, manager) is not None
    assert retry_due(registry, manager) is None  # three attempts, then the policy is spent
    (stored,) = manager.alerts(MODEL, status="firing")
    assert stored["id"] == alert["id"]
    (delivery,) = stored["deliveries"]
    assert (delivery["url"], delivery["ok"], delivery["attempts"]) == (url, False, 3)
    assert delivery["error"].startswith("ConnectError")
    assert "retry_at" not in delivery


def test_the_managers_webhooks_get_every_alert_besides_each_rules_own(
    registry: Registry, model: str, hook: Hook
) -> None:
    unreachable = f"http://127.0.0.1:{_closed_port()}/alerts"
    manager = AlertManager(registry.database, webhooks=[hook.url])
    manager.add_rule(MODEL, "accuracy < 0.90", webhooks=[unreachable])
    manager.add_rule(MODEL, "fpr > 5%")
    alerts = evaluate(manager, NOW, v1=summary(accuracy=0.85, fpr=0.10))
    assert len(alerts) == 2
    accuracy, fpr = sorted(alerts, key=lambda a: a["rule_id"])
    assert [(d["url"], d["ok"]) for d in accuracy["deliveries"]] == [
        (unreachable, False),
        (hook.url, True),
    ]
    assert [(d["url"], d["ok"]) for d in fpr["deliveries"]] == [(hook.url, True)]
    assert sorted(b["alert"]["id"] for b in hook.received) == sorted(a["id"] for a in alerts)


@pytest.mark.parametrize(
    ("expression", "options", "error", "says"),
    [
        (
            "accuracy < 0.9",
            {"severity": "page-me"},
            InvalidInput,
            "severity 'page-me' is not one of warning, critical",
        ),
        (
            "accuracy < 0.9",
            {"webhooks": ["ftp://example.com/x"]},
            InvalidInput,
            "must be an http:// or https:// URL",
        ),
        (
            "accuracy < 0.9",
            {"webhooks": ["example.com/hook"]},
            InvalidInput,
            "must be an http:// or https:// URL",
        ),
        ("accuracy", {}, InvalidInput, "accuracy needs a comparison"),
        ("psi > 0.2", {}, InvalidInput, "psi needs a feature"),
    ],
)
def test_add_rule_refuses_what_could_not_be_evaluated_or_delivered(
    manager: AlertManager,
    expression: str,
    options: dict[str, Any],
    error: type[Exception],
    says: str,
) -> None:
    with pytest.raises(error) as refused:
        manager.add_rule(MODEL, expression, **options)
    assert says in str(refused.value)
    assert manager.rules(MODEL) == []


def test_a_rule_for_a_model_that_is_not_registered_is_refused(manager: AlertManager) -> None:
    with pytest.raises(ModelNotFound) as refused:
        manager.add_rule("no-such-model", "accuracy < 0.9")
    assert "no model named 'no-such-model'; register it before adding alert rules" in str(
        refused.value
    )
    assert manager.rules() == []


def test_rules_are_listed_and_removed(manager: AlertManager, registry: Registry) -> None:
    first = manager.add_rule(MODEL, " accuracy < 0.9 ", webhooks=["https://hooks.example/a"])
    second = manager.add_rule(MODEL, "latency_p95 > 100ms", severity="critical")
    assert first["expression"] == "accuracy < 0.9"
    assert (first["severity"], first["webhooks"], first["enabled"]) == (
        "warning", ["https://hooks.example/a"], True,
    )  # fmt: skip
    assert first["created_by"] == "tester"
    assert [r["id"] for r in manager.rules(MODEL)] == [first["id"], second["id"]]
    manager.remove_rule(first["id"])
    assert [r["id"] for r in manager.rules(MODEL)] == [second["id"]]
    with pytest.raises(NotFound, match=f"no alert rule {first['id']}"):
        manager.remove_rule(first["id"])
    actions = [e.action for e in reversed(registry.history(MODEL))]
    assert actions[-3:] == ["alert_rule.created", "alert_rule.created", "alert_rule.removed"]


def test_a_worker_runs_the_queued_webhook_retry_once_its_wait_has_passed(
    settings: Settings, manager: AlertManager, hook: Hook
) -> None:
    hook.failures = 1
    manager.add_rule(MODEL, "accuracy < 0.90", webhooks=[hook.url])
    (alert,) = evaluate(manager, NOW, v1=summary(accuracy=0.85))
    due = datetime.fromisoformat(alert["deliveries"][0]["retry_at"])
    clock = [due - timedelta(seconds=1)]
    with Worker(settings, specs={}, clock=lambda: clock[0], name="w") as worker:
        assert worker.run_until_idle() == []  # not due yet
        clock[0] = due
        (job,) = worker.run_until_idle()
    assert job.kind == "webhook"
    (stored,) = manager.alerts(MODEL)
    assert [(d["ok"], d["attempts"]) for d in stored["deliveries"]] == [(True, 2)]
    assert len(hook.received) == 2

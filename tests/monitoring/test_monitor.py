"""A month of a fraud model in production, replayed into the log, then monitored: the drift in
amounts and the decline in accuracy are caught, explained, stored, alerted on and reported."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from rich.console import Console

from shipyard.app import create_app
from shipyard.core import Settings, Signature
from shipyard.core import errors as e
from shipyard.demo import FEATURES, LABEL, MonthResult, replay_month
from shipyard.logstore import LogReader
from shipyard.monitoring import Monitor, load_kpis, parse_kpi, render_html
from shipyard.monitoring import _repository as repo
from shipyard.registry import Registry
from shipyard.retraining import load_specs

END = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)


@pytest.fixture(scope="module")
def month(
    tmp_path_factory: pytest.TempPathFactory, fraud_model: Any, fraud_data: pd.DataFrame
) -> Iterator[tuple[Settings, MonthResult, str]]:
    home = tmp_path_factory.mktemp("month")
    settings = Settings(home=home, auth="off", actor="tester")
    with Registry.from_settings(settings) as registry:
        registry.register(
            fraud_model, name="fraud-detector", sample=fraud_data[FEATURES].iloc[:2000],
            training_data=fraud_data[[*FEATURES, LABEL]], threshold=0.1, aliases=["production"],
        )  # fmt: skip
    out = io.StringIO()
    result = replay_month(
        settings,
        "fraud-detector",
        1,
        end=END,
        rows_per_week=5000,
        console=Console(file=out, width=150),
    )
    return settings, result, out.getvalue()


def _summary(settings: Settings) -> dict[str, Any]:
    with Registry.from_settings(settings) as registry, registry.database.transaction() as conn:
        snapshot = repo.latest_snapshot(conn, "fraud-detector", "7d")
    assert snapshot is not None
    summary: dict[str, Any] = snapshot["versions"]["1"]
    return summary


def test_accuracy_declines_week_by_week_and_the_last_week_is_estimated_before_its_labels(
    month: tuple[Settings, MonthResult, str],
) -> None:
    _, result, _ = month
    accuracy = [w["accuracy"] for w in result.weeks]
    assert len(accuracy) == 4
    assert accuracy[0] > accuracy[1] > accuracy[2] > accuracy[3]
    assert accuracy[0] - accuracy[3] > 0.04
    assert [w["volume"] for w in result.weeks] == [5000] * 4
    # labels for the last week are still coming in: about a quarter
    assert 0.15 < result.weeks[3]["labelled"] / 5000 < 0.35
    assert all(w["estimated"] is not None for w in result.weeks)


def test_the_amount_shift_is_named_and_steady_features_are_not(
    month: tuple[Settings, MonthResult, str],
) -> None:
    settings, result, _ = month
    assert "transaction_amount" in result.drifted
    columns = _summary(settings)["drift"]["columns"]
    for steady in ("customer_age", "num_tx_last_24h", "device_risk_score"):
        assert columns[steady]["status"] == "ok", columns[steady]["reason"]


def test_the_decline_is_explained_by_segment_and_by_a_change_in_the_error_rate(
    month: tuple[Settings, MonthResult, str],
) -> None:
    settings, result, _ = month
    assert result.concept_drift
    assert {"merchant_category=gaming", "merchant_category=online_retail"} & set(result.segments)
    concept = _summary(settings)["concept"]
    worse = [c for c in concept["changes"] if c["worse"]]
    assert worse
    assert worse[-1]["error_rate_after"] > worse[-1]["error_rate_before"]


def test_the_root_cause_ranks_features_by_how_far_their_contribution_moved(
    month: tuple[Settings, MonthResult, str],
) -> None:
    """The month shifts the merchant mix towards riskier merchants and the amounts upward.
    Ranked by effect on the answers, the merchant mix comes first: the amounts drift most (the
    drift test names them) but the model leans on them little."""
    settings, _, _ = month
    attributed = _summary(settings)["root_cause"]["attributions"]
    assert (attributed["method"], attributed["space"]) == ("linear", "log-odds")
    assert attributed["reference_rows"] == 200
    assert attributed["current_rows"] == 200
    shifted = attributed["shifted"]
    first = shifted[0]
    assert first["feature"] == "merchant_category"
    assert first["current_mean"] > first["reference_mean"]  # pushes towards fraud now
    assert first["shift"] == pytest.approx(first["current_mean"] - first["reference_mean"])
    amount = next((s for s in shifted if s["feature"] == "transaction_amount"), None)
    assert amount is None or abs(amount["shift"]) < abs(first["shift"]) / 5
    shifts = [abs(s["shift"]) for s in shifted]
    assert shifts == sorted(shifts, reverse=True)


def test_checks_carry_ok_warning_failing_marks(month: tuple[Settings, MonthResult, str]) -> None:
    settings, _, _ = month
    checks = {c["name"]: c for c in _summary(settings)["checks"]}
    assert checks["drifted features"]["status"] == "warning"
    assert "transaction_amount" in checks["drifted features"]["note"]
    assert checks["accuracy"]["target"] == 0.90  # taken from the alert rule
    assert checks["accuracy"]["status"] in {"warning", "failing"}


def test_an_alert_rule_s_threshold_is_the_target_over_the_default(
    month: tuple[Settings, MonthResult, str],
) -> None:
    settings, _, _ = month
    with Registry.from_settings(settings) as registry:
        # defaults far from every rule: a target equal to a rule's threshold came from the rule
        monitor = Monitor(
            registry, LogReader(registry.artifacts), Monitor.from_settings(settings, registry).alert_manager,
            targets={"accuracy": 0.5, "latency_p95_ms": 7.0, "error_rate": 0.3},
        )  # fmt: skip
        report = monitor.run("fraud-detector", window="7d", periods=4, now=END, record=False)
        rules = [r["expression"] for r in monitor.alert_manager.rules("fraud-detector")]  # type: ignore[union-attr]
    checks = {c["name"]: c for c in report.to_dict()["versions"]["1"]["checks"]}
    assert any(r.startswith("accuracy < 0.9") for r in rules)
    assert checks["accuracy"]["target"] == 0.90
    assert checks["latency p95 (ms)"]["target"] == 100.0  # the rule latency_p95 > 100ms
    assert checks["error rate"]["target"] == 0.3  # no rule on it: the default given
    assert checks["latency p95 (ms)"]["status"] == "ok"
    assert {"missing features", "error rate", "concept drift", "false-positive rate"} <= set(checks)


def test_alerts_fired_with_evidence_and_rerunning_does_not_duplicate_them(
    month: tuple[Settings, MonthResult, str],
) -> None:
    settings, result, _ = month
    assert "drift(transaction_amount)" in result.alerts
    with Registry.from_settings(settings) as registry:
        monitor = Monitor.from_settings(settings, registry)
        assert monitor.alert_manager is not None
        before = monitor.alert_manager.alerts("fraud-detector")
        monitor.run("fraud-detector", window="7d", periods=4, now=END)
        after = monitor.alert_manager.alerts("fraud-detector")
    assert [a["id"] for a in after] == [a["id"] for a in before]
    drift_alert = next(a for a in after if a["evidence"]["rule"] == "drift(transaction_amount)")
    assert drift_alert["status"] == "firing"
    assert "transaction_amount" in drift_alert["evidence"]["drifted"]


def test_once_another_version_serves_the_old_versions_alerts_are_resolved(
    month: tuple[Settings, MonthResult, str],
    tmp_path: Path,
    fraud_model: Any,
    fraud_data: pd.DataFrame,
) -> None:
    settings, _, _ = month
    shutil.copytree(settings.home, tmp_path / "home")  # the month stays as the others see it
    copy = Settings(home=tmp_path / "home", auth="off", actor="tester")
    with Registry.from_settings(copy) as registry:
        registry.register(
            fraud_model, name="fraud-detector", sample=fraud_data[FEATURES].iloc[:2000]
        )
        registry.deploy("fraud-detector", 2)
        monitor = Monitor.from_settings(copy, registry)
        assert monitor.alert_manager is not None
        firing = monitor.alert_manager.alerts("fraud-detector", "firing")
        # evaluated in the afternoon: the windows end at the next midnight, the alerts resolve now
        afternoon = END - timedelta(hours=9)
        report = monitor.run("fraud-detector", window="7d", periods=4, now=afternoon)
        after = {a["id"]: a for a in monitor.alert_manager.alerts("fraud-detector")}
        resolved = [e for e in registry.history("fraud-detector") if e.action == "alert.resolved"]
    assert firing
    assert {a["version"] for a in firing} == {1}
    assert sorted(a["id"] for a in report.alerts) == sorted(a["id"] for a in firing)
    for alert in firing:
        assert after[alert["id"]]["status"] == "resolved"
        assert after[alert["id"]]["resolved_at"] == afternoon  # not the window's end, ahead
        assert after[alert["id"]]["evidence"]["resolution"] == (
            "version 1 no longer serves fraud-detector"
        )
    assert sorted(e.details["alert"] for e in resolved) == sorted(a["id"] for a in firing)
    assert all(e.details["reason"] == "version no longer serves" for e in resolved)


def test_the_snapshot_and_the_html_report(month: tuple[Settings, MonthResult, str]) -> None:
    settings, result, text = month
    assert result.html is not None
    page = result.html.read_text()
    assert page.startswith("<!doctype html>")
    assert page.count("<svg") >= 5
    assert "http://" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    )  # nothing fetched from anywhere
    assert "transaction_amount" in page
    assert "a month in production" in text
    with Registry.from_settings(settings) as registry, registry.database.transaction() as conn:
        history = repo.snapshots(conn, "fraud-detector", "7d", 10)
    assert history
    assert render_html(history[0]["summary"]).startswith("<!doctype html>")


def test_monitoring_over_http(month: tuple[Settings, MonthResult, str]) -> None:
    settings, _, _ = month
    with TestClient(create_app(settings)) as client:
        body = client.get(
            "/v1/models/fraud-detector/monitoring", params={"window": "7d", "periods": 4}
        ).json()
        assert body["model"] == "fraud-detector"
        assert "transaction_amount" in body["versions"]["1"]["drift"]["drifted"]
        page = client.get(
            "/v1/models/fraud-detector/monitoring/report.html",
            params={"window": "7d", "periods": 4},
        )
        assert page.headers["content-type"].startswith("text/html")
        html = page.text
        assert html.startswith("<!doctype html>")
        assert "shipyard monitoring: fraud-detector" in html
        assert "Version 1 " in html
        assert "transaction_amount: reference vs current (drift)" in html
        assert '<span class="badge warning">warning</span>' in html
        assert client.get("/v1/alerts", params={"model": "fraud-detector"}).json()["alerts"]
        rules = client.get("/v1/models/fraud-detector/alert-rules").json()["rules"]
        assert {r["expression"] for r in rules} >= {"drift(transaction_amount)"}
        added = client.post(
            "/v1/models/fraud-detector/alert-rules", json={"expression": "recall < 0.2 over 7d"}
        )
        assert added.status_code == 201
        bad = client.post("/v1/models/fraud-detector/alert-rules", json={"expression": "vibes > 3"})
        assert bad.status_code == 422
        assert "unknown metric 'vibes'" in bad.json()["error"]["message"]
        assert client.delete(f"/v1/alert-rules/{added.json()['id']}").json() == {
            "removed": added.json()["id"]
        }
        assert client.get("/v1/models/nope/monitoring").status_code == 404
        fortnight = client.get(
            "/v1/models/fraud-detector/monitoring", params={"window": "fortnight"}
        )
        assert fortnight.status_code == 400
        assert "query.window" in fortnight.json()["error"]["message"]


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    env.update(SHIPYARD_HOME=str(settings.home), COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "shipyard", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_monitor_commands(month: tuple[Settings, MonthResult, str], tmp_path: Path) -> None:
    settings, _, _ = month
    page = tmp_path / "report.html"
    run = _cli(
        settings,
        "monitor",
        "run",
        "fraud-detector",
        "--window",
        "7d",
        "--periods",
        "4",
        "--now",
        END.isoformat(),  # the month's end, as the fixture replayed it (not today's date)
        "--html",
        str(page),
    )
    assert run.returncode == 0, run.stderr
    assert "drift vs the training data" in run.stdout
    assert "transaction_amount" in run.stdout
    assert page.read_text().startswith("<!doctype html>")
    report = json.loads(
        _cli(settings, "monitor", "report", "fraud-detector", "--window", "7d", "--json").stdout
    )
    assert report["period"]["end"] == END.isoformat()  # as of --now, whatever today is
    assert report["versions"]["1"]["windows"][0]["volume"] == 5000
    alerts = json.loads(
        _cli(settings, "monitor", "alerts", "--model", "fraud-detector", "--json").stdout
    )
    assert any(a["status"] == "firing" for a in alerts)
    added = _cli(
        settings, "monitor", "rule-add", "fraud-detector", "psi(transaction_amount) > 0.2", "--json"
    )
    assert added.returncode == 0, added.stderr
    bad = _cli(settings, "monitor", "rule-add", "fraud-detector", "accuracy <")
    assert bad.returncode == 2
    assert "cannot read the rule" in bad.stderr
    assert (
        _cli(settings, "monitor", "rule-remove", str(json.loads(added.stdout)["id"])).returncode
        == 0
    )


def test_logs_read_back_hold_what_was_replayed(month: tuple[Settings, MonthResult, str]) -> None:
    settings, _, _ = month
    with Registry.from_settings(settings) as registry:
        reader = LogReader(registry.artifacts)
        assert reader.predictions("fraud-detector").num_rows == 20_000
        labels = reader.labels()
    assert 15_000 + 900 < labels.num_rows < 15_000 + 1800


def test_business_kpis_match_a_computation_by_hand_over_the_logs(
    month: tuple[Settings, MonthResult, str],
) -> None:
    settings, _, _ = month
    declared = {
        "fraud_blocked_usd": "sum(transaction_amount) where label = 1 and prediction = 1",
        "fraud_missed_usd": "sum(transaction_amount) where label = 1 and prediction != 1",
        "approval_rate": "rate where prediction = 0",
        "flagged": "count(*) where prediction = 1",
        "mean_flagged_score": "mean(score) where prediction = 1",
        "gaming_over_100": "count(*) where merchant_category = 'gaming' and transaction_amount > 100",
    }
    kpis = [parse_kpi(name, text) for name, text in declared.items()]
    with Registry.from_settings(settings) as registry:
        reader = LogReader(registry.artifacts)
        monitor = Monitor(registry, reader, kpis={"fraud-detector": kpis})
        report = monitor.run("fraud-detector", window="7d", periods=4, now=END, record=False)
        predictions = reader.predictions("fraud-detector").to_pandas()
        labels = reader.labels().to_pandas()
    start = report.period.start
    rows = predictions[predictions["ts"] >= pd.Timestamp(start)].copy()
    truth = labels.sort_values("received_at").groupby("prediction_id")["label"].last()
    rows["truth"] = rows["prediction_id"].map(truth)
    features = pd.DataFrame(list(rows["features"]), index=rows.index)
    amount = features["transaction_amount"]
    labelled_fraud = rows["truth"].astype(str) == "1"
    flagged = rows["label"].astype(str) == "1"
    expected = {
        "fraud_blocked_usd": amount[labelled_fraud & flagged].sum(),
        "fraud_missed_usd": amount[labelled_fraud & ~flagged].sum(),
        "approval_rate": (rows["label"].astype(str) == "0").mean(),
        "flagged": float(flagged.sum()),
        "mean_flagged_score": rows.loc[flagged, "score"].mean(),
        "gaming_over_100": float(
            ((features["merchant_category"] == "gaming") & (amount > 100)).sum()
        ),
    }
    got = {k["name"]: k for k in report.versions[1]["kpis"]}
    assert set(got) == set(declared)
    for name, value in expected.items():
        assert got[name]["total"] == pytest.approx(value, rel=1e-9), name
        assert got[name]["expression"] == declared[name]
    # per window: the blocked dollars of the weeks add up to the whole
    weeks = [w for w in got["fraud_blocked_usd"]["windows"] if w is not None]
    assert len(weeks) == 4
    assert sum(weeks) == pytest.approx(expected["fraud_blocked_usd"], rel=1e-9)
    assert got["fraud_blocked_usd"]["last"] == weeks[-1]
    assert expected["fraud_blocked_usd"] > 0


def test_a_kpi_over_a_feature_the_model_does_not_log_says_so(
    month: tuple[Settings, MonthResult, str],
) -> None:
    settings, _, _ = month
    kpis = [parse_kpi("odd", "sum(no_such_feature)")]
    with Registry.from_settings(settings) as registry:
        monitor = Monitor(registry, LogReader(registry.artifacts), kpis={"fraud-detector": kpis})
        report = monitor.run("fraud-detector", window="7d", periods=4, now=END, record=False)
    (odd,) = report.versions[1]["kpis"]
    assert odd["total"] is None
    assert "no_such_feature" in odd["error"]  # type: ignore[typeddict-item]


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        ("sum(amount); DROP TABLE x", "cannot read"),
        ("median(amount)", "not a function"),
        ("rate", "needs a where"),
        ("sum(*)", "only count takes"),
        ("sum(amount) where merchant > 'a'", "text compares"),
        ("sum(amount) where", "ends too early"),
        ("sum(", "ends too early"),
        ("count(", "ends too early"),
        ("sum(amount) where x = y", "compare x with"),
        ('sum("amount")', "unexpected"),
    ],
)
def test_a_kpi_that_is_not_in_the_grammar_is_refused_saying_why(
    expression: str, words: str
) -> None:
    with pytest.raises(e.InvalidInput, match=words):
        parse_kpi("k", expression)


def test_kpis_are_read_beside_the_model_in_shipyard_yaml(tmp_path: Path) -> None:
    config = tmp_path / "shipyard.yaml"
    config.write_text(
        "models:\n  fraud-detector:\n    kpis:\n"
        "      fraud_blocked_usd: sum(transaction_amount) where label = 1 and prediction = 1\n"
        "      approval_rate: rate where prediction = 0\n"
    )
    found = load_kpis(config)
    assert [k.name for k in found["fraud-detector"]] == ["fraud_blocked_usd", "approval_rate"]
    assert load_specs(config) == {}  # KPIs alone make no retraining spec
    config.write_text("models:\n  m:\n    kpis:\n      bad: median(x)\n")
    with pytest.raises(e.ConfigurationError, match=r"model .m.: .*not a function"):
        load_kpis(config)


def test_a_version_registered_without_rows_is_compared_with_its_first_answers(
    tmp_path: Path, fraud_model: Any, fraud_data: pd.DataFrame
) -> None:
    """A federated model has no training rows at the server: registered without a sample, its
    inputs are compared with its first 1,000 answers, and the month's drift in amounts is
    found against them."""
    settings = Settings(home=tmp_path, auth="off", actor="tester")
    with Registry.from_settings(settings) as registry:
        registry.register(
            fraud_model, name="fraud-detector", signature=Signature.infer(fraud_data[FEATURES]),
            threshold=0.1, aliases=["production"],
        )  # fmt: skip
        assert registry.read_artifact("fraud-detector", 1, "reference/sample.parquet") is None
    replay_month(
        settings, "fraud-detector", 1, end=END, rows_per_week=2000,
        console=Console(file=io.StringIO(), width=150),
    )  # fmt: skip
    drift = _summary(settings)["drift"]
    assert drift["reference"].startswith("its first 1000 answers (")
    assert drift["rows_reference"] == 1000
    assert "transaction_amount" in drift["drifted"]
    for steady in ("customer_age", "num_tx_last_24h"):
        assert drift["columns"][steady]["status"] == "ok", drift["columns"][steady]["reason"]

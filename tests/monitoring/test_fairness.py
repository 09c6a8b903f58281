"""Bias testing: per-group outcomes and the gaps between groups, the same numbers fairlearn
gives, as monitoring metrics and alert rules, and as retraining gates."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference
from sklearn.linear_model import LogisticRegression
from tests.monitoring._logdata import log_scored

from shipyard.core import Settings
from shipyard.core import errors as e
from shipyard.logstore import LogReader, LogWriter
from shipyard.monitoring import (
    AlertManager,
    Attribute,
    FairnessSpec,
    Monitor,
    fairness_metrics,
    fairness_of,
    group_metrics,
    parse_rule,
)
from shipyard.registry import Registry
from shipyard.retraining import Pipeline, RetrainSpec, parse_gate
from shipyard.serving import PredictionService
from shipyard.tracking import Tracker

END = datetime(2026, 11, 20, tzinfo=UTC)
FEATURES = ["amount", "customer_age"]
AGE_BANDS = {"name": "customer_age_band", "column": "customer_age", "edges": [30, 45, 65]}


def transactions(rows: int, seed: int = 0) -> pd.DataFrame:
    """Fraud whose rate rises with age, so a model that learns it flags older customers more."""
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 90, rows)
    amount = rng.lognormal(3.5, 1.0, rows).round(2)
    risk = 0.04 * (age - 50) + 0.01 * amount + rng.normal(0, 1, rows)
    return pd.DataFrame(
        {
            "amount": amount,
            "customer_age": age,
            "channel": rng.choice(["web", "pos", "app"], rows, p=[0.5, 0.45, 0.05]),
            "is_fraud": (risk > np.quantile(risk, 0.8)).astype(int),
        }
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_gaps_are_fairlearn_s(seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows = 5000
    groups = rng.choice(["a", "b", "c", "d"], rows)
    actual = rng.random(rows) < np.where(groups == "a", 0.3, 0.15)
    flagged = rng.random(rows) < np.where(actual, 0.7, 0.1) + np.where(groups == "c", 0.1, 0)
    found = group_metrics(actual, flagged, groups, min_group_rows=1)
    assert found["demographic_parity_difference"] == pytest.approx(
        demographic_parity_difference(actual, flagged, sensitive_features=groups), abs=1e-12
    )
    assert found["equalized_odds_difference"] == pytest.approx(
        equalized_odds_difference(actual, flagged, sensitive_features=groups), abs=1e-12
    )
    assert found["fairness_gap"] == max(
        found["demographic_parity_difference"], found["equalized_odds_difference"]
    )
    by_group = {g["group"]: g for g in found["groups"]}
    mine = groups == "b"
    assert by_group["b"]["rows"] == int(mine.sum())
    assert by_group["b"]["selection_rate"] == pytest.approx(flagged[mine].mean())
    assert by_group["b"]["true_positive_rate"] == pytest.approx(
        flagged[mine & actual].sum() / actual[mine].sum()
    )


def test_bands_and_small_groups() -> None:
    band = Attribute(**AGE_BANDS)  # type: ignore[arg-type]
    ages = [18, 29.9, 30, 44, 45, 64, 65, 90, None]
    assert band.groups(ages).tolist() == [
        "<30", "<30", "30-45", "30-45", "45-65", "45-65", ">=65", ">=65", "(missing)",
    ]  # fmt: skip
    # the bands are listed low to high (not in text order, where ">=65" would sort first)
    spec = FairnessSpec.model_validate({"attributes": [AGE_BANDS], "min_group_rows": 1})
    listed = fairness_metrics(
        spec, {"customer_age": np.array(ages)}, np.zeros(9, bool), np.zeros(9, bool)
    )["customer_age_band"]["groups"]
    assert [g["group"] for g in listed] == ["<30", "30-45", "45-65", ">=65", "(missing)"]
    # a group under min_group_rows is shown, not compared: the gap is between the others
    actual = np.array([True, False] * 50 + [True] * 5)
    flagged = np.array([True, False] * 50 + [False] * 5)
    groups = np.array(["big"] * 50 + ["large"] * 50 + ["tiny"] * 5)
    found = group_metrics(actual, flagged, groups, min_group_rows=30)
    assert found["compared_groups"] == 2
    assert [g["compared"] for g in found["groups"]] == [True, True, False]
    assert found["fairness_gap"] == 0.0
    everything = group_metrics(actual, flagged, groups, min_group_rows=1)
    assert everything["equalized_odds_difference"] == 1.0  # tiny's TPR is 0, the others' 1


def test_declarations_are_checked_and_say_what_is_wrong(tmp_path: Path) -> None:
    spec = FairnessSpec.model_validate({"attributes": ["channel", AGE_BANDS]})
    assert [a.name for a in spec.attributes] == ["channel", "customer_age_band"]
    with pytest.raises(e.InvalidInput, match="declared: channel, customer_age_band"):
        spec.attribute("gender")
    bad = {"models": {"fraud": {"fairness": {"attributes": [{**AGE_BANDS, "edges": [45, 30]}]}}}}
    with pytest.raises(e.ConfigurationError, match=r"fraud.*ascending order"):
        fairness_of(bad, "shipyard.yaml")
    with pytest.raises(e.ConfigurationError, match="x: Extra inputs are not permitted"):
        fairness_of({"models": {"fraud": {"fairness": {"attributes": ["a"], "x": 1}}}}, "f")
    with pytest.raises(e.InvalidInput, match="reads column 'customer_age'"):
        fairness_metrics(spec, {"channel": np.array(["web"])}, np.array([True]), np.array([True]))
    with pytest.raises(e.InvalidInput, match="4000 distinct values"):
        group_metrics(np.zeros(4000, bool), np.zeros(4000, bool), np.arange(4000).astype(str))


def test_gates_and_rules_on_fairness_are_read_and_refused_when_malformed() -> None:
    gate = parse_gate("fairness_gap(customer_age_band) <= 0.05")
    assert (gate.key, gate.op, gate.value) == ("fairness_gap(customer_age_band)", "<=", 0.05)
    relative = parse_gate("equalized_odds_difference(channel) <= champion + 0.01")
    assert relative.bar({"equalized_odds_difference(channel)": 0.04}) == pytest.approx(0.05)
    with pytest.raises(e.InvalidInput, match="needs the sensitive attribute"):
        parse_gate("fairness_gap <= 0.05")
    with pytest.raises(e.InvalidInput, match="only fairness metrics"):
        parse_gate("auc(channel) >= 0.8")
    with pytest.raises(ValueError, match=r"declare customer_age_band under fairness\.attributes"):
        RetrainSpec(name="fraud", train="t:f", gates=["fairness_gap(customer_age_band) <= 0.05"])
    rule = parse_rule("fairness_gap(customer_age_band) > 5% over 7d with >= 500 labels")
    assert (rule.metric, rule.feature, rule.threshold, rule.min_labels) == (
        "fairness_gap", "customer_age_band", 0.05, 500,
    )  # fmt: skip
    with pytest.raises(e.InvalidInput, match="needs a sensitive attribute"):
        parse_rule("demographic_parity_difference > 0.1")
    with pytest.raises(e.InvalidInput, match="difference of rates"):
        parse_rule("fairness_gap(channel) > 5ms")


def write_project(folder: Path, gates: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "trainer.py").write_text(
        textwrap.dedent(
            """
            from sklearn.linear_model import LogisticRegression

            def train(frame, params):
                return LogisticRegression(max_iter=500).fit(
                    frame[["amount", "customer_age"]], frame["is_fraud"]
                )
            """
        )
    )
    data = transactions(3000)
    data["timestamp"] = pd.date_range("2026-10-01", periods=len(data), freq="15min", tz="UTC")
    data.to_parquet(folder / "transactions.parquet")
    return folder


def pipeline_for(settings: Settings, folder: Path, gates: list[str]) -> dict[str, Any]:
    spec = RetrainSpec.model_validate(
        {
            "name": "fraud", "train": "trainer:train", "gates": gates,
            "data": {"source": "parquet", "path": "transactions.parquet", "label": "is_fraud",
                     "features": FEATURES},
            "fairness": {"attributes": [AGE_BANDS, "channel"], "min_group_rows": 50},
        }
    )  # fmt: skip
    with Registry.from_settings(settings) as registry:
        pipeline = Pipeline(
            registry, Tracker(registry.database, registry.artifacts), LogReader(registry.artifacts),
            spec, code_dir=folder, clock=lambda: END,
        )  # fmt: skip
        return pipeline.train_and_canary({"kind": "manual"}, canary=False)


def test_a_retrain_is_gated_on_the_gap_between_groups(settings: Settings, tmp_path: Path) -> None:
    folder = write_project(tmp_path / "project", [])
    strict = pipeline_for(settings, folder, ["fairness_gap(customer_age_band) <= 0.05"])
    assert strict["status"] == "rejected"
    validate = next(s for s in strict["steps"] if s["step"] == "validate")["evidence"]
    (gate,) = validate["gates"]
    assert gate["metric"] == "fairness_gap(customer_age_band)"
    assert gate["value"] > 0.05  # the model flags the old far more often than the young
    assert gate["passed"] is False
    assert "fairness_gap(channel)" in validate["candidate"]

    # the same gap, recomputed from the holdout the pipeline kept, is what the gate read
    with Registry.from_settings(settings) as registry:
        tracker = Tracker(registry.database, registry.artifacts)
        run = tracker.get(
            next(s for s in strict["steps"] if s["step"] == "train")["evidence"]["run"]
        )
        holdout = tracker.data.load(run.datasets["holdout"]["sha256"]).to_pandas()
        train = tracker.data.load(run.datasets["train"]["sha256"]).to_pandas()
    model = LogisticRegression(max_iter=500).fit(train[FEATURES], train["is_fraud"])
    flagged = model.predict_proba(holdout[FEATURES])[:, 1] >= 0.5
    bands = Attribute(**AGE_BANDS).groups(holdout["customer_age"])  # type: ignore[arg-type]
    actual = holdout["is_fraud"].to_numpy() == 1
    expected = max(
        demographic_parity_difference(actual, flagged, sensitive_features=bands),
        equalized_odds_difference(actual, flagged, sensitive_features=bands),
    )
    assert gate["value"] == pytest.approx(expected, abs=1e-9)

    loose = pipeline_for(settings, folder, ["fairness_gap(customer_age_band) <= 0.95"])
    assert loose["status"] == "registered"


def test_monitoring_measures_the_gaps_and_a_rule_fires_on_them(
    settings: Settings, tmp_path: Path
) -> None:
    project = tmp_path / "shipyard.yaml"
    project.write_text(
        "models:\n  fraud:\n    fairness:\n      attributes:\n"
        "        - {name: customer_age_band, column: customer_age, edges: [30, 45, 65]}\n"
    )
    settings = settings.model_copy(update={"config": project})
    data = transactions(2400, seed=3)
    model = LogisticRegression(max_iter=500).fit(data[FEATURES], data["is_fraud"])
    with Registry.from_settings(settings) as registry:
        registry.register(model, name="fraud", sample=data[FEATURES].head(500))
        service = PredictionService(registry, settings)
        writer = LogWriter(tmp_path / "spool", registry.artifacts, fsync_seconds=0)
        start = (END - timedelta(days=1)).timestamp()
        outputs, _ = log_scored(
            service, writer, "fraud", data[FEATURES], data["is_fraud"].to_numpy(), start
        )
        writer.flush()
        monitor = Monitor.from_settings(settings, registry)
        assert monitor.alert_manager is not None
        monitor.alert_manager.add_rule("fraud", "fairness_gap(customer_age_band) > 0.1")
        report = monitor.run("fraud", window="1d", periods=1, now=END - timedelta(minutes=1))
    found = report.to_dict()["versions"]["1"]["fairness"]["customer_age_band"]
    flagged = np.asarray([str(label) == "1" for label in outputs["label"]])
    actual = data["is_fraud"].to_numpy() == 1
    bands = Attribute(**AGE_BANDS).groups(data["customer_age"])  # type: ignore[arg-type]
    assert found["rows"] == 2400
    assert found["demographic_parity_difference"] == pytest.approx(
        demographic_parity_difference(actual, flagged, sensitive_features=bands)
    )
    assert found["equalized_odds_difference"] == pytest.approx(
        equalized_odds_difference(actual, flagged, sensitive_features=bands)
    )
    (alert,) = report.alerts
    assert alert["status"] == "firing"
    assert alert["value"] == pytest.approx(found["fairness_gap"])
    assert found["fairness_gap"] > 0.1


def test_a_fairness_rule_must_name_a_declared_attribute(settings: Settings) -> None:
    data = transactions(300)
    model = LogisticRegression(max_iter=500).fit(data[FEATURES], data["is_fraud"])
    declared = {"fraud": FairnessSpec.model_validate({"attributes": [AGE_BANDS]})}
    with Registry.from_settings(settings) as registry:
        registry.register(model, name="fraud", sample=data[FEATURES].head(50))
        registry.register(model, name="other", sample=data[FEATURES].head(50))
        manager = AlertManager(registry.database, fairness=declared)
        with pytest.raises(e.InvalidInput, match="declared: customer_age_band"):
            manager.add_rule("fraud", "fairness_gap(gender) > 0.1")
        with pytest.raises(e.InvalidInput, match="other declares no sensitive attributes"):
            manager.add_rule("other", "fairness_gap(customer_age_band) > 0.1")
        rule = manager.add_rule("fraud", "fairness_gap(customer_age_band) > 0.1")
        assert rule["expression"] == "fairness_gap(customer_age_band) > 0.1"

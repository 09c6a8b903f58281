"""A model card says what a version is for, what it learned from, how it does against its
targets overall and per group, what limits it, where it came from and who let it serve: built
from the real records of a fraud model trained in a tracked run, deployed and monitored."""

from __future__ import annotations

import io
import json
import subprocess
import textwrap
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import demographic_parity_difference
from rich.console import Console
from sklearn.linear_model import LinearRegression, LogisticRegression

from shipyard.core import Settings
from shipyard.core import errors as e
from shipyard.demo import FEATURES, LABEL, replay_month, transactions
from shipyard.demo.training import train
from shipyard.lineage import ModelCard, model_card, render_html, render_markdown
from shipyard.logstore import LogReader
from shipyard.monitoring import AlertManager, binary_outcomes, fairness_metrics, load_fairness
from shipyard.registry import Registry
from shipyard.retraining import Pipeline, RetrainSpec
from shipyard.tracking import Tracker
from tests.lineage.cli import shipyard

MODEL = "fraud-detector"
END = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
PROJECT = """
models:
  fraud-detector:
    card:
      owner: fraud-analytics@example.com
      intended_use: flag card transactions for a person to review <b>before</b> payout
      out_of_scope: declining a payment without a person's review
      limitations:
        - trained on one month of one country's transactions
      contact: "#fraud-models"
    fairness:
      attributes:
        - merchant_category
        - name: customer_age_band
          column: customer_age
          edges: [25, 45, 65, 75]
      min_group_rows: 30
"""
SECTIONS = (
    "Overview",
    "Data",
    "Metrics and targets",
    "Per-group metrics (fairness)",
    "Limitations",
    "Lineage",
    "Approvals",
)


@dataclass
class Fraud:
    """A fraud model trained in a run that kept its data, deployed, and a month monitored."""

    settings: Settings
    project: Path
    model: Any
    threshold: float
    holdout: pd.DataFrame


@pytest.fixture(scope="module")
def fraud(tmp_path_factory: pytest.TempPathFactory) -> Fraud:
    home = tmp_path_factory.mktemp("card")
    project = home / "shipyard.yaml"
    project.write_text(PROJECT)
    settings = Settings(home=home / "home", actor="tester", auth="off", config=project)
    data = transactions(6000, seed=11)
    training, holdout = data.iloc[:4500], data.iloc[4500:]
    model = train(training, {"C": 0.5})
    threshold = float(np.quantile(model.predict_proba(training[FEATURES])[:, 1], 0.98))
    with Registry.from_settings(settings) as registry:
        tracker = Tracker(registry.database, registry.artifacts, actor="tester")
        with tracker.start_run(
            experiment="fraud", params={"C": 0.5}, entrypoint="shipyard.demo.training:train",
            seed=3,
        ) as run:  # fmt: skip
            run.log_dataset("train", training, key="transaction_id", label=LABEL)
            run.log_dataset("holdout", holdout, key="transaction_id", label=LABEL)
            registry.register(
                model, name=MODEL, sample=training[FEATURES].head(500), threshold=threshold,
                purpose="flag card fraud for review", description="logistic regression",
                metrics={"auc": 0.93, "accuracy": 0.975},
            )  # fmt: skip
        registry.deploy(MODEL, 1, reason="first release")
        plain = LogisticRegression(max_iter=500).fit(training[FEATURES[:2]], training[LABEL])
        registry.register(plain, name=MODEL, sample=training[FEATURES[:2]].head(50), lineage={"parent": 1})  # fmt: skip
        AlertManager(registry.database).add_rule(MODEL, "auc < 0.99")
    # a month in production: live metrics, a snapshot, alert rules and the alerts they raised
    replay_month(settings, MODEL, 1, end=END, rows_per_week=2000, console=Console(file=io.StringIO()))  # fmt: skip
    return Fraud(settings, project, model, threshold, holdout)


def card_of(settings: Settings, ref: str, project: Path | None = None) -> ModelCard:
    with Registry.from_settings(settings) as registry:
        tracker = Tracker(registry.database, registry.artifacts)
        return model_card(registry, tracker, ref, project=project or settings.config)


def test_the_card_lists_the_data_versions_its_run_kept(fraud: Fraud) -> None:
    card = card_of(fraud.settings, f"{MODEL}:1")
    with Registry.from_settings(fraud.settings) as registry:
        run = Tracker(registry.database, registry.artifacts).get(card.lineage.run_id or "")
    assert [(d.role, d.rows, d.kept) for d in card.data] == [("train", 4500, True), ("holdout", 1500, True)]  # fmt: skip
    for entry in card.data:
        assert entry.sha256 == run.datasets[entry.role]["sha256"]
        assert entry.key == ["transaction_id"]
        assert entry.label == LABEL
        assert entry.created_at is not None
        assert LABEL in entry.columns
    # without training_data=, registration fingerprints the sample it was given
    assert card.data_fingerprint is not None
    assert card.data_fingerprint["rows"] == 500
    assert card.owner == "fraud-analytics@example.com"
    assert card.intended_use.startswith("flag card transactions")
    assert card.aliases == ["production"]
    assert (card.task, card.threshold) == ("binary", fraud.threshold)


def test_per_group_metrics_are_the_holdout_s_as_fairlearn_measures_them(fraud: Fraud) -> None:
    card = card_of(fraud.settings, f"{MODEL}:1")
    assert card.groups.status == "measured"
    holdout = fraud.holdout
    scores = fraud.model.predict_proba(holdout[FEATURES])[:, 1]
    actual, flagged = binary_outcomes(scores, holdout[LABEL].to_numpy(), 1, fraud.threshold)
    spec = load_fairness(fraud.project)[MODEL]
    columns = {str(c): holdout[c].to_numpy() for c in holdout}
    expected = fairness_metrics(spec, columns, actual, flagged)
    assert card.groups.attributes == expected  # the same flags, so the same numbers exactly
    assert card.groups.min_group_rows == 30
    for attribute in ("merchant_category", "customer_age_band"):
        report = card.groups.attributes[attribute]
        compared = {g["group"] for g in report["groups"] if g["compared"]}
        groups = spec.attribute(attribute).groups(holdout[spec.attribute(attribute).source])
        kept = np.isin(groups.astype(str), sorted(compared))
        assert report["demographic_parity_difference"] == pytest.approx(
            demographic_parity_difference(
                actual[kept], flagged[kept], sensitive_features=groups[kept].astype(str)
            )
        )
    bands = {g["group"]: g for g in card.groups.attributes["customer_age_band"]["groups"]}
    assert set(bands) == {"<25", "25-45", "45-65", "65-75", ">=75"}
    assert bands[">=75"]["rows"] < 30
    assert not bands[">=75"]["compared"]


def test_limitations_are_the_written_ones_and_the_ones_found(fraud: Fraud) -> None:
    card = card_of(fraud.settings, f"{MODEL}:1")
    by_kind: dict[str, list[str]] = {}
    for limitation in card.limitations:
        by_kind.setdefault(limitation.kind, []).append(limitation.text)
    assert by_kind["written"] == ["trained on one month of one country's transactions"]
    (small,) = (t for t in by_kind["small_groups"] if t.startswith("customer_age_band"))
    assert ">=75 (" in small
    assert "under min_group_rows 30" in small
    assert any(t.startswith("registered auc 0.93 misses its target >= 0.99") for t in by_kind["target"])  # fmt: skip
    assert any("open alert: drift(transaction_amount)" in t for t in by_kind["alert"])
    assert "holdout" not in by_kind  # its run kept one
    assert "reproducibility" not in by_kind  # entrypoint and training data are recorded
    gaps = {a: r["fairness_gap"] for a, r in card.groups.attributes.items()}
    above = sorted(a for a, gap in gaps.items() if gap is not None and gap > 0.1)
    assert sorted(t.split(":")[0] for t in by_kind.get("fairness_gap", [])) == above


def test_metrics_stand_beside_their_targets_registered_and_live(fraud: Fraud) -> None:
    card = card_of(fraud.settings, f"{MODEL}:1")
    rows = {(m.source, m.name): m for m in card.metrics}
    auc = rows["registered", "auc"]
    assert (auc.target, auc.met, auc.basis) == (">= 0.99", False, "alert rule 'auc < 0.99'")
    registered = rows["registered", "accuracy"]
    assert (registered.target, registered.met) == (">= 0.9", True)
    with Registry.from_settings(fraud.settings) as registry:
        monitor_summary = _latest_summary(registry)
    live = rows["live", "accuracy"]
    assert live.value == pytest.approx(monitor_summary["metrics"]["accuracy"])
    assert live.basis == "alert rule 'accuracy < 0.90 over 7d with >= 500 labels'"
    assert live.met == (live.value >= 0.9)
    assert rows["live", "latency_p95"].target == "<= 100"
    assert card.live is not None
    assert card.live["window"] == "7d"


def _latest_summary(registry: Registry) -> dict[str, Any]:
    from shipyard.monitoring import Monitor

    snapshot = Monitor(registry, LogReader(registry.artifacts)).last_snapshot(MODEL)
    assert snapshot is not None
    summary: dict[str, Any] = dict(snapshot["versions"]["1"])
    return summary


def test_approvals_name_who_registered_and_deployed_and_the_lineage_is_kept(fraud: Fraud) -> None:
    card = card_of(fraud.settings, f"{MODEL}:1")
    what = [(a.what, a.actor) for a in card.approvals]
    assert what[:2] == [("registered", "tester"), ("deployed", "tester")]
    deployed = card.approvals[1]
    assert "1 primary 100%" in deployed.detail
    assert "first release" in deployed.detail
    assert ("alias set", "tester") in what
    lineage = card.lineage
    assert lineage.entrypoint == "shipyard.demo.training:train"
    assert (lineage.seed, lineage.params) == (3, {"C": 0.5})
    assert "scikit-learn" in lineage.packages
    assert lineage.parent is None


def test_a_version_registered_outside_a_run_has_no_data_and_says_what_it_lacks(
    fraud: Fraud,
) -> None:
    card = card_of(fraud.settings, f"{MODEL}:2")
    assert card.data == []
    assert card.lineage.parent == 1
    assert card.lineage.run_id is None
    kinds = {limitation.kind: limitation.text for limitation in card.limitations}
    assert "registered outside a tracked run: no holdout" in kinds["holdout"]
    assert kinds["reproducibility"].startswith(
        f"cannot be reproduced: {MODEL}:2 was registered outside a tracked run"
    )
    assert card.groups.status == "no holdout"
    text = render_markdown(card)
    assert "registered outside a tracked run: no data versions" in text
    assert [(a.what, a.detail) for a in card.approvals] == [("registered", "outside a run")]


def test_the_markdown_and_the_html_carry_the_same_sections(fraud: Fraud) -> None:
    card = card_of(fraud.settings, f"{MODEL}:1")
    markdown = render_markdown(card)
    page = render_html(card)
    assert markdown.startswith(f"# Model card: {MODEL}:1\n")
    assert page.startswith("<!doctype html>")
    assert page.rstrip().endswith("</body></html>")
    assert "<script" not in page
    assert "<link" not in page
    assert 'src="' not in page  # nothing fetched from the network
    for title in SECTIONS:
        assert f"\n## {title}\n" in markdown
        assert f"<h2>{title}</h2>" in page
    # a person's text is text: escaped on the page, as written in the Markdown
    assert "review <b>before</b> payout" in markdown
    assert "review &lt;b&gt;before&lt;/b&gt; payout" in page
    for sha in (d.sha256[:12] for d in card.data):
        assert sha in markdown
        assert sha in page
    assert "| >=75 |" in markdown
    assert "no (too few rows)" in page


def test_a_malformed_card_is_refused_naming_the_file_the_model_and_the_field(
    fraud: Fraud, tmp_path: Path
) -> None:
    for card, field in (
        ("{owner: a, team: b}", "team"),
        ("{limitations: [ok, 7]}", "limitations.1"),
        (f"{{contact: {'x' * 300}}}", "contact"),
        ("[owner]", "card"),
    ):
        project = tmp_path / "shipyard.yaml"
        project.write_text(f"models:\n  {MODEL}:\n    card: {card}\n")
        with pytest.raises(e.ConfigurationError) as raised:
            card_of(fraud.settings, f"{MODEL}:1", project)
        message = str(raised.value)
        assert message.startswith(f"{project}: model '{MODEL}': card: {field}")


def test_a_regressor_s_card_says_per_group_metrics_are_for_binary_classifiers(
    settings: Settings, tmp_path: Path
) -> None:
    data = transactions(800, seed=5)
    features = ["customer_age", "hour_of_day"]
    project = tmp_path / "shipyard.yaml"
    project.write_text("models:\n  spend:\n    fairness:\n      attributes: [merchant_category]\n")
    with Registry.from_settings(settings) as registry:
        tracker = Tracker(registry.database, registry.artifacts)
        with tracker.start_run(experiment="spend") as run:
            run.log_dataset("train", data.iloc[:600], label="transaction_amount")
            model = LinearRegression().fit(data[features], data["transaction_amount"])
            registry.register(model, name="spend", sample=data[features].head(50), metrics={"r2": -0.5})  # fmt: skip
        card = model_card(registry, tracker, "spend:1", project=project)
    assert card.task == "regression"
    assert card.groups.status == "not applicable"
    assert "per-group metrics apply to binary classifiers" in card.groups.note
    assert [d.role for d in card.data] == ["train"]
    kinds = [limitation.kind for limitation in card.limitations]
    assert "holdout" in kinds  # the run kept no holdout
    assert "target" in kinds  # r2 below 0 misses the default target
    assert any("does not name its training function" in t.text for t in card.limitations)
    assert card.approvals[0].what == "registered"


TRAINER = """
from shipyard.demo.training import train as demo_train


def train(frame, params):
    return demo_train(frame, params)
"""


def test_a_version_a_pipeline_made_names_its_pipeline_trigger_and_gates(
    sqlite_settings: Settings, tmp_path: Path
) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "card_trainer.py").write_text(textwrap.dedent(TRAINER))
    transactions(3000, seed=2).to_parquet(code / "transactions.parquet")
    spec = RetrainSpec.model_validate(
        {
            "name": MODEL, "train": "card_trainer:train", "params": {"C": 0.5},
            "gates": ["auc >= 0.5"],
            "data": {"source": "parquet", "path": "transactions.parquet", "label": LABEL,
                     "features": FEATURES, "key": ["transaction_id"]},
        }
    )  # fmt: skip
    with Registry.from_settings(sqlite_settings) as registry:
        tracker = Tracker(registry.database, registry.artifacts)
        pipeline = Pipeline(registry, tracker, LogReader(registry.artifacts), spec, code_dir=code)
        record = pipeline.train_and_canary({"kind": "manual", "by": "tester"}, canary=False)
        assert record["status"] == "registered", record["steps"][-1]
        card = model_card(registry, tracker, f"{MODEL}:1")
    assert card.lineage.pipeline == record["id"]
    assert card.lineage.trigger == {"kind": "manual", "by": "tester"}
    assert {d.role for d in card.data} >= {"train", "holdout"}
    validated = next(a for a in card.approvals if a.what == "validated")
    assert validated.detail == f"pipeline {record['id']}: auc >= 0.5: passed"
    assert "triggered by manual (tester)" in render_markdown(card)


def test_the_card_command(fraud: Fraud, tmp_path: Path) -> None:
    home = fraud.settings.home
    printed = in_project(home, fraud.project, "models", "card", f"{MODEL}:1")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.startswith(f"# Model card: {MODEL}:1\n")
    assert "## Per-group metrics (fairness)" in printed.stdout

    markdown = tmp_path / "card.md"
    written = in_project(home, fraud.project, "models", "card", f"{MODEL}:production", "--out", str(markdown))  # fmt: skip
    assert written.returncode == 0, written.stderr
    assert markdown.read_text().startswith(f"# Model card: {MODEL}:1\n")
    assert str(markdown) in " ".join(written.stdout.split())

    page = tmp_path / "card.html"
    as_json = in_project(home, fraud.project, "models", "card", f"{MODEL}:1", "--out", str(page), "--json")  # fmt: skip
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["ref"] == f"{MODEL}:1"
    assert [d["role"] for d in data["data"]] == ["train", "holdout"]
    assert data["groups"]["status"] == "measured"
    assert page.read_text().startswith("<!doctype html>")

    for bad, says in (
        (tmp_path / "card.pdf", "name a .md (Markdown) or .html file"),
        (tmp_path / "missing" / "card.md", "does not exist"),
    ):
        refused = in_project(home, fraud.project, "models", "card", f"{MODEL}:1", "--out", str(bad))
        assert refused.returncode == 2
        assert says in " ".join(refused.stderr.split())
        assert "Traceback" not in refused.stderr
    unknown = in_project(home, fraud.project, "models", "card", f"{MODEL}:9")
    assert unknown.returncode == 3
    assert "Traceback" not in unknown.stderr


def in_project(home: Path, project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real command, in the project's folder (where it finds shipyard.yaml)."""
    return shipyard(home, *args, cwd=project.parent)

"""Reproducing a past version: the same function, params, data and seed give the same model;
what differs in the environment is reported (and refused with --strict); what a record lacks
is named."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sqlalchemy import update

from shipyard.core import Settings
from shipyard.core import errors as e
from shipyard.lineage import reproduce
from shipyard.logstore import LogReader
from shipyard.registry import Registry
from shipyard.retraining import Pipeline, RetrainSpec
from shipyard.store import tables
from shipyard.tracking import Tracker
from tests.lineage.cli import shipyard

FEATURES = ["amount", "age", "hour"]
TRAINER = """
import os

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

FEATURES = ["amount", "age", "hour"]


def train(frame, params):
    return LogisticRegression(C=params["C"], max_iter=500).fit(frame[FEATURES], frame["is_fraud"])


def bagged(frame, params):
    # draws from the global generator the run seeds: the same trees every time
    rows = np.random.choice(len(frame), len(frame))
    return LogisticRegression(max_iter=500).fit(frame[FEATURES].iloc[rows], frame["is_fraud"].iloc[rows])


def forest(frame, params):
    # seeded from the operating system: a different forest every time
    seed = int.from_bytes(os.urandom(4), "little")
    model = RandomForestClassifier(n_estimators=15, max_depth=4, random_state=seed)
    return model.fit(frame[FEATURES], frame["is_fraud"])


def broken(frame, params):
    return frame["no_such_column"]
"""


def frame(rows: int = 1200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    data = pd.DataFrame(
        {
            "transaction_id": np.arange(rows),
            "amount": rng.lognormal(3.5, 1.0, rows).round(2),
            "age": rng.integers(18, 90, rows),
            "hour": rng.integers(0, 24, rows),
        }
    )
    risk = 0.02 * data["amount"] - 0.03 * data["age"] + rng.normal(0, 1, rows)
    data["is_fraud"] = (risk > np.quantile(risk, 0.85)).astype(int)
    return data


@pytest.fixture
def code(tmp_path: Path) -> Path:
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "trainer.py").write_text(textwrap.dedent(TRAINER))
    return folder


@pytest.fixture
def stores(settings: Settings) -> Iterator[tuple[Registry, Tracker]]:
    with Registry.from_settings(settings) as registry:
        yield registry, Tracker(registry.database, registry.artifacts, actor="tester")


def train_in_run(
    registry: Registry, tracker: Tracker, code: Path, function: str = "train", seed: int = 7
) -> int:
    """What a data scientist's notebook does: train inside a run that records everything."""
    sys.path.insert(0, str(code))
    try:
        import importlib

        trainer = importlib.import_module("trainer")
        importlib.reload(trainer)
    finally:
        sys.path.remove(str(code))
    data = frame()
    train, holdout = data.iloc[:900], data.iloc[900:]
    params = {"C": 0.5}
    with tracker.start_run(
        experiment="fraud", params=params, entrypoint=f"trainer:{function}", code_dir=code,
        seed=seed,
    ) as run:  # fmt: skip
        run.log_dataset("train", train, key="transaction_id", label="is_fraud")
        run.log_dataset("holdout", holdout, key="transaction_id", label="is_fraud")
        model = getattr(trainer, function)(train, params)
        version = registry.register(model, name="fraud", sample=train[FEATURES].head(200))
    return version.version


def test_a_deterministic_training_is_made_again_exactly(
    stores: tuple[Registry, Tracker], code: Path
) -> None:
    registry, tracker = stores
    version = train_in_run(registry, tracker, code, "bagged")
    before = len(tracker.data.list_versions())
    result = reproduce(registry, tracker, f"fraud:{version}", register=True)
    assert result.missing == []
    assert result.differences == []
    assert result.verdict == "identical"
    assert result.compared_on == "holdout"
    assert result.rows == 300
    assert result.max_score_difference == 0.0
    assert set(result.original) >= {"auc", "accuracy", "f1"}
    assert all(d == 0.0 for d in result.deltas.values())
    # registered as a new version that names what it reproduces; no data stored twice
    assert result.registered == "fraud:2"
    again = registry.get_version("fraud", 2)
    assert again.lineage == {"reproduces": 1, "parent": 1}
    assert len(tracker.data.list_versions()) == before
    reproducing_run = tracker.get(again.run_id or "")
    assert reproducing_run.tags["verdict"] == "identical"
    assert reproducing_run.environment["seed"] == 7
    assert reproducing_run.datasets["train"]["sha256"] == result.data["train"]


def test_a_training_that_is_not_deterministic_is_judged_by_its_metrics(
    stores: tuple[Registry, Tracker], code: Path
) -> None:
    registry, tracker = stores
    train_in_run(registry, tracker, code, "forest")
    result = reproduce(registry, tracker, "fraud:1")
    assert result.verdict == "different"
    assert result.max_score_difference is not None
    assert result.max_score_difference > 0
    assert set(result.deltas) >= {"auc", "accuracy"}
    assert any(d != 0 for d in result.deltas.values())


def test_a_changed_package_version_is_reported_and_strict_refuses(
    stores: tuple[Registry, Tracker], code: Path
) -> None:
    registry, tracker = stores
    train_in_run(registry, tracker, code)
    run_id = registry.get_version("fraud", 1).run_id
    recorded = tracker.get(run_id or "").environment
    recorded["packages"]["scikit-learn"] = "1.0.2"  # as if it had trained on an older release
    with registry.database.transaction() as conn:
        conn.execute(
            update(tables.runs).where(tables.runs.c.id == run_id).values(environment=recorded)
        )
    result = reproduce(registry, tracker, "fraud:1")
    import sklearn

    assert result.differences == [f"scikit-learn 1.0.2 at training, {sklearn.__version__} now"]
    assert result.verdict == "identical"  # reported; the model still came out the same
    with pytest.raises(e.Conflict, match=r"scikit-learn 1\.0\.2 at training"):
        reproduce(registry, tracker, "fraud:1", strict=True)


def test_a_changed_git_tree_is_reported(stores: tuple[Registry, Tracker], code: Path) -> None:
    registry, tracker = stores

    def git(*args: str) -> None:
        subprocess.run(
            ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
            cwd=code,
            check=True,
            capture_output=True,
        )

    git("init", "-q")
    git("add", "trainer.py")
    git("commit", "-q", "-m", "trainer")
    train_in_run(registry, tracker, code)
    assert reproduce(registry, tracker, "fraud:1").differences == []
    with (code / "trainer.py").open("a") as fh:
        fh.write("\n# tuned later\n")
    assert reproduce(registry, tracker, "fraud:1").differences == [
        "the code's git tree has uncommitted changes"
    ]
    git("commit", "-q", "-am", "tuned")
    (difference,) = reproduce(registry, tracker, "fraud:1").differences
    assert difference.startswith("the code is at commit ")


def test_what_a_record_lacks_is_named_and_nothing_is_trained(
    stores: tuple[Registry, Tracker], code: Path
) -> None:
    registry, tracker = stores
    data = frame()
    model = LogisticRegression(max_iter=500).fit(data[FEATURES], data["is_fraud"])
    registry.register(model, name="fraud", sample=data[FEATURES].head(50))
    outside = reproduce(registry, tracker, "fraud:1")
    assert outside.verdict == "not reproducible"
    assert "registered outside a tracked run" in outside.missing[0]
    with tracker.start_run(experiment="fraud"):
        registry.register(model, name="fraud", sample=data[FEATURES].head(50))
    bare = reproduce(registry, tracker, "fraud:2")
    assert len(bare.missing) == 2
    assert "does not name its training function" in bare.missing[0]
    assert "kept no training data version" in bare.missing[1]
    assert len(registry.list_versions("fraud")) == 2
    assert len(tracker.list_runs()) == 1  # no reproduction run was opened


def test_the_training_function_s_own_error_is_named(
    stores: tuple[Registry, Tracker], code: Path
) -> None:
    registry, tracker = stores
    train_in_run(registry, tracker, code)
    run_id = registry.get_version("fraud", 1).run_id
    with registry.database.transaction() as conn:
        conn.execute(
            update(tables.runs)
            .where(tables.runs.c.id == run_id)
            .values(entrypoint="trainer:broken")
        )
    with pytest.raises(e.UserCodeFailed, match="trainer:broken` raised KeyError"):
        reproduce(registry, tracker, "fraud:1")


def test_a_version_a_pipeline_trained_is_made_again_exactly(
    settings: Settings, code: Path, tmp_path: Path
) -> None:
    data = frame(1500)
    data["timestamp"] = pd.date_range("2026-10-01", periods=len(data), freq="h", tz="UTC")
    data.to_parquet(code / "transactions.parquet")
    spec = RetrainSpec.model_validate(
        {
            "name": "fraud",
            "train": "trainer:bagged",
            "seed": 11,
            "data": {"source": "parquet", "path": "transactions.parquet", "label": "is_fraud",
                     "features": FEATURES, "key": ["transaction_id"]},
        }
    )  # fmt: skip
    with Registry.from_settings(settings) as registry:
        tracker = Tracker(registry.database, registry.artifacts)
        pipeline = Pipeline(
            registry, tracker, LogReader(registry.artifacts), spec, code_dir=code,
            clock=lambda: datetime(2026, 11, 29, tzinfo=UTC),
        )  # fmt: skip
        record = pipeline.train_and_canary({"kind": "manual"}, canary=False)
        assert record["status"] == "registered", record["steps"][-1]
        result = reproduce(registry, tracker, "fraud:1")
    assert result.verdict == "identical", result.to_dict()
    assert result.compared_on == "holdout"
    assert result.rows == 300


def test_the_reproduce_command(settings: Settings, code: Path, tmp_path: Path) -> None:
    home = tmp_path / "cli-home"
    cli_settings = Settings(home=home, actor="tester")
    with Registry.from_settings(cli_settings) as registry:
        tracker = Tracker(registry.database, registry.artifacts)
        train_in_run(registry, tracker, code)
        data = frame()
        model = LogisticRegression(max_iter=500).fit(data[FEATURES], data["is_fraud"])
        registry.register(model, name="plain", sample=data[FEATURES].head(50))

    done = shipyard(home, "reproduce", "fraud:1", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["verdict"] == "identical"
    text = shipyard(home, "reproduce", "fraud:1", "--register")
    assert text.returncode == 0, text.stderr
    assert "identical: the same predictions on all 300 holdout rows" in text.stdout
    assert "registered as fraud:2" in text.stdout

    lacking = shipyard(home, "reproduce", "plain:1")
    assert lacking.returncode == 2
    assert "registered outside a tracked run" in lacking.stderr
    assert "Traceback" not in lacking.stderr

"""A regressor and a three-class model retrained from their own logs: labels the model cannot
learn from are counted and reported (never a crash), the holdout is measured as the task is,
and gates on metrics the task does not have are refused before anything is trained."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_diabetes, load_iris
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.linear_model import LogisticRegression
from tests.monitoring._logdata import log_scored

from shipyard.core import Settings
from shipyard.core.errors import InvalidInput
from shipyard.logstore import LogReader, LogWriter
from shipyard.registry import Registry
from shipyard.retraining import RetrainSpec
from shipyard.retraining._pipeline import Pipeline
from shipyard.serving import PredictionService
from shipyard.tracking import Tracker

NOW = datetime(2026, 11, 20, tzinfo=UTC)

TRAINER = """
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.linear_model import LogisticRegression


def regressor(frame, params):
    features = [c for c in frame.columns if c not in ("label", "timestamp")]
    return GradientBoostingRegressor(n_estimators=40, random_state=0).fit(frame[features], frame["label"])


def classifier(frame, params):
    features = [c for c in frame.columns if c not in ("label", "timestamp")]
    return LogisticRegression(max_iter=1000).fit(frame[features], frame["label"])
"""


@dataclass
class Logged:
    settings: Settings
    code: Path


def _setup(settings: Settings, tmp_path: Path, name: str, model: Any, x: pd.DataFrame, y: Any,
           bad: list[Any]) -> Logged:  # fmt: skip
    (tmp_path / "trainer.py").write_text(textwrap.dedent(TRAINER))
    with Registry.from_settings(settings) as registry:
        registry.register(model, name=name, sample=x.iloc[:100], aliases=["production"])
        writer = LogWriter(tmp_path / "spool", registry.artifacts, fsync_seconds=0)
        service = PredictionService(registry, settings)
        start = (NOW - timedelta(days=2)).timestamp()
        order = np.random.default_rng(0).permutation(len(x))  # iris comes sorted by class
        _, ids = log_scored(service, writer, name, x.iloc[order], np.asarray(y)[order], start)
        # labels the model cannot learn from, the latest for their predictions
        writer.log_labels(ids[: len(bad)], bad, at=start + 86_400)
        writer.flush()
    return Logged(settings, tmp_path)


def _retrain(logged: Logged, spec: RetrainSpec) -> dict[str, Any]:
    """One pipeline run up to registration (no canary)."""
    with Registry.from_settings(logged.settings) as registry:
        pipeline = Pipeline(
            registry, Tracker(registry.database, registry.artifacts),
            LogReader(registry.artifacts), spec, code_dir=logged.code, clock=lambda: NOW,
        )  # fmt: skip
        return pipeline.train_and_canary({"kind": "manual"}, canary=False)


def _step(record: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in record["steps"] if s["step"] == name)
    return found


def test_a_regressor_retrains_on_numbers_and_reports_the_labels_it_could_not_use(
    settings: Settings, tmp_path: Path
) -> None:
    data = load_diabetes(as_frame=True)
    x, y = data.data, data.target.to_numpy()
    model = GradientBoostingRegressor(n_estimators=40, random_state=0).fit(x, y)
    logged = _setup(settings, tmp_path, "diabetes", model, x, y, ["n/a", "twelve", "inf"])
    spec = RetrainSpec(
        name="diabetes", train="trainer:regressor",
        gates=["rmse <= champion * 1.5", "r2 >= 0.1", "mae <= 80"],
    )  # fmt: skip
    record = _retrain(logged, spec)
    assert record["status"] == "registered", record["steps"][-1]
    data_step = _step(record, "data")["evidence"]
    assert data_step["rows"] == len(x) - 3
    assert data_step["unusable_labels"] == 3
    assert data_step["unusable_reasons"] == {"not a number": 3}
    assert "'n/a'" in data_step["unusable_examples"]
    validate = _step(record, "validate")["evidence"]
    assert set(validate["candidate"]) == {"mae", "rmse", "r2", "latency_per_row_ms"}
    gates = {g["gate"]: g for g in validate["gates"]}
    assert gates["rmse <= champion * 1.5"]["bar"] == pytest.approx(
        validate["champion"]["rmse"] * 1.5
    )
    with Registry.from_settings(settings) as registry:
        candidate = registry.get_version("diabetes", 2)
    assert candidate.threshold is None
    assert candidate.metrics["rmse"] == pytest.approx(validate["candidate"]["rmse"], abs=1e-6)


def test_a_three_class_model_retrains_without_the_labels_that_are_not_its_classes(
    settings: Settings, tmp_path: Path
) -> None:
    data = load_iris(as_frame=True)
    x = data.data.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    y = np.asarray(data.target)  # integer classes 0, 1, 2
    model = LogisticRegression(max_iter=1000).fit(x, y)
    logged = _setup(settings, tmp_path, "iris", model, x, y, ["two", 7])
    spec = RetrainSpec(
        name="iris", train="trainer:classifier", gates=["macro_f1 >= champion - 0.05"]
    )
    record = _retrain(logged, spec)
    assert record["status"] == "registered", record["steps"][-1]
    data_step = _step(record, "data")["evidence"]
    assert data_step["unusable_labels"] == 2
    assert data_step["unusable_reasons"] == {"not one of the model's classes": 2}
    validate = _step(record, "validate")["evidence"]
    assert {"accuracy", "macro_f1", "weighted_f1"} <= set(validate["candidate"])
    assert "auc" not in validate["candidate"]


def test_a_gate_on_a_metric_the_task_lacks_is_refused_before_training(
    settings: Settings, tmp_path: Path
) -> None:
    data = load_diabetes(as_frame=True)
    model = GradientBoostingRegressor(n_estimators=10, random_state=0).fit(data.data, data.target)
    logged = _setup(settings, tmp_path, "diabetes", model, data.data, data.target, [])
    spec = RetrainSpec(name="diabetes", train="trainer:regressor", gates=["auc >= 0.8"])
    with pytest.raises(InvalidInput, match=r"do not apply to diabetes, a regression model.*rmse"):
        _retrain(logged, spec)

"""A regressor (diabetes) and a three-class model (iris) through monitoring, alert rules, the
report and the CLI tables: each measured as its task is, against scikit-learn's own metrics on
the same rows, never as a binary classifier."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from sklearn import metrics as m
from sklearn.datasets import load_diabetes, load_iris
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.linear_model import LogisticRegression
from tests.monitoring._logdata import log_scored

from shipyard.cli import monitor as monitor_cli
from shipyard.core import Settings
from shipyard.core.errors import InvalidInput
from shipyard.logstore import LogWriter
from shipyard.monitoring import Monitor, MonitoringReport, render_html
from shipyard.registry import Registry
from shipyard.serving import PredictionService

END = datetime(2026, 11, 20, tzinfo=UTC)  # a day boundary: the two windows are the two days
DAY = 86_400.0
SHIFT = 100.0  # day 2's true values are this much lower: the regressor now overshoots
CLASSES = ["setosa", "versicolor", "virginica"]


@dataclass
class Logged:
    """What was logged on the second (current) day, to compute the expected metrics from."""

    predicted: Any  # values, or class names
    truth: Any
    probabilities: np.ndarray | None = None


@dataclass
class World:
    settings: Settings
    registered_mae: float
    regression: Logged
    multiclass: Logged
    report: dict[str, MonitoringReport]


def _diabetes() -> tuple[pd.DataFrame, np.ndarray]:
    data = load_diabetes(as_frame=True)
    return data.data, data.target.to_numpy()


def _iris() -> tuple[pd.DataFrame, np.ndarray]:
    data = load_iris(as_frame=True)
    frame = data.data.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    # two features only: the model confuses versicolor and virginica, so every cell counts
    return frame[["sepal_length", "sepal_width"]], np.array(CLASSES)[data.target.to_numpy()]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    home = tmp_path_factory.mktemp("tasks")
    settings = Settings(home=home, auth="off", actor="tester")
    x_reg, y_reg = _diabetes()
    regressor = GradientBoostingRegressor(n_estimators=60, random_state=0).fit(
        x_reg.iloc[:300], y_reg[:300]
    )
    registered_mae = float(m.mean_absolute_error(y_reg[300:], regressor.predict(x_reg.iloc[300:])))
    x_cls, y_cls = _iris()
    classifier = LogisticRegression(max_iter=1000).fit(x_cls, y_cls)
    rng = np.random.default_rng(3)
    with Registry.from_settings(settings) as registry:
        registry.register(
            regressor, name="diabetes", sample=x_reg.iloc[:200],
            metrics={"mae": registered_mae},
        )  # fmt: skip
        registry.register(classifier, name="iris", sample=x_cls)
        service = PredictionService(registry, settings)
        writer = LogWriter(home / "spool", registry.artifacts, fsync_seconds=0)
        first, second = (END - timedelta(days=2)).timestamp(), (END - timedelta(days=1)).timestamp()
        day1 = rng.choice(len(x_reg), 300)
        log_scored(service, writer, "diabetes", x_reg.iloc[day1], y_reg[day1], first)
        day2 = rng.choice(len(x_reg), 300)
        shifted = y_reg[day2] - SHIFT
        outputs, ids = log_scored(service, writer, "diabetes", x_reg.iloc[day2], shifted, second)
        # a label that is not a number (as a pending label would be stored before its model
        # was known): counted, never a crash
        writer.log_labels([ids[0]], ["n/a"], at=second + 7200)
        regression = Logged(np.asarray(outputs["value"])[1:], shifted[1:])
        for _day, start in ((1, first), (2, second)):
            rows = rng.choice(len(x_cls), 300)
            outputs, _ = log_scored(service, writer, "iris", x_cls.iloc[rows], y_cls[rows], start)
        multiclass = Logged(
            np.asarray(outputs["label"]), y_cls[rows], np.asarray(outputs["probabilities"])
        )
        writer.flush()
        monitor = Monitor.from_settings(settings, registry)
        assert monitor.alert_manager is not None
        monitor.alert_manager.add_rule("diabetes", f"rmse > {registered_mae:.1f}")
        monitor.alert_manager.add_rule("iris", "macro_f1 < 0.99")
        now = END - timedelta(minutes=1)
        report = {
            name: monitor.run(name, window="1d", periods=2, now=now)
            for name in ("diabetes", "iris")
        }
    return World(settings, registered_mae, regression, multiclass, report)


def _summary(world: World, name: str) -> dict[str, Any]:
    summary: dict[str, Any] = world.report[name].to_dict()["versions"]["1"]
    return summary


def test_a_regressor_is_measured_by_its_errors_not_by_accuracy(world: World) -> None:
    summary = _summary(world, "diabetes")
    metrics = summary["metrics"]
    expected = world.regression
    assert summary["task"] == "regression"
    assert metrics["accuracy"] is None
    assert metrics["false_positive_rate"] is None
    assert metrics["mae"] == pytest.approx(
        m.mean_absolute_error(expected.truth, expected.predicted)
    )
    assert metrics["rmse"] == pytest.approx(
        np.sqrt(m.mean_squared_error(expected.truth, expected.predicted))
    )
    assert metrics["r2"] == pytest.approx(m.r2_score(expected.truth, expected.predicted))
    assert metrics["mean_residual"] == pytest.approx(
        float(np.mean(expected.predicted - expected.truth))
    )
    assert metrics["unusable_labels"] == 1
    checks = {c["name"]: c for c in summary["checks"]}
    assert {"accuracy", "false-positive rate", "estimated accuracy"}.isdisjoint(checks)
    # the registered MAE times 1.25 is the default target; day 2 overshoots by SHIFT
    assert checks["MAE"]["target"] == pytest.approx(1.25 * world.registered_mae)
    assert checks["MAE"]["status"] == "failing"
    assert "1 labels are not numbers" in checks["MAE"]["note"]
    assert checks["R²"]["target"] == 0.0
    assert checks["R²"]["status"] == "failing"  # worse than predicting the mean of the labels
    assert checks["residual drift"]["status"] == "warning"
    assert summary["residual_drift"]["drift"] is True
    assert checks["prediction drift"]["name"] == "prediction drift"


def test_detectors_that_do_not_apply_say_so(world: World) -> None:
    regression = _summary(world, "diabetes")
    concept = {c["name"]: c for c in regression["checks"]}["concept drift"]
    assert concept["status"] == "unknown"
    assert "residual drift" in concept["note"]
    assert regression["estimates"]["applies"] is False
    assert "binary classifier" in regression["estimates"]["note"]
    multiclass = _summary(world, "iris")
    assert multiclass["estimates"]["applies"] is False
    assert multiclass["concept"]["applies"] is True  # right/wrong is defined for any class


def test_a_three_class_model_gets_per_class_metrics_and_its_confusion_matrix(
    world: World,
) -> None:
    summary = _summary(world, "iris")
    metrics = summary["metrics"]
    expected = world.multiclass
    y, predicted = expected.truth, expected.predicted
    assert summary["task"] == "multiclass"
    assert metrics["accuracy"] == pytest.approx(m.accuracy_score(y, predicted))
    assert metrics["macro_f1"] == pytest.approx(m.f1_score(y, predicted, average="macro"))
    assert metrics["weighted_f1"] == pytest.approx(m.f1_score(y, predicted, average="weighted"))
    assert metrics["macro_recall"] == pytest.approx(m.recall_score(y, predicted, average="macro"))
    assert metrics["precision"] is None
    assert metrics["false_positive_rate"] is None
    assert metrics["top_2_accuracy"] == pytest.approx(
        m.top_k_accuracy_score(y, expected.probabilities, k=2, labels=CLASSES)
    )
    confusion = summary["classes"]["confusion"]
    assert confusion["classes"] == CLASSES
    assert confusion["matrix"] == m.confusion_matrix(y, predicted, labels=CLASSES).tolist()
    recalls = m.recall_score(y, predicted, average=None, labels=CLASSES)
    per_class = {c["class"]: c for c in summary["classes"]["per_class"]}
    for name, recall in zip(CLASSES, recalls, strict=True):
        assert per_class[name]["recall"] == pytest.approx(recall)
    checks = {c["name"]: c for c in summary["checks"]}
    assert checks["lowest class recall"]["value"] == pytest.approx(min(recalls))
    assert CLASSES[int(np.argmin(recalls))] in checks["lowest class recall"]["note"]
    assert "false-positive rate" not in checks
    assert checks["prediction drift"]["value"] is not None


def test_rules_follow_the_task(world: World) -> None:
    fired = {a["evidence"]["rule"] for a in world.report["diabetes"].alerts}
    assert any(rule.startswith("rmse >") for rule in fired)
    assert "macro_f1 < 0.99" in {a["evidence"]["rule"] for a in world.report["iris"].alerts}
    with Registry.from_settings(world.settings) as registry:
        manager = Monitor.from_settings(world.settings, registry).alert_manager
        assert manager is not None
        with pytest.raises(
            InvalidInput, match=r"accuracy does not measure a regression model.*mae"
        ):
            manager.add_rule("diabetes", "accuracy < 0.9")
        with pytest.raises(InvalidInput, match="auc does not measure a multiclass model"):
            manager.add_rule("iris", "auc < 0.8")
        assert manager.add_rule("diabetes", "r2 < 0.2")["expression"] == "r2 < 0.2"


def test_the_report_and_the_terminal_show_each_task_its_own_numbers(world: World) -> None:
    regression = render_html(world.report["diabetes"].to_dict())
    assert "MAE and RMSE" in regression
    assert "Accuracy: realised" not in regression
    multiclass = render_html(world.report["iris"].to_dict())
    assert "Confusion matrix" in multiclass
    assert "Recall and false-positive rate" not in multiclass
    out = io.StringIO()
    monitor_cli.console = Console(file=out, width=200)
    try:
        monitor_cli.render(world.report["diabetes"].to_dict())
        monitor_cli.render(world.report["iris"].to_dict())
    finally:
        from shipyard.cli._common import console

        monitor_cli.console = console
    text = out.getvalue()
    assert "mean residual" in text
    assert "macro F1" in text
    assert "per class" in text

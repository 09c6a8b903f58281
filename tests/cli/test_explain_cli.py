"""Explanations from the command line: `predict --explain` in every output, `models show` and
`models importance` for what a version relies on and what changed between two."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from scipy.special import logit
from tests.cli.test_cli import shipyard

from shipyard.core import Settings
from shipyard.demo import FEATURES, LABEL
from shipyard.registry import Registry


@pytest.fixture(scope="module")
def home(
    tmp_path_factory: pytest.TempPathFactory,
    fraud_model: Any,
    fraud_data: pd.DataFrame,
    fraud_sample: pd.DataFrame,
) -> Path:
    """fraud-detector:1, the demo's kind of model; :2 the same pipeline without the amount
    (so it must rely on other features); :3 registered without reference rows."""
    import lightgbm as lgb
    from sklearn.base import clone

    home = tmp_path_factory.mktemp("explain-home")
    without_amount = clone(fraud_model)
    frame = fraud_data[FEATURES].assign(transaction_amount=0.0)
    without_amount.fit(frame, fraud_data[LABEL])
    numeric = [f for f in FEATURES if f != "merchant_category"]
    booster = lgb.LGBMClassifier(n_estimators=5, verbose=-1)
    booster.fit(fraud_data[numeric], fraud_data[LABEL])
    settings = Settings(home=home, auto_migrate=True, actor="t")
    with Registry.from_settings(settings) as registry:
        registry.register(fraud_model, name="fraud-detector", sample=fraud_sample)
        registry.register(without_amount, name="fraud-detector", sample=fraud_sample)
        registry.register(booster.booster_, name="bare")
    return home


def test_predict_explain_in_json_in_a_table_and_in_a_file(
    home: Path, fraud_model: Any, fraud_sample: pd.DataFrame, tmp_path: Path
) -> None:
    rows = tmp_path / "rows.csv"
    fraud_sample.iloc[:4].to_csv(rows, index=False)
    answered = shipyard(home, "predict", "fraud-detector:1", "-i", str(rows), "--explain", "--json")
    assert answered.returncode == 0, answered.stderr
    predictions = json.loads(answered.stdout)["predictions"]
    expected = logit(fraud_model.predict_proba(fraud_sample.iloc[:4])[:, 1])
    for prediction, want in zip(predictions, expected, strict=True):
        explained = prediction["explanation"]
        assert (explained["method"], explained["space"]) == ("linear", "log-odds")
        assert explained["base"] + sum(explained["contributions"].values()) == pytest.approx(
            want, abs=1e-6
        )

    table = shipyard(home, "predict", "fraud-detector:1", "-i", str(rows), "--explain")
    assert table.returncode == 0, table.stderr
    assert "largest contributions (log-odds, linear)" in table.stdout

    out = tmp_path / "explained.csv"
    written = shipyard(home, "predict", "fraud-detector:1", "-i", str(rows), "--explain", "-o", str(out))  # fmt: skip
    assert written.returncode == 0, written.stderr
    frame = pd.read_csv(out)
    contributions = frame[[f"contribution_{f}" for f in FEATURES]].sum(axis=1)
    assert set(frame["explanation_method"]) == {"linear"}
    pd.testing.assert_series_equal(
        frame["base_value"] + contributions, pd.Series(expected), check_names=False, atol=1e-6
    )


def test_models_show_and_importance_say_what_a_version_relies_on(home: Path) -> None:
    shown = shipyard(home, "models", "show", "fraud-detector:1")
    assert shown.returncode == 0, shown.stderr
    assert "what fraud-detector:1 relies on (linear, log-odds, 200 reference rows)" in shown.stdout

    one = shipyard(home, "models", "importance", "fraud-detector:1", "--json")
    assert one.returncode == 0, one.stderr
    first = json.loads(one.stdout)
    assert set(first["features"]) == set(FEATURES)
    values = list(first["features"].values())
    assert values == sorted(values, reverse=True)

    compared = shipyard(home, "models", "importance", "fraud-detector:1", "2", "--json")
    assert compared.returncode == 0, compared.stderr
    rows = json.loads(compared.stdout)["features"]
    amount = next(r for r in rows if r["feature"] == "transaction_amount")
    assert amount["after"] == pytest.approx(0.0, abs=1e-12)  # :2 was trained without it
    assert amount["change"] < 0
    assert sum(r["after"] for r in rows) == pytest.approx(1.0)
    changes = [abs(r["change"]) for r in rows]
    assert changes == sorted(changes, reverse=True)

    table = shipyard(home, "models", "importance", "fraud-detector:1", "fraud-detector:2")
    assert table.returncode == 0, table.stderr
    assert "fraud-detector:1 -> fraud-detector:2" in table.stdout

    none = shipyard(home, "models", "importance", "bare:1")
    assert none.returncode == 2
    assert "bare:1 has no feature importance" in none.stderr
    assert "Traceback" not in none.stderr

"""When to retrain: schedules, alerts and label counts, held back by cooldowns, a daily cap and
a pipeline still running; and the spec that says so, read from shipyard.yaml or pyproject.toml."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from shipyard.core import Settings
from shipyard.core import errors as e
from shipyard.registry import Registry
from shipyard.retraining import PolicySpec, RetrainSpec, due_triggers, load_specs, may_retrain
from shipyard.retraining import _repository as repo
from shipyard.store import Database

NOW = datetime(2026, 11, 23, 3, 0, 30, tzinfo=UTC)  # a Monday, just after 03:00


def spec(*policies: PolicySpec, **changes: Any) -> RetrainSpec:
    return RetrainSpec(name="fraud-detector", train="m:f", policies=list(policies), **changes)


@pytest.fixture
def database(settings: Settings, fraud_model: Any, fraud_sample: pd.DataFrame) -> Database:
    with Registry.from_settings(settings) as registry:
        registry.register(fraud_model, name="fraud-detector", sample=fraud_sample)
    db = Database(settings.resolved_database_url).open()
    yield db  # type: ignore[misc]
    db.close()


def _pipeline(
    database: Database, created: datetime, status: str = "promoted", alerts: list[int] | None = None
) -> None:
    with database.transaction() as conn:
        record = repo.create(
            conn, "fraud-detector", {"kind": "alert", "alerts": alerts or []}, 1, created
        )
        record["status"] = status
        repo.save(conn, record)


def test_a_schedule_fires_once_its_time_has_come(database: Database) -> None:
    weekly = spec(PolicySpec(schedule="0 3 * * 1"))
    before = due_triggers(
        weekly,
        database,
        [],
        NOW - timedelta(minutes=1),
        NOW - timedelta(seconds=31),
        lambda since: 0,
    )
    assert before == []
    fired = due_triggers(weekly, database, [], NOW - timedelta(minutes=1), NOW, lambda since: 0)
    assert [t["kind"] for t in fired] == ["schedule"]
    assert fired[0]["at"].startswith("2026-11-23T03:00")
    # the next tick starts after it: no second firing
    assert (
        due_triggers(weekly, database, [], NOW, NOW + timedelta(minutes=1), lambda since: 0) == []
    )


def test_an_alert_fires_a_retrain_once_per_alert(database: Database) -> None:
    on_alert = spec(PolicySpec(on_alert="accuracy < 0.90 over 7d with >= 500 labels"))
    firing = [
        {
            "id": 7,
            "version": 1,
            "value": 0.88,
            "evidence": {"rule": "accuracy < 0.9 over 7d with >= 500 labels"},
        }
    ]
    other = [{"id": 8, "version": 1, "value": 0.3, "evidence": {"rule": "psi(amount) > 0.2"}}]
    fired = due_triggers(on_alert, database, firing + other, NOW, NOW, lambda since: 0)
    assert fired == [
        {
            "kind": "alert",
            "alerts": [7],
            "rule": "accuracy < 0.9 over 7d with >= 500 labels",
            "value": 0.88,
            "version": 1,
        }
    ]
    _pipeline(database, NOW, alerts=[7])
    assert due_triggers(on_alert, database, firing, NOW, NOW, lambda since: 0) == []
    anything = spec(PolicySpec(on_alert="any"))
    assert [
        t["alerts"] for t in due_triggers(anything, database, other, NOW, NOW, lambda since: 0)
    ] == [[8]]


def test_an_alert_answered_by_any_earlier_retrain_does_not_fire_another(
    database: Database,
) -> None:
    anything = spec(PolicySpec(on_alert="any"))
    old = {"id": 7, "version": 1, "value": 0.88, "evidence": {"rule": "accuracy < 0.9"}}
    new = {"id": 9, "version": 3, "value": 1.0, "evidence": {"rule": "drift(amount)"}}
    _pipeline(database, NOW - timedelta(days=2), alerts=[7])
    assert [t["alerts"] for t in due_triggers(anything, database, [old, new], NOW, NOW, lambda since: 0)] == [[9]]  # fmt: skip
    _pipeline(database, NOW - timedelta(days=1), alerts=[9])
    # alert 7 is still firing, but the retrain before the latest one answered it
    assert due_triggers(anything, database, [old, new], NOW, NOW, lambda since: 0) == []


def test_enough_new_labels_fire_a_retrain_counted_since_the_last_one(database: Database) -> None:
    continuous = spec(PolicySpec(every_labels=5000))
    seen: list[datetime] = []

    def labels_since(moment: datetime) -> int:
        seen.append(moment)
        return 4999

    assert due_triggers(continuous, database, [], NOW, NOW, labels_since) == []
    assert seen[-1] == datetime(1970, 1, 1, tzinfo=UTC)
    _pipeline(database, NOW - timedelta(days=3))
    fired = due_triggers(
        continuous,
        database,
        [],
        NOW,
        NOW,
        lambda since: 5000 if since == NOW - timedelta(days=3) else 0,
    )
    assert fired == [{"kind": "labels", "labels": 5000, "every": 5000}]


def test_cooldowns_daily_caps_and_running_pipelines_hold_retrains_back(database: Database) -> None:
    policy = spec(PolicySpec(every_labels=1), cooldown="6h", max_per_day=2)
    assert may_retrain(policy, database, NOW) == (True, "")
    _pipeline(database, NOW - timedelta(hours=2))
    allowed, why = may_retrain(policy, database, NOW)
    assert not allowed
    assert why.startswith("cooling down until")
    _pipeline(database, NOW - timedelta(hours=8))
    allowed, why = may_retrain(policy, database, NOW + timedelta(hours=5))
    assert not allowed
    assert "max_per_day 2" in why
    _pipeline(database, NOW + timedelta(days=2), status="canary")
    allowed, why = may_retrain(policy, database, NOW + timedelta(days=3))
    assert not allowed
    assert "is canary" in why


def test_specs_load_from_shipyard_yaml_and_pyproject(tmp_path: Path) -> None:
    yaml_file = tmp_path / "shipyard.yaml"
    yaml_file.write_text(
        "models:\n  fraud-detector:\n    train: fraud_training:train\n    params: {C: 0.5}\n"
        "    gates: ['auc >= champion - 0.005']\n    policies:\n      - schedule: '0 3 * * 1'\n      - every_labels: 5000\n"
    )
    loaded = load_specs(yaml_file)["fraud-detector"]
    assert loaded.params == {"C": 0.5}
    assert [p.kind for p in loaded.policies] == ["schedule", "labels"]
    assert loaded.rollout.canary == 5.0  # defaults for what the file leaves out
    toml = tmp_path / "pyproject.toml"
    toml.write_text(
        '[tool.shipyard.models.fraud-detector]\ntrain = "fraud_training:train"\ndata = {source = "parquet", path = "train.parquet"}\n'
    )
    assert load_specs(toml)["fraud-detector"].data.source == "parquet"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("train: nocolon", "train must look like module:function"),
        ("train: m:f\n    gates: ['auc > great']", "cannot read the gate"),
        ("train: m:f\n    policies: [{schedule: 'every monday'}]", "is not a cron expression"),
        ("train: m:f\n    policies: [{schedule: '0 3 * * 1', every_labels: 5}]", "exactly one of"),
        ("train: m:f\n    data: {source: parquet}", "needs data.path"),
        ("train: m:f\n    surprise: 1", "Extra inputs are not permitted"),
        ("train: m:f\n    cooldown: soon", "duration 'soon' is not a duration; write e.g. 30m"),
    ],
)
def test_bad_specs_name_the_model_and_the_problem(tmp_path: Path, body: str, fragment: str) -> None:
    path = tmp_path / "shipyard.yaml"
    path.write_text(f"models:\n  fraud-detector:\n    {body}\n")
    with pytest.raises(e.ConfigurationError, match="model 'fraud-detector'") as caught:
        load_specs(path)
    assert fragment in caught.value.message


def test_a_missing_training_module_says_where_to_run_from(tmp_path: Path) -> None:
    broken = spec(PolicySpec(every_labels=1)).model_copy(
        update={"train": "no_such_module_here:train"}
    )
    with pytest.raises(e.ConfigurationError, match="cannot import the training module"):
        broken.entrypoint(tmp_path)

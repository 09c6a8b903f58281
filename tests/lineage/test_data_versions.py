"""Data versions: snapshots stored once per content, linked to the model versions that used
them, compared row by row, and read back exactly."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from shipyard.cli import app
from shipyard.core import Settings
from shipyard.core import errors as e
from shipyard.lineage import data_uses, diff_data, resolve_data
from shipyard.registry import Registry
from shipyard.tracking import Tracker
from tests.lineage.cli import shipyard

FEATURES = ["amount", "age"]


def frame(rows: int = 400, seed: int = 0, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    amount = rng.lognormal(3.5, 1.0, rows) + shift
    age = rng.integers(18, 90, rows)
    return pd.DataFrame(
        {
            "transaction_id": [f"tx{seed}-{i:05d}" for i in range(rows)],
            "amount": amount.round(2),
            "age": age,
            "channel": rng.choice(["web", "pos", "app"], rows),
            "is_fraud": (amount > np.quantile(amount, 0.9)).astype(int),
        }
    )


@pytest.fixture
def stores(settings: Settings) -> Iterator[tuple[Registry, Tracker]]:
    with Registry.from_settings(settings) as registry:
        yield registry, Tracker(registry.database, registry.artifacts, actor="tester")


def train_version(
    registry: Registry, tracker: Tracker, data: pd.DataFrame, **log: Any
) -> tuple[int, str]:
    with tracker.start_run(experiment="fraud", params={"C": 1.0}) as run:
        train, holdout = data.iloc[: len(data) * 3 // 4], data.iloc[len(data) * 3 // 4 :]
        if log:  # else register() keeps the training set itself, without a key
            run.log_dataset("train", train, **log)
        run.log_dataset("holdout", holdout, **log)
        model = LogisticRegression(max_iter=500).fit(train[FEATURES], train["is_fraud"])
        version = registry.register(
            model, name="fraud", sample=train[FEATURES].head(50), training_data=train
        )
    return version.version, run.id


def test_the_same_data_is_stored_once_and_reads_back_exactly(
    stores: tuple[Registry, Tracker],
) -> None:
    registry, tracker = stores
    data = frame()
    first = tracker.data.snapshot(data, key="transaction_id")
    again = tracker.data.snapshot(data.copy())
    assert again.sha256 == first.sha256
    assert again.key == ["transaction_id"]  # the first declaration stands
    assert len(tracker.data.list_versions()) == 1
    assert registry.artifacts.glob("datasets/*/*.parquet") == [first.path]
    # a different row makes a different version, stored beside the first
    changed = data.copy()
    changed.loc[3, "amount"] += 1
    other = tracker.data.snapshot(changed)
    assert other.sha256 != first.sha256
    assert len(registry.artifacts.glob("datasets/*/*.parquet")) == 2
    back = tracker.data.load(first.sha256[:8]).to_pandas()
    pd.testing.assert_frame_equal(back, data)
    assert first.rows == 400
    assert [c["name"] for c in first.schema] == list(data.columns)
    assert first.profile["columns"]["amount"]["mean"] == pytest.approx(data["amount"].mean())
    assert set(first.profile["columns"]["channel"]["frequencies"]) == {"web", "pos", "app"}


def test_a_version_registered_in_a_run_keeps_its_training_and_holdout_data(
    stores: tuple[Registry, Tracker],
) -> None:
    registry, tracker = stores
    data = frame()
    version, run_id = train_version(registry, tracker, data, key="transaction_id")
    datasets = tracker.get(run_id).datasets
    assert set(datasets) == {"train", "holdout"}
    assert datasets["train"]["rows"] == 300
    assert datasets["holdout"]["rows"] == 100
    uses = data_uses(registry, tracker)
    assert {(u.model, u.version, u.role) for us in uses.values() for u in us} == {
        ("fraud", version, "train"),
        ("fraud", version, "holdout"),
    }
    train, said = resolve_data(registry, tracker, f"fraud:{version}")
    assert train.sha256 == datasets["train"]["sha256"]
    assert said.startswith("fraud:1/train")
    holdout, _ = resolve_data(registry, tracker, "fraud:1/holdout")
    pd.testing.assert_frame_equal(
        tracker.data.load(holdout.sha256).to_pandas(), data.iloc[300:].reset_index(drop=True)
    )
    # the same training data again: a second version, no second snapshot
    train_version(registry, tracker, data)
    assert len(tracker.data.list_versions()) == 2  # train and holdout, shared by both versions
    assert len(data_uses(registry, tracker)[train.sha256]) == 2


def test_a_diff_by_key_counts_rows_added_removed_and_changed(
    stores: tuple[Registry, Tracker],
) -> None:
    _, tracker = stores
    a = frame(2000)
    b = a.drop(index=[0, 1, 2]).copy()
    b.loc[[10, 11], "amount"] += 5.0
    b.loc[12, "channel"] = "phone"
    extra = frame(5, seed=9)
    b = pd.concat([b, extra], ignore_index=True)
    b["merchant"] = "m1"
    b["amount"] = b["amount"] * 3  # every amount moves: drift, and every row changed
    va = tracker.data.snapshot(a, key="transaction_id")
    vb = tracker.data.snapshot(b)
    result = diff_data(va, vb, tracker.data.load(va.sha256), tracker.data.load(vb.sha256))
    assert result.key == ["transaction_id"]
    assert (result.added, result.removed) == (5, 3)
    assert result.changed == 1997
    assert result.unchanged == 0
    assert result.changed_columns == {"amount": 1997, "channel": 1}
    assert result.columns_added == ["merchant"]
    assert result.columns_removed == []
    assert result.drift["amount"]["drift"] is True
    assert result.drift["age"]["drift"] is False

    # only two values changed: named by key
    c = a.copy()
    c.loc[[7, 8], "age"] = 99
    vc = tracker.data.snapshot(c)
    small = diff_data(va, vc, tracker.data.load(va.sha256), tracker.data.load(vc.sha256))
    assert (small.added, small.removed, small.changed) == (0, 0, 2)
    assert small.changed_keys == ["tx0-00007", "tx0-00008"]
    assert small.changed_columns == {"age": 2}


def test_a_diff_without_a_key_compares_whole_rows(stores: tuple[Registry, Tracker]) -> None:
    _, tracker = stores
    a = frame(500).drop(columns=["transaction_id"])
    b = pd.concat([a.iloc[20:], a.iloc[:5]], ignore_index=True)  # 20 gone, 5 of them back
    b.loc[100, "age"] = 17  # one row changed: read as removed + added without a key
    va, vb = tracker.data.snapshot(a), tracker.data.snapshot(b)
    result = diff_data(va, vb, tracker.data.load(va.sha256), tracker.data.load(vb.sha256))
    assert result.key is None
    assert result.changed is None
    assert (result.removed, result.added, result.unchanged) == (16, 1, 484)
    same = diff_data(va, va, tracker.data.load(va.sha256), tracker.data.load(va.sha256))
    assert same.identical
    assert (same.added, same.removed) == (0, 0)


def test_a_key_that_repeats_or_is_missing_is_refused(stores: tuple[Registry, Tracker]) -> None:
    _, tracker = stores
    a = frame(50)
    with pytest.raises(e.InvalidInput, match="not among the data's columns"):
        tracker.data.snapshot(a, key="customer_id")
    va = tracker.data.snapshot(a)
    with pytest.raises(e.InvalidInput, match="does not identify a row"):
        diff_data(
            va, va, tracker.data.load(va.sha256), tracker.data.load(va.sha256), key=["channel"]
        )


def test_data_that_cannot_be_one_typed_column_is_refused_naming_it(
    stores: tuple[Registry, Tracker],
) -> None:
    _, tracker = stores
    data = frame(20)
    data["merchant"] = [7 if i % 2 else "m-7" for i in range(20)]  # numbers and text mixed
    with pytest.raises(e.InvalidInput, match="column 'merchant' cannot be stored as one typed"):
        tracker.data.snapshot(data)
    assert tracker.data.list_versions() == []


def test_a_snapshot_changed_on_disk_is_refused_when_read(stores: tuple[Registry, Tracker]) -> None:
    registry, tracker = stores
    version = tracker.data.snapshot(frame(50))
    path = registry.artifacts.local_path(version.path)
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(e.ArtifactCorrupted):
        tracker.data.load(version.sha256)


def test_references_that_name_nothing_say_what_to_give(stores: tuple[Registry, Tracker]) -> None:
    registry, tracker = stores
    with pytest.raises(e.InvalidInput, match="first 6"):
        resolve_data(registry, tracker, "ab")
    with pytest.raises(e.NotFound, match="shipyard data list"):
        resolve_data(registry, tracker, "abcdef12")
    with pytest.raises(e.NotFound):
        resolve_data(registry, tracker, "fraud:1")
    data = frame()
    registry.register(
        LogisticRegression().fit(data[FEATURES], data["is_fraud"]),
        name="fraud",
        sample=data[FEATURES].head(20),
    )
    with pytest.raises(e.NotFound, match="outside a tracked run"):
        resolve_data(registry, tracker, "fraud:1")
    train_version(registry, tracker, data)
    with pytest.raises(
        e.NotFound, match=r"no validation data version \(its run kept: holdout, train\)"
    ):
        resolve_data(registry, tracker, "fraud:2/validation")


def test_the_data_commands(tmp_path: Path, sqlite_settings: Settings) -> None:
    with Registry.from_settings(sqlite_settings) as registry:
        tracker = Tracker(registry.database, registry.artifacts, actor="tester")
        data = frame(1000)
        train_version(registry, tracker, data, key="transaction_id")
        newer = data.copy()
        newer.loc[5, "amount"] = 1.0
        train_version(registry, tracker, newer, key="transaction_id")
    runner = CliRunner()
    home = ["--home", str(sqlite_settings.home)]

    listed = runner.invoke(app, [*home, "data", "list"])
    assert listed.exit_code == 0, listed.output
    assert "fraud:1 train" in listed.output
    assert "fraud:2 holdout" in listed.output
    as_json = json.loads(runner.invoke(app, [*home, "data", "list", "--json"]).output)
    assert len(as_json) == 3  # both holdouts are the same rows: one version
    assert {u["version"] for d in as_json for u in d["used_by"] if u["role"] == "holdout"} == {1, 2}

    shown = runner.invoke(app, [*home, "data", "show", "fraud:2"])
    assert shown.exit_code == 0, shown.output
    said = " ".join(shown.output.split())
    assert "750 rows, 5 columns" in said
    assert "key transaction_id" in said

    diffed = runner.invoke(app, [*home, "data", "diff", "fraud:1", "fraud:2", "--json"])
    assert diffed.exit_code == 0, diffed.output
    report = json.loads(diffed.output)
    assert (report["added"], report["removed"], report["changed"]) == (0, 0, 1)
    assert report["changed_keys"] == ["tx0-00005"]
    text = " ".join(
        runner.invoke(app, [*home, "data", "diff", "fraud:1", "fraud:2"]).output.split()
    )
    assert "by key transaction_id: 0 added, 0 removed, 1 changed, 749 unchanged" in text

    out = tmp_path / "train.parquet"
    exported = runner.invoke(app, [*home, "data", "export", "fraud:1", "-o", str(out)])
    assert exported.exit_code == 0, exported.output
    assert pq.read_table(out).to_pandas().equals(data.iloc[:750])

    # the command as users run it: errors are messages with their exit code, never tracebacks
    missing = shipyard(sqlite_settings.home, "data", "show", "fraud:9")
    assert missing.returncode == 3
    assert "has no version 9" in missing.stderr
    bad = shipyard(sqlite_settings.home, "data", "export", "fraud:1", "-o", str(tmp_path / "x.txt"))
    assert bad.returncode == 2
    assert ".parquet or .csv" in bad.stderr
    short = shipyard(sqlite_settings.home, "data", "diff", "abc", "fraud:1")
    assert short.returncode == 2
    assert "first 6+ hex characters" in short.stderr
    assert "Traceback" not in missing.stderr + bad.stderr + short.stderr

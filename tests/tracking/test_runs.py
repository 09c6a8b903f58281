"""Experiment tracking: what a run records, and a registered version traced back to it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient

import shipyard
from shipyard.app import create_app
from shipyard.core import Settings
from shipyard.core import errors as e
from shipyard.registry import Registry
from shipyard.tracking import Tracker, active_run


@pytest.fixture
def tracker(settings: Settings) -> Tracker:
    registry = Registry.from_settings(settings)
    yield Tracker(registry.database.open(), registry.artifacts, actor="tester")  # type: ignore[misc]
    registry.close()


def test_a_run_records_params_metrics_with_steps_datasets_artifacts_and_code(
    tracker: Tracker, tmp_path: Path, fraud_data: pd.DataFrame
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("threshold chosen for 2% review capacity")
    with tracker.start_run(
        experiment="fraud", name="baseline", params={"C": 0.5}, tags={"team": "risk"}
    ) as run:
        assert active_run() is run
        run.log_param("max_iter", 2000)
        for loss in (0.5, 0.3, 0.2):
            run.log_metric("loss", loss)
        run.log_metrics({"auc": 0.91}, step=10)
        fingerprint = run.log_dataset("train", fraud_data)
        run.log_artifact(notes)
    assert active_run() is None
    record = tracker.get(run.id)
    assert record.status == "finished"
    assert record.ended_at is not None
    assert record.params == {"C": 0.5, "max_iter": 2000}
    assert record.tags == {"team": "risk"}
    assert record.metrics == {"loss": 0.2, "auc": 0.91}
    assert [(m["step"], m["value"]) for m in tracker.metric_history(run.id, "loss")] == [
        (0, 0.5),
        (1, 0.3),
        (2, 0.2),
    ]
    assert record.datasets["train"] == fingerprint
    assert fingerprint["rows"] == len(fraud_data)
    stored = record.artifacts["notes.txt"]
    assert tracker.artifacts.read_bytes(stored["path"], stored["sha256"]) == notes.read_bytes()


def _git(folder: Path, *args: str) -> str:
    """Run git in `folder` with no user or system configuration (no signing, no hooks)."""
    done = subprocess.run(
        ["git", "-c", "user.name=Tester", "-c", "user.email=tester@example.com", *args],
        cwd=folder,
        env={**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def test_a_run_records_the_commit_branch_and_dirtiness_of_its_code(
    tracker: Tracker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # no checkout above tmp_path
    code = tmp_path / "code"
    code.mkdir()
    (code / "train.py").write_text("def train(data):\n    return None\n")
    _git(code, "init", "--quiet", "--initial-branch=main")
    _git(code, "add", "train.py")
    _git(code, "commit", "--quiet", "--no-verify", "-m", "a training function")
    commit = _git(code, "rev-parse", "HEAD")
    with tracker.start_run(experiment="fraud", code_dir=code) as clean:
        pass
    (code / "train.py").write_text("def train(data):\n    return 1\n")
    with tracker.start_run(experiment="fraud", code_dir=code) as edited:
        pass
    plain = tmp_path / "plain"
    plain.mkdir()
    with tracker.start_run(experiment="fraud", code_dir=plain) as untracked:
        pass
    assert len(commit) == 40
    assert tracker.get(clean.id).git == {"commit": commit, "branch": "main", "dirty": False}
    assert tracker.get(edited.id).git == {"commit": commit, "branch": "main", "dirty": True}
    assert tracker.get(untracked.id).git == {}  # not a checkout: nothing, rather than a guess


def test_a_failing_run_is_recorded_as_failed_with_the_error(tracker: Tracker) -> None:
    def train_badly() -> str:
        with tracker.start_run(experiment="fraud") as run:
            run.log_metric("auc", 0.5)
            _ = 1 / 0
        return run.id

    with pytest.raises(ZeroDivisionError):
        train_badly()
    (run,) = tracker.list_runs("fraud")
    record = tracker.get(run.id)
    assert record.status == "failed"
    assert record.error == "ZeroDivisionError: division by zero"


def test_bad_metrics_and_missing_runs_are_refused(tracker: Tracker) -> None:
    with (
        tracker.start_run(experiment="fraud") as run,
        pytest.raises(e.InvalidInput, match="finite"),
    ):
        run.log_metric("auc", float("nan"))
    with pytest.raises(e.NotFound, match="shipyard runs list"):
        tracker.get("0" * 32)


def test_register_inside_a_run_links_the_version_to_it(
    settings: Settings, fraud_model: Any, fraud_sample: pd.DataFrame
) -> None:
    with shipyard.start_run(experiment="fraud", settings=settings, params={"C": 1.0}) as run:
        version = shipyard.register(
            fraud_model, name="fraud-detector", sample=fraud_sample, settings=settings
        )
    assert version.run_id == run.id
    with Registry.from_settings(settings) as registry:
        record = Tracker(registry.database, registry.artifacts).get(run.id)
        registered = [
            ev for ev in registry.history("fraud-detector") if ev.action == "version.registered"
        ]
    assert record.tags["registered"] == "fraud-detector:1"
    assert registered[0].details["run"] == run.id


def test_runs_compare_side_by_side(tracker: Tracker) -> None:
    ids = []
    for c in (0.5, 1.0):
        with tracker.start_run(experiment="fraud", params={"C": c, "penalty": "l2"}) as run:
            run.log_metric("auc", 0.9 + c / 100)
        ids.append(run.id)
    result = tracker.compare(ids)
    assert result["params"]["C"] == [0.5, 1.0]
    assert result["differs"] == ["C"]
    assert result["metrics"]["auc"] == pytest.approx([0.905, 0.91])
    assert [r.id for r in tracker.list_runs("fraud")] == ids[::-1]


def test_runs_over_http(settings: Settings, tracker: Tracker) -> None:
    with tracker.start_run(experiment="fraud", params={"C": 1}) as a:
        a.log_metric("auc", 0.9)
    with tracker.start_run(experiment="fraud", params={"C": 2}) as b:
        b.log_metric("auc", 0.8)
    with TestClient(create_app(settings.model_copy(update={"auth": "off"}))) as client:
        assert {
            r["id"] for r in client.get("/v1/runs", params={"experiment": "fraud"}).json()["runs"]
        } == {a.id, b.id}
        shown = client.get(f"/v1/runs/{a.id}").json()
        assert shown["metric_history"][0]["value"] == 0.9
        assert client.get("/v1/runs/compare", params={"ids": f"{a.id},{b.id}"}).json()[
            "differs"
        ] == ["C"]
        assert client.get("/v1/runs/compare", params={"ids": a.id}).status_code == 400
        assert client.get(f"/v1/runs/{'0' * 32}").status_code == 404

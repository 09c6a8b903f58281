"""The closed loop from the command line: `pipeline run` (what CI calls), `worker --once`,
`jobs list`, `history`, `runs`, `approve`."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from rich.console import Console
from tests.retraining.conftest import END_OF_WEEK4

from shipyard.core import Settings
from shipyard.demo import FEATURES, LABEL, replay_month
from shipyard.registry import Registry

pytestmark = pytest.mark.slow


def _config(folder: Path, gates: list[str]) -> Path:
    path = folder / f"shipyard-{len(gates)}-{abs(hash(tuple(gates)))}.yaml"
    path.write_text(yaml.safe_dump({"models": {"fraud-detector": {
        "train": "shipyard.demo.training:train",
        "params": {"C": 0.5},
        "data": {"source": "logs", "window": "28d", "label": "is_fraud"},
        "holdout": {"split": "time", "fraction": 0.25},
        "gates": gates,
        "rollout": {"canary": 10, "routing_field": "customer_id", "min_labels": 300, "check_every": "1d"},
        "policies": [{"on_alert": "accuracy < 0.90 over 7d with >= 500 labels"}],
        "threshold_share": 0.04,
    }}}))  # fmt: skip
    return path


@pytest.fixture(scope="module")
def home(
    tmp_path_factory: pytest.TempPathFactory, champion: tuple[Any, pd.DataFrame, float]
) -> Path:
    home = tmp_path_factory.mktemp("loop-cli")
    settings = Settings(home=home, auth="off", actor="cli-tester")
    model, history, threshold = champion
    with Registry.from_settings(settings) as registry:
        registry.register(
            model,
            name="fraud-detector",
            sample=history[FEATURES].iloc[:2000],
            training_data=history[[*FEATURES, LABEL]],
            threshold=threshold,
        )
        registry.deploy("fraud-detector", 1)
    replay_month(
        settings,
        "fraud-detector",
        1,
        end=END_OF_WEEK4,
        rows_per_week=6000,
        console=Console(file=io.StringIO()),
    )
    return home


def shipyard(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    env.update(SHIPYARD_HOME=str(home), SHIPYARD_ACTOR="cli-tester", COLUMNS="220")
    return subprocess.run(
        [sys.executable, "-m", "shipyard", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_pipeline_run_fails_a_ci_job_when_a_gate_refuses_the_candidate(home: Path) -> None:
    strict = _config(home, ["auc >= 0.999"])
    refused = shipyard(home, "pipeline", "run", "fraud-detector", "--config", str(strict))
    assert refused.returncode == 10, refused.stderr
    assert "rejected" in refused.stdout
    assert "auc >= 0.999" in refused.stdout
    assert "FAIL" in refused.stdout


def test_a_failing_training_function_is_named_with_its_line_not_a_traceback(
    home: Path, tmp_path: Path, champion: tuple[Any, pd.DataFrame, float]
) -> None:
    """Runs before the canary test: a failed pipeline leaves nothing active."""
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    _, history, _ = champion
    history[[*FEATURES, LABEL]].iloc[:3000].to_parquet(project / "data" / "train.parquet")
    (project / "broken_training.py").write_text(
        "def train(frame, params):\n    rate = len(frame) // params['folds']\n    return rate\n"
    )
    config = project / "shipyard.yaml"
    config.write_text(yaml.safe_dump({"models": {"fraud-detector": {
        "train": "broken_training:train",
        "params": {"folds": 0},
        "data": {"source": "parquet", "path": "data/train.parquet", "label": "is_fraud",
                 "time_column": None},
        "holdout": {"split": "random", "fraction": 0.25},
    }}}))  # fmt: skip
    failed = shipyard(home, "pipeline", "run", "fraud-detector", "--config", str(config))
    assert failed.returncode == 2, failed.stderr
    message = " ".join(failed.stderr.split())  # Rich wraps long lines
    assert (
        "your training function `broken_training:train` raised ZeroDivisionError: integer "
        f"division or modulo by zero ({project / 'broken_training.py'}:2); --debug shows the traceback"
    ) in message
    assert "Traceback" not in failed.stderr
    debug = shipyard(home, "pipeline", "run", "fraud-detector", "--config", str(config), "--debug")
    assert debug.returncode == 2
    assert "Traceback" in debug.stderr
    assert "broken_training.py" in debug.stderr
    assert "--debug shows the traceback" not in debug.stderr
    # the data path is read from the folder of shipyard.yaml, and a missing one is named
    config.write_text(config.read_text().replace("data/train.parquet", "data/missing.parquet"))
    missing = shipyard(home, "pipeline", "run", "fraud-detector", "--config", str(config))
    assert missing.returncode == 7, missing.stderr
    assert f"{project / 'data' / 'missing.parquet'} does not exist" in " ".join(
        missing.stderr.split()
    )
    (project / "data" / "missing.parquet").write_text("not parquet")
    unreadable = shipyard(home, "pipeline", "run", "fraud-detector", "--config", str(config))
    assert unreadable.returncode == 2
    assert "is not a readable Parquet file" in unreadable.stderr
    history_of = json.loads(shipyard(home, "history", "fraud-detector", "--json").stdout)
    failures = [e for e in history_of if e["action"] == "pipeline.failed"]
    assert any("broken_training:train` raised ZeroDivisionError" in json.dumps(e) for e in failures)


def test_pipeline_run_then_the_worker_history_jobs_and_runs(home: Path) -> None:
    config = _config(home, ["auc >= 0.75", "accuracy >= champion - 0.005"])
    done = shipyard(home, "pipeline", "run", "fraud-detector", "--config", str(config), "--json")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["status"] == "canary"
    candidate = record["candidate_version"]
    # a second run is refused while the canary runs
    busy = shipyard(home, "pipeline", "run", "fraud-detector", "--config", str(config))
    assert busy.returncode == 4
    assert "is still canary" in busy.stderr
    ran = shipyard(home, "worker", "--once", "--config", str(config))
    assert ran.returncode == 0, ran.stderr
    assert "tick done" in ran.stdout
    assert "monitor done" in ran.stdout
    jobs = json.loads(shipyard(home, "jobs", "list", "--json").stdout)
    kinds = {(j["kind"], j["status"]) for j in jobs}
    assert ("monitor", "done") in kinds
    assert ("tick", "queued") in kinds  # the scheduler keeps itself going
    history = shipyard(home, "history", "fraud-detector").stdout
    for step in (
        "pipeline.data",
        "pipeline.train",
        "pipeline.validate",
        "pipeline.register",
        "pipeline.canary",
    ):
        assert step in history
    runs = json.loads(shipyard(home, "runs", "list", "--json").stdout)
    run = next(r for r in runs if r["tags"].get("registered") == f"fraud-detector:{candidate}")
    shown = shipyard(home, "runs", "show", run["id"][:12])
    assert "entrypoint shipyard.demo.training:train" in shown.stdout
    wrong = shipyard(home, "approve", "fraud-detector", "1", "--config", str(config))
    assert wrong.returncode == 4
    assert "is not waiting for approval" in wrong.stderr


def test_a_broken_config_is_a_configuration_error(home: Path, tmp_path: Path) -> None:
    bad = tmp_path / "shipyard.yaml"
    bad.write_text("models:\n  fraud-detector:\n    train: no_colon_here\n")
    result = shipyard(home, "pipeline", "run", "fraud-detector", "--config", str(bad))
    assert result.returncode == 7
    assert "train must look like module:function" in result.stderr


def test_a_worker_told_to_stop_finishes_and_exits_cleanly(tmp_path: Path) -> None:
    """SIGTERM (a pod being stopped) ends `shipyard worker` between jobs, with exit code 0."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    env.update(SHIPYARD_HOME=str(tmp_path / "home"))
    worker = subprocess.Popen(
        [sys.executable, "-m", "shipyard", "worker", "--poll", "0.1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert worker.stdout is not None
        line = worker.stdout.readline()  # the worker says it runs once it is ready
        assert "running" in line, line + worker.stderr.read() if worker.stderr else line
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 0, err
    assert "SIGTERM: finishing the job in hand, then stopping" in err
    assert "stopped" in out
    assert "Traceback" not in err

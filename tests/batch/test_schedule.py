"""Batch jobs on a cron schedule: the worker runs each scheduled time once, through the jobs
table (leases, retries), and the run shows in `jobs list` and `history`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

from shipyard.batch import BatchJobSpec, load_batch_jobs
from shipyard.core import Settings
from shipyard.core.errors import ConfigurationError
from shipyard.demo import FEATURES
from shipyard.registry import Registry
from shipyard.store import JobQueue
from shipyard.worker import Worker

NIGHT = datetime(2026, 11, 27, 1, 59, tzinfo=UTC)


@pytest.fixture
def nightly(
    registry: Registry, fraud_model: Any, fraud_sample: pd.DataFrame, tmp_path: Path
) -> BatchJobSpec:
    registry.register(
        fraud_model, name="fraud-detector", sample=fraud_sample, aliases=["production"]
    )
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    fraud_sample.iloc[:300].to_parquet(tmp_path / "in" / "2026-11-27.parquet")
    config = tmp_path / "shipyard.yaml"
    config.write_text(
        "batch:\n"
        "  nightly-scores:\n"
        "    model: fraud-detector\n"
        f"    input: {tmp_path}/in/{{date}}.parquet\n"
        f"    output: {tmp_path}/out/{{date}}.parquet\n"
        "    schedule: '0 2 * * *'\n"
        "    chunk_rows: 100\n"
    )
    return load_batch_jobs(config)["nightly-scores"]


def test_the_worker_runs_each_scheduled_time_once(
    settings: Settings, registry: Registry, nightly: BatchJobSpec, tmp_path: Path
) -> None:
    clock = [NIGHT]
    jobs = {"nightly-scores": nightly}
    with (
        Worker(settings, specs={}, batch_jobs=jobs, clock=lambda: clock[0], name="a") as first,
        Worker(settings, specs={}, batch_jobs=jobs, clock=lambda: clock[0], name="b") as second,
    ):
        first.start_schedule()
        second.start_schedule()  # one tick is ever queued, whoever starts it
        assert [j.kind for j in first.run_until_idle()] == ["tick"]  # 01:59: nothing due
        clock[0] = NIGHT + timedelta(minutes=1, seconds=30)
        ran = first.run_until_idle() + second.run_until_idle()
        assert [j.kind for j in ran] == ["tick", "batch"]
        clock[0] = NIGHT + timedelta(minutes=5)
        ran = first.run_until_idle() + second.run_until_idle()
        assert [j.kind for j in ran] == ["tick"]  # 02:00 is not run again

    out = pq.read_table(tmp_path / "out" / "2026-11-27.parquet")
    assert out.num_rows == 300
    (job,) = [j for j in JobQueue(registry.database).list_jobs(limit=50) if j.kind == "batch"]
    assert job.status == "done"
    assert job.model == "fraud-detector"
    assert job.payload == {"job": "nightly-scores", "slot": "2026-11-27T02:00:00+00:00"}
    assert job.result is not None
    assert job.result["rows"] == 300
    (event,) = [e for e in registry.history("fraud-detector") if e.action == "batch.scored"]
    assert event.details["rows"] == 300
    assert event.details["job_id"] == job.result["job_id"]


def test_a_failed_run_is_recorded_and_retried(
    settings: Settings, registry: Registry, nightly: BatchJobSpec, tmp_path: Path
) -> None:
    clock = [NIGHT + timedelta(days=1)]  # 2026-11-28 has no input file
    jobs = {"nightly-scores": nightly}
    with Worker(settings, specs={}, batch_jobs=jobs, clock=lambda: clock[0], name="a") as worker:
        worker.start_schedule()
        worker.run_until_idle()
        clock[0] += timedelta(minutes=2)
        ran = worker.run_until_idle()
    (job,) = [j for j in ran if j.kind == "batch"]
    assert job.status == "queued"  # waits for its retry
    assert job.attempts == 1
    assert "2026-11-28.parquet does not exist" in (job.last_error or "")
    assert not (tmp_path / "out" / "2026-11-28.parquet").exists()


def test_a_bad_batch_section_says_what_is_wrong(tmp_path: Path) -> None:
    config = tmp_path / "shipyard.yaml"
    config.write_text(
        "batch:\n  n:\n    model: m\n    output: o.parquet\n    schedule: 'nightly'\n"
    )
    with pytest.raises(ConfigurationError, match="not a cron expression"):
        load_batch_jobs(config)
    config.write_text("batch:\n  n:\n    model: m\n    schedule: '0 2 * * *'\n    outptu: o\n")
    with pytest.raises(ConfigurationError, match="outptu"):
        load_batch_jobs(config)
    config.write_text(
        f"batch:\n  n:\n    model: m\n    output: {FEATURES[0]}.csv\n    schedule: '@daily'\n"
    )
    assert load_batch_jobs(config)["n"].schedule == "@daily"

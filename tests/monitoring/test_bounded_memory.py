"""A monitoring run's memory does not grow with the log: ten times the rows, about the same
peak RSS, because aggregates run in DuckDB over the Parquet and Python only sees samples."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from shipyard.core import Settings, Signature
from shipyard.demo import FEATURES
from shipyard.logstore import LogWriter
from shipyard.registry import Registry
from shipyard.store import ArtifactStore

MODEL = "fraud-detector"
END = datetime(2024, 5, 8, tzinfo=UTC)
DAYS = 7
LABELLED = 0.3  # the share of predictions whose label came back
GROWTH_BOUND = 1.6  # peak RSS of the 2M-row run over that of the 200k-row run, at most

RUN = """
import json, resource, sys
from datetime import datetime
from shipyard.core import Settings
from shipyard.logstore import LogReader
from shipyard.monitoring import Monitor
from shipyard.registry import Registry

home, model, now = sys.argv[1:4]
with Registry.from_settings(Settings(home=home, actor="tester")) as registry:
    report = Monitor(registry, LogReader(registry.artifacts)).run(
        model, window="1d", periods=7, now=datetime.fromisoformat(now)
    )
    summary = report.versions[1]
print(json.dumps({
    "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    "volumes": [w["volume"] for w in summary["windows"]],
    "labelled": [w["labelled"] for w in summary["windows"]],
    "drift_columns": len(summary["drift"]["columns"]),
}))
"""


def write_log(
    spool_dir: Path,
    store: ArtifactStore,
    signature: Signature,
    features: pd.DataFrame,
    rows: int,
    seed: int,
) -> None:
    """`rows` predictions of version 1 over the seven days before END, logged through
    `LogWriter` as a server logs them (an hourly batch at a time, the Parquet written at the
    end of each day), with the labels of 30% of them ten minutes after their batch."""
    rng = np.random.default_rng(seed)
    columns = signature.validate_frame(features)
    types = {c.name: c.type for c in signature.columns}
    per_day = rows // DAYS
    writer = LogWriter(spool_dir, store, types_of=lambda model, version: types, fsync_seconds=0)
    try:  # not started: this writes the Parquet itself, once a day
        for day in range(DAYS):
            start = (END - timedelta(days=DAYS - day)).timestamp()
            for hour, batch in enumerate(np.array_split(np.arange(per_day), 24)):
                at = start + hour * 3600 + 1800
                n = len(batch)
                noise = rng.bytes(10 * n).hex()
                clock = f"{round(at * 1000):012x}"  # ids made at `at`, as `new_id` makes them
                ids = [clock + noise[i : i + 20] for i in range(0, 20 * n, 20)]
                scores = rng.beta(1, 8, n)
                rows_taken = rng.integers(0, len(features), n)
                writer.log_predictions(
                    model=MODEL, version=1, variant="primary", ids=ids,
                    inputs={name: values[rows_taken] for name, values in columns.items()},
                    outputs={"score": scores, "label": (scores >= 0.5).astype(np.int64)},
                    latency_ms=float(rng.gamma(2.0, 4.0)), at=at,
                )  # fmt: skip
                labelled = np.flatnonzero(rng.random(n) < LABELLED)
                truth = rng.random(len(labelled)) < scores[labelled]
                writer.log_labels(
                    [ids[i] for i in labelled], truth.astype(np.int64).tolist(), at=at + 600
                )
            writer.flush()
    finally:
        writer.close()


def monitor_in_a_fresh_process(home: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", RUN, str(home), MODEL, END.isoformat()],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.slow
def test_ten_times_the_log_needs_about_the_same_peak_memory(
    tmp_path: Path, fraud_model: Any, fraud_data: pd.DataFrame, fraud_sample: pd.DataFrame
) -> None:
    runs = {}
    for rows in (200_000, 2_000_000):
        settings = Settings(home=tmp_path / f"rows-{rows}", actor="tester")
        with Registry.from_settings(settings) as registry:
            version = registry.register(fraud_model, name=MODEL, sample=fraud_sample)
            write_log(
                tmp_path / f"spool-{rows}", registry.artifacts, version.signature,
                fraud_data[FEATURES], rows, seed=rows,
            )  # fmt: skip
        runs[rows] = monitor_in_a_fresh_process(settings.home)

    small, large = runs[200_000], runs[2_000_000]
    for rows, run in runs.items():
        assert run["volumes"] == [rows // DAYS] * DAYS
        assert sum(run["labelled"]) == pytest.approx(LABELLED * rows, rel=0.02)
        assert run["drift_columns"] == len(FEATURES)
    ratio = large["peak_rss_kb"] / small["peak_rss_kb"]
    assert ratio < GROWTH_BOUND, (
        f"peak RSS {small['peak_rss_kb'] / 1024:.0f} MiB at 200k rows, "
        f"{large['peak_rss_kb'] / 1024:.0f} MiB at 2M rows"
    )

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
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shipyard.core import Settings
from shipyard.demo import FEATURES
from shipyard.registry import Registry

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


HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def _ids(rng: np.random.Generator, ts: np.ndarray) -> pa.Array:
    """Shipyard-shaped ids: a 12-hex-digit millisecond clock, then 20 random hex digits."""
    clock = (ts // 1_000).astype(np.uint64)
    noise = rng.integers(0, 2**64, len(ts), dtype=np.uint64, endpoint=False)
    more = rng.integers(0, 2**16, len(ts), dtype=np.uint64)
    digits = np.empty((len(ts), 32), dtype=np.uint8)
    for i in range(32):
        value, place = (clock, 11 - i) if i < 12 else (noise, 27 - i) if i < 28 else (more, 31 - i)
        digits[:, i] = HEX[((value >> np.uint64(4 * place)) & np.uint64(15)).astype(np.intp)]
    return pa.array(digits.view("S32").ravel(), pa.binary(32)).cast(pa.string())


def write_log(root: Path, features: pd.DataFrame, rows: int, seed: int) -> None:
    """`rows` predictions of version 1 over the seven days before END, as `LogWriter` lays
    them out (one segment per day), with labels for 30% of them."""
    rng = np.random.default_rng(seed)
    inputs = pa.Table.from_pandas(features, preserve_index=False)
    inputs = inputs.cast(
        pa.schema(
            [
                pa.field(f.name, pa.string() if pa.types.is_large_string(f.type) else f.type)
                for f in inputs.schema
            ]
        )
    )
    per_day = rows // DAYS
    for day in range(DAYS):
        start = END - timedelta(days=DAYS - day)
        ts = np.sort(
            int(start.timestamp() * 1e6) + rng.integers(0, 86_400_000_000, per_day)
        )  # microseconds
        ids = _ids(rng, ts)
        scores = rng.beta(1, 8, per_day)
        table = pa.table(
            {
                "prediction_id": ids,
                "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
                "model": pa.array([MODEL] * per_day, pa.string()),
                "version": pa.array(np.ones(per_day, np.int32)),
                "variant": pa.array(["primary"] * per_day, pa.string()),
                "key_id": pa.nulls(per_day, pa.string()),
                "request_id": pa.nulls(per_day, pa.string()),
                "latency_ms": rng.gamma(2.0, 4.0, per_day),
                "features": pa.StructArray.from_arrays(
                    [
                        c.combine_chunks()
                        for c in inputs.take(rng.integers(0, inputs.num_rows, per_day)).columns
                    ],
                    fields=list(inputs.schema),
                ),
                "score": scores,
                "label": pa.array(np.where(scores >= 0.5, "1", "0"), pa.string()),
                "value": pa.nulls(per_day, pa.float64()),
                "probabilities": pa.nulls(per_day, pa.list_(pa.float64())),
            }
        )
        date = start.strftime("%Y-%m-%d")
        folder = root / "logs" / "predictions" / f"model={MODEL}" / f"date={date}"
        folder.mkdir(parents=True)
        pq.write_table(table, folder / f"segment-{day}-v1.parquet", compression="snappy")

        labelled = np.flatnonzero(rng.random(per_day) < LABELLED)
        truth = rng.random(len(labelled)) < scores[labelled]
        labels = pa.table(
            {
                "prediction_id": ids.take(labelled),
                "label": pa.array(np.where(truth, "1", "0"), pa.string()),
                "received_at": pa.array(ts[labelled] + 3_600_000_000, pa.timestamp("us", tz="UTC")),
                "key_id": pa.nulls(len(labelled), pa.string()),
            }
        )
        folder = root / "logs" / "labels" / f"date={date}"
        folder.mkdir(parents=True)
        pq.write_table(labels, folder / f"segment-{day}.parquet", compression="snappy")


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
            registry.register(fraud_model, name=MODEL, sample=fraud_sample)
        write_log(Path(settings.resolved_artifact_root), fraud_data[FEATURES], rows, seed=rows)
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

"""`shipyard batch` as a user runs it: killed with -9 mid-job and run again, every row is in
the output and the log exactly once; bad input gets a message and an exit code, and nothing
half-written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from shipyard.core import Settings
from shipyard.logstore import LogReader
from shipyard.registry import Registry
from shipyard.store import ArtifactStore
from tests.serving.slow_model import SlowClassifier

ROWS = 10_000
CHUNK = 500


def command(home: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "shipyard", "--home", str(home), *args]


def env() -> dict[str, str]:
    out = {**os.environ, "SHIPYARD_ACTOR": "cli-tester", "COLUMNS": "200"}
    out.pop("SHIPYARD_DATABASE_URL", None)
    return out


def shipyard(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(home, *args), env=env(), capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`slow:1` takes 0.15 s per chunk (a real classifier that sleeps), so a job of 20 chunks
    runs long enough to be killed in the middle."""
    home = tmp_path_factory.mktemp("batch-home")
    X = pd.DataFrame({"x0": [-1.0, 1.0], "x1": [0.0, 0.0]})
    with Registry.from_settings(Settings(home=home, auto_migrate=True, actor="t")) as registry:
        registry.register(SlowClassifier(delay=0.15).fit(X, [0, 1]), name="slow", sample=X)
    return home


@pytest.fixture
def rows(tmp_path: Path) -> Path:
    rng = np.random.default_rng(5)
    frame = pd.DataFrame(
        {"id": np.arange(ROWS), "x0": rng.normal(size=ROWS), "x1": rng.normal(size=ROWS)}
    )
    path = tmp_path / "rows.parquet"
    frame.to_parquet(path, row_group_size=1_234)
    return path


def wait_for(condition: object, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)


def staged_parts(out: Path) -> int:
    partial = Path(f"{out}.partial")
    return len(list(partial.glob("part-*.arrow"))) if partial.exists() else 0


def test_killed_mid_job_the_same_command_finishes_it_exactly_once(
    home: Path, rows: Path, tmp_path: Path
) -> None:
    out = tmp_path / "scores.parquet"
    args = ("batch", "slow:1", "-i", str(rows), "-o", str(out), "--chunk-rows", str(CHUNK))
    first = subprocess.Popen(
        command(home, *args), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(lambda: staged_parts(out) >= 3, 60, "three chunks staged")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    staged = staged_parts(out)
    assert 3 <= staged < ROWS // CHUNK  # killed in the middle
    assert not out.exists()  # a half-done output never looks complete

    second = shipyard(home, *args, "--json")
    assert second.returncode == 0, second.stderr
    result = json.loads(second.stdout)
    assert result["rows"] == ROWS
    assert result["resumed_rows"] >= staged * CHUNK
    assert result["scored"] == ROWS - result["resumed_rows"]
    table = pq.read_table(out)
    assert table.column("id").to_pylist() == list(range(ROWS))  # every row once, in order
    ids = table.column("prediction_id").to_pylist()
    assert len(set(ids)) == ROWS
    x0 = pq.read_table(rows).column("x0").to_numpy()
    np.testing.assert_array_equal(table.column("score").to_numpy(), 1 / (1 + np.exp(-x0)))
    assert not Path(f"{out}.partial").exists()

    logged = LogReader(ArtifactStore(Settings(home=home).resolved_artifact_root)).predictions(
        "slow"
    )
    logged_ids = logged.column("prediction_id").to_pylist()
    assert len(logged_ids) == ROWS  # the chunks the killed run logged are not logged twice
    assert set(logged_ids) == set(ids)


def test_progress_lines_when_not_on_a_terminal(home: Path, rows: Path, tmp_path: Path) -> None:
    out = tmp_path / "scores.csv"
    done = shipyard(
        home, "batch", "slow:1", "-i", str(rows), "-o", str(out), "--chunk-rows", "5000"
    )
    assert done.returncode == 0, done.stderr
    assert f"scored {ROWS:,} of {ROWS:,} rows" in done.stderr
    assert f"wrote {ROWS:,} rows to {out}" in done.stderr
    assert "logged for `shipyard monitor`" in done.stderr
    assert len(pd.read_csv(out)) == ROWS


def test_bad_input_gets_a_message_and_an_exit_code(home: Path, rows: Path, tmp_path: Path) -> None:
    out = tmp_path / "scores.parquet"
    out.write_bytes(b"yesterday's scores")
    exists = shipyard(home, "batch", "slow:1", "-i", str(rows), "-o", str(out))
    assert exists.returncode == 4
    assert "already exists" in exists.stderr
    assert "--overwrite" in exists.stderr
    assert out.read_bytes() == b"yesterday's scores"

    missing = shipyard(home, "batch", "slow:1", "-i", str(tmp_path / "x.parquet"), "-o", "o.csv")
    assert missing.returncode == 2
    assert "does not exist" in missing.stderr

    lacking = tmp_path / "lacking.csv"
    pd.DataFrame({"id": [1], "x0": [0.5]}).to_csv(lacking, index=False)
    new = tmp_path / "new.parquet"
    short = shipyard(home, "batch", "slow:1", "-i", str(lacking), "-o", str(new))
    assert short.returncode == 2
    assert "lacks column(s) 'x1'" in short.stderr
    assert not new.exists()
    assert not Path(f"{new}.partial").exists()

    unreachable = shipyard(
        home, "batch", "slow:1", "-q", "SELECT 1", "--db",
        "postgresql+psycopg://me:secret@127.0.0.1:1/db", "-o", str(new),
    )  # fmt: skip
    assert unreachable.returncode == 9
    assert "cannot" in unreachable.stderr
    assert "secret" not in unreachable.stderr

    unknown = shipyard(home, "batch", "nope", "-i", str(rows), "-o", str(new))
    assert unknown.returncode == 3
    for run in (exists, missing, short, unreachable, unknown):
        assert "Traceback" not in run.stderr


def test_another_job_staged_at_the_output_is_not_mixed_in(
    home: Path, rows: Path, tmp_path: Path
) -> None:
    out = tmp_path / "scores.parquet"
    args = ("batch", "slow:1", "-i", str(rows), "-o", str(out), "--chunk-rows", str(CHUNK))
    first = subprocess.Popen(
        command(home, *args), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(lambda: staged_parts(out) >= 1, 60, "a chunk staged")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    other = shipyard(home, "batch", "slow:1", "-i", str(rows), "-o", str(out), "--keep", "*")
    assert other.returncode == 4
    assert "an unfinished job" in other.stderr
    assert "--overwrite" in other.stderr
    replaced = shipyard(
        home, "batch", "slow:1", "-i", str(rows), "-o", str(out), "--keep", "*", "--overwrite"
    )
    assert replaced.returncode == 0, replaced.stderr
    table = pq.read_table(out)
    assert table.column_names[:3] == ["id", "x0", "x1"]
    assert table.num_rows == ROWS

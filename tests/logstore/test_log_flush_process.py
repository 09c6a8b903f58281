"""Turning the spool into Parquet in a helper process (`flush_in="process"`, what `shipyard
server` uses): the same segments as a thread writes, the same guarantees when the store fails,
and a helper that dies costs speed, never rows."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from pathlib import Path
from typing import Literal

import numpy as np
import pytest

from shipyard.core import new_id
from shipyard.logstore import LogReader, LogWriter
from shipyard.store import ArtifactStore
from tests.logstore._logs import NOON, log_scores, logged_ids

TYPES = {"amount": "float64", "count": "int64", "category": "string"}


def types_of(model: str, version: int) -> dict[str, str] | None:
    return TYPES if (model, version) == ("fraud", 3) else None


def helpers() -> set[int]:
    """Pids of this test process's multiprocessing children."""
    return {p.pid for p in multiprocessing.active_children() if p.pid is not None}


def log_mixed(writer: LogWriter, ids: list[str]) -> None:
    """A single-row entry, then a large one (raw column bytes), for a typed version."""
    rng = np.random.default_rng(3)
    for chunk in (ids[:1], ids[1:]):
        n = len(chunk)
        writer.log_predictions(
            model="fraud",
            version=3,
            variant="primary",
            ids=chunk,
            inputs={
                "amount": rng.normal(size=n),
                "count": rng.integers(0, 100, size=n),
                "category": np.array(
                    ["grocery", "travel"] * (n // 2) + ["x"] * (n % 2), dtype=object
                ),
            },
            outputs={"score": rng.random(n), "label": [1] * n},
            latency_ms=1.0,
            at=NOON,
        )


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_the_helper_process_writes_what_a_thread_writes(
    tmp_path: Path, mode: Literal["thread", "process"]
) -> None:
    ids = sorted(new_id() for _ in range(41))
    expected = tmp_path / "expected"
    reference = LogWriter(expected / "spool", ArtifactStore(str(expected / "artifacts")),
                          types_of=types_of, fsync_seconds=0)  # fmt: skip
    log_mixed(reference, ids)
    reference.close()

    before = helpers()
    store = ArtifactStore(str(tmp_path / "artifacts"))
    writer = LogWriter(tmp_path / "spool", store, types_of=types_of, fsync_seconds=0, flush_in=mode)
    log_mixed(writer, ids)
    assert writer.flush() == 41
    started = helpers() - before
    assert len(started) == (1 if mode == "process" else 0)
    writer.close()
    assert not started & helpers()  # the helper stops with the writer

    table = LogReader(store).predictions("fraud").sort_by("prediction_id")
    assert table.equals(LogReader(reference.store).predictions("fraud").sort_by("prediction_id"))
    assert table.num_rows == 41


def test_a_store_the_helper_cannot_write_keeps_the_spool_until_it_can(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    root.write_text("a file where the store's folder should be: every write fails")
    store = ArtifactStore(str(root))
    writer = LogWriter(tmp_path / "spool", store, fsync_seconds=0, flush_in="process")
    ids = [new_id() for _ in range(20)]
    log_scores(writer, ids, amount=np.linspace(0, 1, 20))
    assert writer.flush() == 0
    assert writer.failures == 1
    assert writer.pending_ids() == set(ids)
    assert len(list((tmp_path / "spool").glob("*.spool"))) == 1

    root.unlink()
    assert writer.flush() == 20
    assert logged_ids(LogReader(store)) == sorted(ids)
    assert list((tmp_path / "spool").glob("*.spool")) == []
    writer.close()


def test_a_helper_that_dies_costs_no_rows_and_is_replaced(
    tmp_path: Path, store: ArtifactStore, caplog: pytest.LogCaptureFixture
) -> None:
    before = helpers()
    writer = LogWriter(tmp_path / "spool", store, fsync_seconds=0, flush_in="process")
    first, second, third = ([new_id() for _ in range(3)] for _ in range(3))
    log_scores(writer, first)
    assert writer.flush() == 3
    (helper,) = helpers() - before
    os.kill(helper, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while helper in helpers():
        assert time.monotonic() < deadline
        time.sleep(0.05)

    log_scores(writer, second)
    with caplog.at_level(logging.WARNING, logger="shipyard.logstore"):
        assert writer.flush() == 3  # written here, in this process
    assert "the log flush process died" in caplog.text
    log_scores(writer, third)
    assert writer.flush() == 3
    (replacement,) = helpers() - before
    assert replacement != helper
    writer.close()
    assert logged_ids(LogReader(store)) == sorted(first + second + third)


def test_a_memory_store_is_written_in_this_process_whatever_the_setting(
    spool_dir: Path, any_store: ArtifactStore
) -> None:
    # memory:// lives in this process only; a helper would write where nobody reads
    before = helpers()
    writer = LogWriter(spool_dir, any_store, fsync_seconds=0, flush_in="process")
    ids = [new_id() for _ in range(2)]
    log_scores(writer, ids)
    assert writer.flush() == 2
    assert len(helpers() - before) == (0 if not any_store.is_local else 1)
    writer.close()
    assert logged_ids(LogReader(any_store)) == sorted(ids)

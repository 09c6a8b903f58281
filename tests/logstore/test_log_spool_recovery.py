"""The spool keeps what the store could not take: nothing acknowledged is lost to a store
outage, a torn write or a killed process, and replays rewrite the same objects."""

from __future__ import annotations

import logging
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from shipyard.core import new_id
from shipyard.logstore import LogReader, LogWriter
from shipyard.store import ArtifactStore
from tests.logstore._logs import NOON, log_scores, logged_ids


class FlakyStore(ArtifactStore):
    """A local store that refuses writes while `down`, and remembers the writes it took."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.down = True
        self.written: list[str] = []

    def put_bytes(self, path: str, data: bytes) -> None:  # write_bytes comes through here too
        if self.down:
            raise OSError("the store is down")
        self.written.append(path)
        super().put_bytes(path, data)


def spool_stems(folder: Path) -> set[str]:
    return {p.stem for p in folder.glob("*.spool")}


def test_a_store_outage_keeps_the_spool_and_a_later_flush_writes_every_row_in_order(
    tmp_path: Path, spool_dir: Path
) -> None:
    store = FlakyStore(str(tmp_path / "artifacts"))
    writer = LogWriter(spool_dir, store, fsync_seconds=0)
    ids: list[str] = []
    stems: list[str] = []
    for round_ in range(3):
        batch = [new_id(), new_id()]
        before = spool_stems(spool_dir)
        log_scores(writer, batch, at=NOON + round_)
        (stem,) = spool_stems(spool_dir) - before
        assert writer.flush() == 0
        ids += batch
        stems.append(stem)
    assert writer.failures == 3
    assert spool_stems(spool_dir) == set(stems)
    assert writer.pending_ids() == set(ids)
    assert writer.lag_seconds > 0

    store.down = False
    assert writer.flush() == 6
    assert [path.rsplit("/", 1)[1] for path in store.written] == [f"{s}-v1.parquet" for s in stems]
    assert logged_ids(LogReader(store)) == sorted(ids)
    assert spool_stems(spool_dir) == set()
    assert writer.pending_ids() == set()
    assert writer.lag_seconds == 0.0
    writer.close()


def test_close_during_an_outage_leaves_the_spool_for_the_next_writer(
    tmp_path: Path, spool_dir: Path
) -> None:
    root = str(tmp_path / "artifacts")
    ids = [new_id() for _ in range(3)]
    broken = LogWriter(spool_dir, FlakyStore(root), fsync_seconds=0).start()
    log_scores(broken, ids)
    broken.log_labels(ids, [1, 0, 1])
    broken.close()
    assert len(spool_stems(spool_dir)) == 1

    with LogWriter(spool_dir, ArtifactStore(root), flush_seconds=3600) as healthy:
        reader = LogReader(healthy.store)
        assert logged_ids(reader) == sorted(ids)
        assert reader.labels().num_rows == 3
    assert spool_stems(spool_dir) == set()


def test_replaying_a_spool_file_twice_rewrites_the_same_objects(
    spool_dir: Path, store: ArtifactStore, tmp_path: Path
) -> None:
    ids = [new_id() for _ in range(4)]
    writer = LogWriter(spool_dir, store, fsync_seconds=0)
    log_scores(writer, ids[:2], version=1)
    log_scores(writer, ids[2:], version=2)
    writer.log_labels(ids, [1, 0, 1, 0])
    (spool,) = spool_dir.glob("*.spool")
    backup = tmp_path / "backup.spool"
    shutil.copyfile(spool, backup)
    writer.flush()
    writer.close()
    paths = store.glob("logs/*/*/*.parquet") + store.glob("logs/*/*/*/*.parquet")
    first = {p: pq.read_table(store.local_path(p)) for p in paths}

    shutil.copyfile(backup, spool)  # as if the flush had died after writing the Parquet
    assert LogWriter(spool_dir, store).recover() == 8

    again = store.glob("logs/*/*/*.parquet") + store.glob("logs/*/*/*/*.parquet")
    assert again == paths
    assert all(pq.read_table(store.local_path(p)).equals(first[p]) for p in paths)
    assert logged_ids(LogReader(store)) == sorted(ids)  # replaced, not duplicated
    assert not spool.exists()


def test_a_torn_last_line_is_skipped_and_the_lines_before_it_kept(
    tmp_path: Path, store: ArtifactStore, caplog: pytest.LogCaptureFixture
) -> None:
    scratch = LogWriter(tmp_path / "scratch", ArtifactStore(str(tmp_path / "scratch-store")))
    kept, torn = [new_id(), new_id()], [new_id()]
    log_scores(scratch, kept[:1])
    log_scores(scratch, kept[1:])
    log_scores(scratch, torn)
    (source,) = (tmp_path / "scratch").glob("*.spool")
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    data = source.read_bytes()
    (crashed / source.name).write_bytes(data[: len(data) - 25])  # cut inside the last line
    scratch.close()

    with caplog.at_level(logging.ERROR, logger="shipyard.logstore"):
        assert LogWriter(crashed, store).recover() == 2
    assert logged_ids(LogReader(store)) == sorted(kept)
    assert caplog.records == []  # a torn tail is expected after a crash, not an error
    assert list(crashed.iterdir()) == []


def test_an_entry_whose_raw_column_bytes_were_cut_off_is_skipped_quietly(
    tmp_path: Path, store: ArtifactStore, caplog: pytest.LogCaptureFixture
) -> None:
    scratch = LogWriter(tmp_path / "scratch", ArtifactStore(str(tmp_path / "scratch-store")))
    kept, torn = [new_id() for _ in range(20)], [new_id() for _ in range(20)]
    amounts = np.linspace(0.0, 1.0, 20)  # 20 rows: spooled as raw bytes after the line
    log_scores(scratch, kept, amount=amounts)
    log_scores(scratch, torn, amount=amounts)
    (source,) = (tmp_path / "scratch").glob("*.spool")
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    data = source.read_bytes()
    (crashed / source.name).write_bytes(data[: len(data) - 7])  # cut inside the raw bytes
    scratch.close()

    with caplog.at_level(logging.ERROR, logger="shipyard.logstore"):
        assert LogWriter(crashed, store).recover() == 20
    table = LogReader(store).predictions()
    assert sorted(table.column("prediction_id").to_pylist()) == sorted(kept)
    assert table.column("features").combine_chunks().field("amount").to_pylist() == amounts.tolist()
    assert caplog.records == []


def test_a_corrupt_line_in_the_middle_is_reported_and_the_others_kept(
    tmp_path: Path, store: ArtifactStore, caplog: pytest.LogCaptureFixture
) -> None:
    ids = [new_id(), new_id()]
    scratch = LogWriter(tmp_path / "scratch", ArtifactStore(str(tmp_path / "scratch-store")))
    log_scores(scratch, ids[:1])
    log_scores(scratch, ids[1:])
    (source,) = (tmp_path / "scratch").glob("*.spool")
    first, second, _ = source.read_bytes().split(b"\n")
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    (crashed / source.name).write_bytes(first + b"\n" + b'{"k": "p", "ids": [' + b"\n" + second)
    scratch.close()

    with caplog.at_level(logging.ERROR, logger="shipyard.logstore"):
        assert LogWriter(crashed, store).recover() == 2
    assert logged_ids(LogReader(store)) == sorted(ids)
    assert "corrupt spool line" in caplog.text


LOGGER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from shipyard.logstore import LogWriter
    from shipyard.store import ArtifactStore

    spool, root, ids, then = Path(sys.argv[1]), sys.argv[2], sys.argv[3].split(","), sys.argv[4]
    writer = LogWriter(spool, ArtifactStore(root), flush_seconds=3600, fsync_seconds=0).start()
    for pid in ids:
        writer.log_predictions(
            model="fraud", version=1, variant="primary", ids=[pid], inputs={"amount": [1.0]},
            outputs={"score": [0.5]}, latency_ms=1.0,
        )
    if then == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    print("logged", flush=True)
    sys.stdin.read()  # hold the spool file until the test kills us
    """
)


def test_spool_of_a_killed_process_is_replayed_by_the_next_start(
    spool_dir: Path, store: ArtifactStore
) -> None:
    ids = [new_id() for _ in range(25)]
    args = [str(spool_dir), store.root, ",".join(ids), "die"]
    died = subprocess.run([sys.executable, "-c", LOGGER, *args], timeout=120, check=False)
    assert died.returncode == -signal.SIGKILL
    assert len(spool_stems(spool_dir)) == 1
    assert store.glob("logs/*/*/*/*.parquet") == []

    with LogWriter(spool_dir, store, flush_seconds=3600):  # start() replays
        reader = LogReader(store)
        table = reader.predictions()
        assert table.num_rows == 25
        assert logged_ids(reader) == sorted(ids)
    assert spool_stems(spool_dir) == set()


def test_a_spool_file_locked_by_a_live_process_is_claimed_only_once_it_dies(
    spool_dir: Path, store: ArtifactStore
) -> None:
    ids = [new_id() for _ in range(5)]
    args = [str(spool_dir), store.root, ",".join(ids), "hold"]
    command = [sys.executable, "-c", LOGGER, *args]
    writer = LogWriter(spool_dir, store)
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as process:
        assert process.stdout is not None
        assert process.stdout.readline() == "logged\n"
        assert writer.recover() == 0
        assert len(spool_stems(spool_dir)) == 1
        process.kill()
        process.wait(timeout=60)
    assert writer.recover() == 5
    assert logged_ids(LogReader(store)) == sorted(ids)
    assert spool_stems(spool_dir) == set()
    writer.close()

"""Two processes share a spool folder: one's replay of orphans must never take a file the other
has just created (it did, between the file's creation and its lock, and the owner then
answered 500 with "cannot lock new spool file")."""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

import pytest

from shipyard.logstore import _spool
from shipyard.logstore._spool import Spool, claim_orphans


def test_a_siblings_replay_at_the_worst_moment_takes_nothing_of_a_new_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "spool"
    owner = Spool(folder)
    real_flock = fcntl.flock
    claimed: list[str] = []
    raced = threading.Event()

    def flock_after_a_sibling_replays(fd: int, operation: int) -> None:
        # the owner is about to lock the file it just created: a sibling replays right now
        if not raced.is_set():
            raced.set()
            for orphan in claim_orphans(folder):
                claimed.append(orphan.path.name)
                orphan.release(delete=True)
        real_flock(fd, operation)

    monkeypatch.setattr(_spool.fcntl, "flock", flock_after_a_sibling_replays)
    owner.append(b'{"k": "l"}\n', 1, ["a" * 32])
    assert raced.is_set()
    assert claimed == []
    current = owner.current
    assert current is not None
    assert current.path.read_bytes() == b'{"k": "l"}\n'


def test_new_files_and_replays_racing_in_threads_never_collide(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    owner = Spool(folder)
    stop = threading.Event()
    stolen: list[str] = []

    def sibling() -> None:
        while not stop.is_set():
            for orphan in claim_orphans(folder):
                stolen.append(orphan.path.name)
                orphan.release(delete=False)

    thread = threading.Thread(target=sibling)
    thread.start()
    try:
        for i in range(2_000):
            owner.append(b"x\n", 1, [f"{i:032x}"])
            rotated = owner.rotate()
            assert rotated is not None
            rotated.release(delete=True)
    finally:
        stop.set()
        thread.join()
    assert stolen == []
    assert list(folder.iterdir()) == []


def test_a_file_abandoned_while_being_created_is_removed_once_its_creator_is_gone(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "spool"
    folder.mkdir()
    gone = os.fork()
    if gone == 0:
        os._exit(0)
    os.waitpid(gone, 0)
    abandoned = folder / f"{'0' * 32}-{gone}{_spool.CREATING}"
    mine = folder / f"{'1' * 32}-{os.getpid()}{_spool.CREATING}"
    abandoned.touch()
    mine.touch()
    assert list(claim_orphans(folder)) == []
    assert not abandoned.exists()
    assert mine.exists()  # its creator (this process) is alive: it may still rename it

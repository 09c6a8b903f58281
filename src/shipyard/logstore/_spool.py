"""The local write-ahead spool: what a process logged and has not yet turned into Parquet.

Each writing process appends to its own spool file and holds an exclusive `flock` on it for
as long as the file is its own. A file whose lock can be taken belongs to nobody: its writer
exited or was killed (`kill -9` releases the lock too), so whoever takes the lock replays it.
A new file is created and locked under a name the replay never looks at, and only then
renamed into view, so a sibling's replay can never take a file its owner has just created.

One `os.write` per call puts the bytes in the kernel before the caller answers, so a killed
process loses nothing it acknowledged; `fsync` (periodic) adds protection against a machine
crash.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from shipyard.core import new_id
from shipyard.core.lifetime import pid_alive

__all__ = ["Spool", "SpoolFile", "claim_orphans"]

SUFFIX = ".spool"
CREATING = ".creating"  # a file being created: not yet locked, never replayed


@dataclass
class SpoolFile:
    """A spool file and the lock-holding descriptor that makes it ours."""

    path: Path
    fd: int
    rows: int = 0
    bytes: int = 0
    # the prediction ids logged in it, as appended (a request's ids and their model version):
    # kept as they came, since only feedback asks, and rarely
    batches: list[tuple[Sequence[str], tuple[str, int]]] = field(default_factory=list)
    opened_at: float = 0.0
    versions: set[tuple[str, int]] = field(default_factory=set)  # model versions logged in it

    @property
    def ids(self) -> dict[str, tuple[str, int]]:
        """Prediction id -> (model, version), for the predictions logged in it."""
        return {pid: version for ids, version in list(self.batches) for pid in ids}

    def release(self, *, delete: bool) -> None:
        """Delete (after its Parquet is written) or keep the file, then let go of it."""
        if delete:
            self.path.unlink(missing_ok=True)
        os.close(self.fd)


def _open_locked(path: Path, flags: int) -> int | None:
    try:
        fd = os.open(path, flags, 0o644)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    if not path.exists():  # replayed and deleted by another process between open and lock
        os.close(fd)
        return None
    return fd


def claim_orphans(folder: Path) -> Iterator[SpoolFile]:
    """Spool files no live process holds, oldest first, each locked for the caller."""
    if not folder.exists():
        return
    _remove_abandoned_creations(folder)
    for path in sorted(folder.glob(f"*{SUFFIX}")):
        fd = _open_locked(path, os.O_RDONLY)
        if fd is not None:
            yield SpoolFile(path, fd, bytes=path.stat().st_size)


def _remove_abandoned_creations(folder: Path) -> None:
    """Remove files a process was killed while creating (empty: nothing was written to them).

    Such a file is only ever abandoned between its creation and its rename, a few microseconds;
    one whose creator is still alive is left alone.
    """
    for path in folder.glob(f"*{CREATING}"):
        pid = path.stem.rpartition("-")[2]
        if pid.isdigit() and not pid_alive(int(pid)):
            path.unlink(missing_ok=True)


class Spool:
    """This process's current spool file, rotated on demand; `clock` (seconds, monotonic)
    dates each file's opening."""

    def __init__(self, folder: Path, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.folder = folder
        self._clock = clock
        self._lock = threading.Lock()
        self._current: SpoolFile | None = None
        self._dirty = False

    def _new_file(self) -> SpoolFile:
        self.folder.mkdir(parents=True, exist_ok=True)
        stem = f"{new_id()}-{os.getpid()}"
        hidden, path = self.folder / f"{stem}{CREATING}", self.folder / f"{stem}{SUFFIX}"
        fd = os.open(hidden, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        try:
            # nobody else knows this name yet, so the lock cannot be taken by anyone else; the
            # lock belongs to the open file, so it holds across the rename
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(hidden, path)
        except BaseException:
            os.close(fd)
            hidden.unlink(missing_ok=True)
            raise
        return SpoolFile(path, fd, opened_at=self._clock())

    def append(
        self, data: bytes, rows: int, ids: Sequence[str], version: tuple[str, int] | None = None
    ) -> None:
        """Append whole lines; returns once the kernel has them.

        Raises `OSError` (a full disk, say) with the file as it was before: a partly written
        entry is cut off again, so the next entry never follows a torn line.
        """
        with self._lock:
            current = self._current
            if current is None:
                current = self._current = self._new_file()
            view = memoryview(data)
            try:
                while view:  # a regular file takes it all at once; the loop is for the rule book
                    written = os.write(current.fd, view)
                    view = view[written:]
            except OSError:
                if len(view) < len(data):
                    os.ftruncate(current.fd, current.bytes)
                raise
            current.rows += rows
            current.bytes += len(data)
            if version is not None:
                current.batches.append((ids, version))
                current.versions.add(version)
            self._dirty = True

    def rotate(self) -> SpoolFile | None:
        """Close the current file for flushing (None if nothing was written to it)."""
        with self._lock:
            current, self._current = self._current, None
            self._dirty = False
        return current

    def fsync(self) -> None:
        with self._lock:
            if self._current is not None and self._dirty:
                os.fsync(self._current.fd)
                self._dirty = False

    @property
    def current(self) -> SpoolFile | None:
        return self._current

    def pending_ids(self) -> dict[str, tuple[str, int]]:
        """Prediction ids in the current file, with their model and version."""
        current = self._current
        return current.ids if current is not None else {}

    def writable(self) -> bool:
        """Whether the spool's disk takes writes again (after a full disk, say): a probe file
        of 64 KB is written, synced and removed."""
        probe = self.folder / f".probe-{os.getpid()}"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, b"\0" * 65536)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            return False
        finally:
            probe.unlink(missing_ok=True)
        return True

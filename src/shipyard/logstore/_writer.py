"""The buffered log writer: append to the spool on the request path, turn it into Parquet in
the background.

    request path:  log_predictions(...) -> one os.write to this process's spool file
    flusher:       every `flush_seconds` (or `segment_rows`), rotate the spool file, write its
                   Parquet segments to the artifact store, then delete it
    at start:      replay spool files no live process holds (left by a crash or `kill -9`)

Nothing on the request path waits for Parquet, the artifact store or the network. If the
store is down, spool files wait and are retried; the lag shows how far behind the logs are.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson

from shipyard.core.errors import LogUnavailable
from shipyard.core.lifetime import exit_with_parent
from shipyard.logstore._segments import TypesOf, routing_key_hash, write_segments
from shipyard.logstore._spool import Spool, SpoolFile, claim_orphans
from shipyard.store import ArtifactStore

__all__ = ["LogWriter"]

log = logging.getLogger("shipyard.logstore")

_DUMPS = orjson.OPT_SERIALIZE_NUMPY
# from this many rows a numeric column is spooled as its raw bytes after the entry's JSON line
# (`{"raw": [dtype, nbytes]}` in its place): the flusher takes it with np.frombuffer instead of
# parsing a JSON number per value, which made 100-record requests cost more to turn into
# Parquet than to answer
_RAW_ROWS = 16


class _Columns:
    """An entry's columns as the spool line carries them, and the raw bytes that follow it."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.blobs: list[bytes] = []

    def encode(self, columns: Mapping[str, Any]) -> dict[str, Any]:
        return {name: self.column(values) for name, values in columns.items()}

    def column(self, values: Any) -> Any:
        if isinstance(values, np.ndarray) and values.dtype != object:
            if self.rows >= _RAW_ROWS and values.ndim == 1 and values.dtype.kind in "biuf":
                blob = np.ascontiguousarray(values).tobytes()
                self.blobs.append(blob)
                return {"raw": [values.dtype.str, len(blob)]}
            return values  # orjson writes numeric arrays itself, fast
        return values.tolist() if isinstance(values, np.ndarray) else list(values)


def _write_file(root: str, path: str, types: dict[str, dict[str, str] | None]) -> int:
    """In the flush process: one spool file's Parquet segments, typed by `types` ("model:v")."""
    data = Path(path).read_bytes()
    return write_segments(
        ArtifactStore(root), Path(path).stem, data, lambda m, v: types.get(f"{m}:{v}")
    )


class LogWriter:
    """Appends prediction and label logs for one process; see the module docstring.

    Args:
        spool_dir: local folder for the write-ahead spool (shared by the processes of a host).
        store: where Parquet segments go.
        types_of: signature column types per model version, to type the `features` struct.
        flush_seconds: how often the spool becomes Parquet.
        segment_rows: rows after which the spool is cut early.
        fsync_seconds: how often the spool is fsynced (0: never).
        flush_in: "thread" (this process) or "process": a helper process turns the spool into
            Parquet while this process keeps the files' locks and waits without the GIL, so
            the conversion never competes with the request path (files from a crash, and
            anything the helper cannot take, are still written here).
        clock: seconds, monotonic: the lag and the flusher's timing (tests move their own).
    """

    def __init__(
        self,
        spool_dir: Path,
        store: ArtifactStore,
        *,
        types_of: TypesOf | None = None,
        flush_seconds: float = 5.0,
        segment_rows: int = 100_000,
        fsync_seconds: float = 1.0,
        flush_in: Literal["thread", "process"] = "thread",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spool_dir = spool_dir
        self.store = store
        self.types_of = types_of
        self.flush_seconds = flush_seconds
        self.segment_rows = segment_rows
        self.fsync_seconds = fsync_seconds
        self.flush_in = flush_in
        self._pool: ProcessPoolExecutor | None = None
        self._clock = clock
        self._spool = Spool(spool_dir, clock=clock)
        self._waiting: list[SpoolFile] = []  # rotated, not yet written as Parquet
        self._waiting_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.rows_written = 0
        self.failures = 0  # log writes that failed: spool appends refused, segments not written
        self.unwritable: str | None = None  # why the spool cannot be written, while it cannot
        self._failed_flushes = 0  # in a row

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> LogWriter:
        """Replay orphaned spool files, then flush in a background thread."""
        self.recover()
        self._thread = threading.Thread(target=self._run, name="shipyard-log-flusher", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Flush everything and stop; what cannot be written stays in the spool for next time."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None
        self.flush()
        with self._waiting_lock:
            left, self._waiting = self._waiting, []
        for spool_file in left:  # the store refused them: keep the files for the next start
            spool_file.release(delete=False)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> LogWriter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the request path ---------------------------------------------------------------------

    def log_predictions(
        self,
        *,
        model: str,
        version: int,
        variant: str,
        ids: Sequence[str],
        inputs: Mapping[str, Any],
        outputs: Mapping[str, Any],
        latency_ms: float,
        key_id: str | None = None,
        request_id: str | None = None,
        routing_key: str | None = None,
        at: float | None = None,
    ) -> None:
        """Log answered predictions (columnar `inputs` and `outputs`, one value per id).
        `routing_key`, the request's sticky-routing key, is logged as `routing_key_hash` of it:
        the key itself (often a customer id) never reaches the spool."""
        columns = _Columns(len(ids))
        entry = {
            "k": "p",
            "t": time.time() if at is None else at,
            "m": model,
            "v": version,
            "r": variant,
            "key": key_id,
            "rid": request_id,
            "rk": routing_key_hash(routing_key) if routing_key is not None else None,
            "lat": latency_ms,
            "ids": ids,
            "in": columns.encode(inputs),
            "out": columns.encode(outputs),
        }
        if columns.blobs:
            entry["raw"] = True  # the reader looks for raw bytes only after such lines
        line = orjson.dumps(entry, option=_DUMPS) + b"\n"
        data = b"".join([line, *columns.blobs]) if columns.blobs else line
        self._append(data, len(ids), ids, (model, version))

    def log_error(
        self,
        *,
        model: str,
        version: int | None,
        variant: str | None,
        status: int,
        error: str,
        fields: Sequence[str] = (),
        key_id: str | None = None,
        request_id: str | None = None,
        at: float | None = None,
    ) -> None:
        """Log a prediction request that was refused or failed (for error rates and data quality)."""
        entry = {
            "k": "e",
            "t": time.time() if at is None else at,
            "m": model,
            "v": version,
            "r": variant,
            "s": status,
            "err": error,
            "f": list(fields),
            "key": key_id,
            "rid": request_id,
        }
        self._append(orjson.dumps(entry) + b"\n", 1, [])

    def log_labels(
        self,
        ids: Sequence[str],
        labels: Sequence[Any],
        *,
        key_id: str | None = None,
        at: float | None = None,
    ) -> None:
        """Log ground truth for earlier predictions."""
        entry = {
            "k": "l",
            "t": time.time() if at is None else at,
            "key": key_id,
            "ids": ids,
            "labels": labels,
        }
        self._append(orjson.dumps(entry, option=_DUMPS) + b"\n", len(ids), [])

    def _append(
        self, line: bytes, rows: int, ids: Sequence[str], version: tuple[str, int] | None = None
    ) -> None:
        try:
            self._spool.append(line, rows, list(ids), version)
        except OSError as error:
            self.failures += 1
            if self.unwritable is None:  # one log line per episode, not one per request
                log.error(
                    "cannot write the log spool in %s (%s); predictions are refused (503) until "
                    "it can be written again",
                    self.spool_dir, error.strerror or error,
                )  # fmt: skip
            self.unwritable = f"{error.strerror or error} ({self.spool_dir})"
            raise LogUnavailable(
                "the prediction log cannot be written on this server "
                f"({error.strerror or type(error).__name__}), so the prediction is not answered "
                "(nothing unlogged is ever answered); retry shortly or on another replica",
                retry_after=5.0,
            ) from None
        if self.unwritable is not None and self._thread is None:
            # with a flusher, its probe decides: a small entry may fit where a real one will not
            self._writable_again()
        current = self._spool.current
        if current is not None and current.rows >= self.segment_rows:
            self._wake.set()

    def _writable_again(self) -> None:
        if self.unwritable is not None:
            log.warning("the log spool in %s can be written again", self.spool_dir)
            self.unwritable = None

    # -- state ----------------------------------------------------------------------------------

    def pending_ids(self) -> set[str]:
        """Prediction ids this process logged that are not in Parquet yet."""
        return set(self.pending_predictions())

    def pending_predictions(self) -> dict[str, tuple[str, int]]:
        """Prediction ids this process logged that are not in Parquet yet, with their model
        and version."""
        ids = self._spool.pending_ids()
        with self._waiting_lock:
            for spool_file in self._waiting:
                ids.update(spool_file.ids)
        return ids

    @property
    def lag_seconds(self) -> float:
        """Age of the oldest logged row not yet in Parquet (0 when all is written)."""
        oldest = [f.opened_at for f in self._pending_files() if f.rows or f.bytes]
        return max(0.0, self._clock() - min(oldest)) if oldest else 0.0

    def _pending_files(self) -> list[SpoolFile]:
        with self._waiting_lock:
            files = list(self._waiting)
        current = self._spool.current
        return [*files, current] if current is not None else files

    # -- flushing -------------------------------------------------------------------------------

    def recover(self) -> int:
        """Write the Parquet of spool files left by dead processes; returns the rows replayed."""
        rows = 0
        for orphan in claim_orphans(self.spool_dir):
            orphan.opened_at = self._clock()
            try:
                rows += self._write(orphan)
            except Exception:
                log.exception(
                    "cannot replay spool file %s; it is kept for the next try", orphan.path.name
                )
                orphan.release(delete=False)
            else:
                log.info("replayed %s spool rows from %s", rows, orphan.path.name)
                orphan.release(delete=True)
        return rows

    def flush(self) -> int:
        """Rotate the spool and write everything waiting; returns the rows written."""
        with self._flush_lock:
            rotated = self._spool.rotate()
            with self._waiting_lock:
                if rotated is not None:
                    self._waiting.append(rotated)
                batch = list(self._waiting)
            rows = 0
            for spool_file in batch:
                try:
                    rows += self._write(spool_file)
                except Exception as error:
                    self.failures += 1
                    self._failed_flushes += 1
                    # one line per episode: the store (or what types the logs) may be away a while
                    level = logging.ERROR if self._failed_flushes == 1 else logging.DEBUG
                    log.log(
                        level,
                        "cannot write log segment %s (%s: %s); it stays in the spool and is retried",
                        spool_file.path.name, type(error).__name__, error,
                    )  # fmt: skip
                    break  # keep order: later files wait for this one
                if self._failed_flushes:
                    log.warning(
                        "log segments are written again after %d failed attempts",
                        self._failed_flushes,
                    )
                    self._failed_flushes = 0
                with self._waiting_lock:
                    self._waiting.remove(spool_file)
                spool_file.release(delete=True)
            self.rows_written += rows
            return rows

    def _write(self, spool_file: SpoolFile) -> int:
        # a memory:// store lives in this process only: the helper could not write into it
        if self.flush_in == "process" and spool_file.versions and not self._store_is_local_memory:
            written = self._write_in_process(spool_file)
            if written is not None:
                return written
        data = spool_file.path.read_bytes()
        return write_segments(self.store, spool_file.path.stem, data, self.types_of)

    @property
    def _store_is_local_memory(self) -> bool:
        return self.store.root.startswith("memory:")

    def _write_in_process(self, spool_file: SpoolFile) -> int | None:
        """Write through the helper process; None if it cannot (then the caller writes here).

        The signature types are looked up here (the helper has no registry) for the model
        versions this process logged into the file; errors from the store come back as they
        are, so a failed write stays in the spool exactly as it does in a thread.
        """
        types = {
            f"{model}:{version}": self.types_of(model, version) if self.types_of else None
            for model, version in spool_file.versions
        }
        if self._pool is None:
            # spawn: a fork of a process with running threads (the server's) is not safe; the
            # helper leaves when this process dies, even by kill -9 (and with it, the last
            # holder of multiprocessing's resource tracker pipe, so the tracker leaves too)
            self._pool = ProcessPoolExecutor(
                1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=exit_with_parent,
                initargs=(os.getpid(),),
            )
        try:
            future = self._pool.submit(_write_file, self.store.root, str(spool_file.path), types)
            return int(future.result())
        except BrokenProcessPool:
            log.warning("the log flush process died; writing %s here", spool_file.path.name)
            self._pool = None  # a new one next time
            return None

    def _run(self) -> None:
        last_fsync = last_flush = self._clock()
        tick = min(self.flush_seconds, self.fsync_seconds or self.flush_seconds, 0.5)
        while not self._stop.is_set():
            self._wake.wait(tick)
            self._wake.clear()
            if self.unwritable is not None and self._spool.writable():
                self._writable_again()  # readiness comes back without waiting for a request
            now = self._clock()
            if self.fsync_seconds and now - last_fsync >= self.fsync_seconds:
                try:
                    self._spool.fsync()
                except OSError as error:
                    log.error("cannot fsync the log spool: %s", error)
                last_fsync = now
            current = self._spool.current
            due = now - last_flush >= self.flush_seconds
            full = current is not None and current.rows >= self.segment_rows
            if due or full:
                self.flush()
                self.recover()  # a sibling process may have died since
                last_flush = now

"""Adaptive micro-batching: requests that wait together are scored in one model call.

Requests for a model go into one queue. When the model is idle, whatever is queued is taken
at once (up to `max_rows`) and scored in a single call on the model's own thread; while that
call runs, new requests queue up and form the next batch. A model whose calls take well under
a millisecond (most ONNX fast paths) is called on the event loop itself, where the thread hop
would cost more than the call. Under light load a request is
scored alone, at once; under heavy load batches grow by themselves. `max_wait` can hold a
batch open a little longer to fill it.

The queue is bounded: past `max_queue_rows` waiting rows a request is refused at once
(`Overloaded`, 503) rather than queued without limit. A request whose deadline passes while
it waits is dropped from its batch (`DeadlineExceeded`, 504).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from shipyard.core import Columns
from shipyard.core.errors import DeadlineExceeded, ModelUnavailable, Overloaded
from shipyard.runtime import Predictor

__all__ = ["BatchStats", "Batcher"]


log = logging.getLogger("shipyard.serving")


@dataclass
class _Job:
    columns: Columns
    rows: int
    deadline: float
    future: asyncio.Future[np.ndarray]


@dataclass
class BatchStats:
    """Counters a metrics exporter reads."""

    calls: int = 0
    rows: int = 0
    expired: int = 0
    refused: int = 0
    sizes: list[int] = field(default_factory=list)


class Batcher:
    """Batches calls to one predictor. Create and use it inside one event loop."""

    def __init__(
        self,
        predictor: Predictor,
        *,
        max_rows: int = 256,
        max_wait: float = 0.0,
        max_queue_rows: int = 4096,
        name: str = "",
        inline_below: float = 0.0005,
    ) -> None:
        self.predictor = predictor
        self.max_rows = max_rows
        self.max_wait = max_wait
        self.max_queue_rows = max_queue_rows
        self.name = name
        self.inline_below = inline_below
        # moving average of a model call; until one is measured, calls go to the model's thread
        self._call_seconds = float("inf")
        self.stats = BatchStats()
        self._queue: deque[_Job] = deque()
        self._queued_rows = 0
        self._running = False
        self._drainer: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"shipyard-model-{name}"
        )
        self._closed = False

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    async def predict(self, columns: Columns, rows: int, deadline: float) -> np.ndarray:
        """The model's raw output for `rows` rows, computed in some batch before `deadline`."""
        if self._queued_rows + rows > self.max_queue_rows and self._queued_rows:
            self.stats.refused += 1
            raise Overloaded(
                f"model {self.name} has {self._queued_rows} rows waiting (limit "
                f"{self.max_queue_rows}); retry shortly or add replicas",
                retry_after=1.0,
            )
        loop = asyncio.get_running_loop()
        job = _Job(columns, rows, deadline, loop.create_future())
        self._queue.append(job)
        self._queued_rows += rows
        if not self._running:
            self._running = True
            self._drainer = loop.create_task(self._drain())
        remaining = deadline - time.monotonic()
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), timeout=max(remaining, 0.0))
        except TimeoutError:
            job.future.cancel()  # still queued or running: its result is dropped
            self.stats.expired += 1
            raise DeadlineExceeded(_late(self.name, deadline)) from None

    async def _drain(self) -> None:
        try:
            while self._queue:
                if self.max_wait and self._queued_rows < self.max_rows:
                    await asyncio.sleep(self.max_wait)
                jobs = self._take()
                if jobs:
                    await self._run(jobs)
        finally:
            self._running = False
            if self._closed:
                self._executor.shutdown(wait=False)

    async def _run(self, jobs: list[_Job]) -> None:
        columns = _concat([j.columns for j in jobs])
        try:
            if self._call_seconds < self.inline_below:
                # a fast model: a thread hop would cost more than the call blocks the loop
                output, elapsed = self._timed(columns)
            elif self._closed:  # evicted while requests were still queued: finish them anyway
                output, elapsed = await asyncio.to_thread(self._timed, columns)
            else:
                loop = asyncio.get_running_loop()
                output, elapsed = await loop.run_in_executor(self._executor, self._timed, columns)
        except Exception as error:  # the model failed: every job of the batch hears it
            log.exception("model %s failed on a batch of %d rows", self.name, len(jobs))
            failure = ModelUnavailable(
                f"model {self.name} failed on this request ({type(error).__name__}: {error}); "
                "the server log has the details"
            )
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(failure)
            return
        measured = self.stats.calls > 0
        self._call_seconds = 0.8 * self._call_seconds + 0.2 * elapsed if measured else elapsed
        self.stats.calls += 1
        start = 0
        for job in jobs:
            if not job.future.done():
                job.future.set_result(output[start : start + job.rows])
            start += job.rows

    def _timed(self, columns: Columns) -> tuple[np.ndarray, float]:
        started = time.perf_counter()
        # extreme inputs overflow to infinity or NaN inside the model: that is an answer to
        # check (`shape` refuses non-finite rows), not a warning per request in the log
        with np.errstate(all="ignore"):
            output = self.predictor.predict(columns)
        return output, time.perf_counter() - started

    def _take(self) -> list[_Job]:
        now = time.monotonic()
        jobs: list[_Job] = []
        rows = 0
        while self._queue:
            job = self._queue[0]
            if jobs and rows + job.rows > self.max_rows:
                break
            self._queue.popleft()
            self._queued_rows -= job.rows
            if job.future.done():  # its caller gave up waiting
                continue
            if job.deadline <= now:
                self.stats.expired += 1
                job.future.set_exception(DeadlineExceeded(_late(self.name, job.deadline)))
                continue
            jobs.append(job)
            rows += job.rows
        if jobs:
            self.stats.rows += rows
            self.stats.sizes.append(rows)
            if len(self.stats.sizes) > 4096:
                del self.stats.sizes[:2048]
        return jobs

    def close(self) -> None:
        """Stop once the requests queued now are answered (at once if none are)."""
        self._closed = True
        if not self._running:
            self._executor.shutdown(wait=False)


def _late(name: str, deadline: float) -> str:
    return (
        f"the prediction of {name} could not be ready within the request's deadline; the server "
        "is busy: retry, or raise the deadline (X-Deadline-Ms header or SHIPYARD_DEADLINE_MS)"
    )


def _concat(parts: list[Columns]) -> Columns:
    if len(parts) == 1:
        return parts[0]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

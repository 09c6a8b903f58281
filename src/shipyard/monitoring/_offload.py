"""Monitoring reports computed by a server, off its prediction path.

A report is seconds of DuckDB, pandas and river work. Computed in a thread of a serving
process it holds the GIL the event loop needs: ten readers asking for reports cut prediction
throughput by three quarters, with deadline misses (measured, `bench/serving/
monitoring_contention.py`). So a server computes reports in a helper process of its own, at
the lowest CPU priority (nice 19), one at a time: the operating system gives the serving
workers the cores first, and a second report asked for while one is being computed is
refused at once (503, Retry-After) instead of queueing. The helper leaves with its parent.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any, NamedTuple

from shipyard.core import Settings, errors
from shipyard.core.errors import Overloaded, ShipyardError
from shipyard.core.lifetime import exit_with_parent

if TYPE_CHECKING:
    from shipyard.monitoring._report import ReportRecord

__all__ = ["ReportProcess"]

log = logging.getLogger("shipyard.monitoring")

_HELPER: dict[str, Any] = {}  # in the helper process: its Monitor, opened once


class _Failed(NamedTuple):
    error: str
    message: str

    def raised(self) -> ShipyardError:
        cls = getattr(errors, self.error, None)
        if isinstance(cls, type) and issubclass(cls, ShipyardError):
            try:
                return cls(self.message)
            except TypeError:  # a class whose constructor wants more than a message
                pass
        return errors.InvalidInput(self.message)


def _start_helper(parent: int) -> None:
    os.nice(19)  # the serving workers come first, always
    exit_with_parent(parent)


def _compute(
    settings: dict[str, Any], name: str, window: str, periods: int, record: bool, actor: str
) -> Any:
    """In the helper: a report as a JSON-ready dict, or the error it raised (to raise there)."""
    from shipyard.monitoring._monitor import Monitor
    from shipyard.registry import Registry

    monitor = _HELPER.get("monitor")
    if monitor is None:
        config = Settings(**settings)
        monitor = _HELPER["monitor"] = Monitor.from_settings(
            config, Registry.from_settings(config), concurrency=1
        )
        _HELPER["alerts"] = monitor.alert_manager
    if _HELPER["alerts"] is not None:  # alerts opened or resolved by this run: who asked for it
        monitor.alert_manager = _HELPER["alerts"].acting_as(actor)
    try:
        return monitor.run(name, window=window, periods=periods, record=record).to_dict()
    except ShipyardError as error:  # raised again in the server, as the same class
        return _Failed(type(error).__name__, error.message)


class ReportProcess:
    """Computes monitoring reports in a low-priority helper process, one at a time.

    Args:
        settings: where the helper finds the metadata database and the logs.
        wait_seconds: how long a caller waits for a report before it is told to come back
            (the report goes on and is dropped).
    """

    def __init__(self, settings: Settings, *, wait_seconds: float = 120.0) -> None:
        self.settings = settings
        self.wait_seconds = wait_seconds
        self._pool: ProcessPoolExecutor | None = None
        self._busy = threading.BoundedSemaphore(1)
        self._guard = threading.Lock()

    def report(
        self, name: str, window: str, periods: int, *, record: bool = False, actor: str = ""
    ) -> ReportRecord:
        """The report of `name` (blocking): stored and alerted on with `record`, as `actor`.

        Raises `Overloaded` when a report is being computed already, or took longer than
        `wait_seconds`.
        """
        if not self._busy.acquire(blocking=False):
            raise Overloaded(
                "a monitoring report is being computed on this server already; retry shortly "
                "(GET answers the latest stored snapshot when there is a recent one)",
                retry_after=5.0,
            )
        try:
            future = self._submit(name, window, periods, record, actor or self.settings.actor)
        except BaseException:
            self._busy.release()
            raise
        future.add_done_callback(lambda _: self._busy.release())
        try:
            result = future.result(timeout=self.wait_seconds)
        except FutureTimeout:
            raise Overloaded(
                f"the report of {name} takes longer than {self.wait_seconds:.0f} s on this busy "
                "server; retry later",
                retry_after=30.0,
            ) from None
        except BrokenProcessPool:
            with self._guard:
                self._pool = None
            raise Overloaded(
                "the monitoring helper process stopped; retry (a new one starts)", retry_after=1.0
            ) from None
        if isinstance(result, _Failed):
            raise result.raised()
        report: ReportRecord = result
        return report

    def _submit(self, name: str, window: str, periods: int, record: bool, actor: str) -> Any:
        with self._guard:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    1,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_start_helper,
                    initargs=(os.getpid(),),
                )
            pool = self._pool
        return pool.submit(
            _compute, self.settings.model_dump(mode="json"), name, window, periods, record, actor
        )

    def close(self) -> None:
        with self._guard:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

"""The versions a server keeps loaded, and their micro-batchers.

Versions the serving plan names are kept as long as the plan names them. Any other version
(a pinned request, a V2 `ready` check, a version that left the plan) is kept in a bounded
least-recently-used set: at most `max_cold` of them and `max_cold_bytes` of bundle bytes.
Evicting one forgets it and closes its batcher once the requests already queued on it are
answered; a request that still holds the evicted model is scored without a batcher. A version
that fails to load (a corrupted bundle, a missing version) is refused for a few seconds
without being read again, so callers cannot make the server re-read a broken bundle per request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from shipyard.core.errors import BackendUnavailable, ShipyardError
from shipyard.registry import ServedModel
from shipyard.serving._batcher import Batcher

__all__ = ["ModelCache"]

log = logging.getLogger("shipyard.serving")

Key = tuple[str, int]
FAILED_LOAD_SECONDS = 5.0  # how long a version that failed to load is refused without a retry
MAX_FAILED = 1024


class ModelCache:
    """Loaded versions by `(name, version)`.

    Args:
        load: how a version is loaded (blocking: reads and verifies its bundle).
        make_batcher: a batcher for a loaded version.
        max_cold: versions outside the plan kept loaded.
        max_cold_bytes: bundle bytes of versions outside the plan kept loaded.
    """

    def __init__(
        self,
        load: Callable[[str, int], ServedModel],
        make_batcher: Callable[[ServedModel], Batcher],
        *,
        max_cold: int = 4,
        max_cold_bytes: int = 1 << 30,
    ) -> None:
        self._load = load
        self._make_batcher = make_batcher
        self.max_cold = max_cold
        self.max_cold_bytes = max_cold_bytes
        self._models: dict[Key, ServedModel] = {}
        self._batchers: dict[Key, Batcher] = {}
        self._hot: frozenset[Key] = frozenset()
        self._cold: OrderedDict[Key, int] = OrderedDict()  # key -> bundle bytes, oldest first
        self._locks: dict[Key, threading.Lock] = {}
        self._failed: OrderedDict[Key, tuple[float, ShipyardError]] = OrderedDict()
        self._guard = threading.Lock()

    def get(self, name: str, version: int) -> ServedModel | None:
        """The loaded version, marked as just used; None when it is not loaded."""
        key = (name, version)
        served = self._models.get(key)
        if served is not None and key in self._cold:
            with self._guard:
                if key in self._cold:
                    self._cold.move_to_end(key)
        return served

    def load(self, name: str, version: int) -> ServedModel:
        """The loaded version, loading (and verifying) its bundle the first time. Blocking."""
        key = (name, version)
        served = self.get(name, version)
        if served is not None:
            return served
        failed = self._failed.get(key)
        if failed is not None and failed[0] > time.monotonic():
            raise failed[1]  # a version that just failed to load is not read again at once
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        try:
            with lock:
                served = self._models.get(key)
                if served is None:
                    started = time.perf_counter()
                    try:
                        served = self._load(name, version)
                    except BackendUnavailable:
                        raise  # the database or the store is away: worth trying again soon
                    except ShipyardError as error:
                        self._remember_failure(key, error)
                        raise
                    with self._guard:
                        self._models[key] = served
                        if key not in self._hot:
                            self._cold[key] = max(0, served.record.size_bytes)
                    log.info(
                        "loaded %s:%s on %s in %.0f ms",
                        name, version, served.predictor.runtime,
                        (time.perf_counter() - started) * 1e3,
                    )  # fmt: skip
        finally:
            # a lock only lives while its version loads: asking for versions that do not exist
            # (any number up to 2^31) must not leave one behind each
            with self._guard:
                if self._locks.get(key) is lock:
                    del self._locks[key]
        self._evict()
        return served

    def _remember_failure(self, key: Key, error: ShipyardError) -> None:
        log.warning("cannot load %s:%s: %s", key[0], key[1], error.message)
        with self._guard:
            self._failed[key] = (time.monotonic() + FAILED_LOAD_SECONDS, error)
            self._failed.move_to_end(key)
            while len(self._failed) > MAX_FAILED:
                self._failed.popitem(last=False)

    def keep(self, hot: set[Key]) -> None:
        """The versions the plan names now: kept for good; the others become evictable."""
        with self._guard:
            self._hot = frozenset(hot)
            for key in hot:
                self._cold.pop(key, None)
            for key, served in self._models.items():
                if key not in hot and key not in self._cold:
                    self._cold[key] = max(0, served.record.size_bytes)
        self._evict()

    def _evict(self) -> None:
        evicted: list[tuple[Key, Batcher | None]] = []
        with self._guard:
            while self._cold and (
                len(self._cold) > self.max_cold or sum(self._cold.values()) > self.max_cold_bytes
            ):
                key, _ = self._cold.popitem(last=False)
                self._models.pop(key, None)
                evicted.append((key, self._batchers.pop(key, None)))
        for (name, version), batcher in evicted:
            if batcher is not None:
                batcher.close()
            log.info("unloaded %s:%s (not in the serving plan, least recently used)", name, version)

    def batcher(self, served: ServedModel) -> Batcher | None:
        """The version's batcher; None once the version was evicted."""
        key = (served.name, served.version)
        batcher = self._batchers.get(key)
        if batcher is None:
            with self._guard:
                if self._models.get(key) is not served:
                    return None
                batcher = self._batchers.get(key)
                if batcher is None:
                    batcher = self._batchers[key] = self._make_batcher(served)
        return batcher

    def batchers(self) -> dict[Key, Batcher]:
        return dict(self._batchers)

    def loaded(self) -> list[ServedModel]:
        return list(self._models.values())

    def __contains__(self, key: object) -> bool:
        return key in self._models

    def close(self) -> None:
        with self._guard:
            batchers, self._batchers = list(self._batchers.values()), {}
        for batcher in batchers:
            batcher.close()

"""What a client does when a call fails: retry (with backoff and jitter) or not, and the
circuit breaker that stops hammering a server that keeps failing."""

from __future__ import annotations

import threading
import time

from shipyard.core.retry import RetryPolicy

__all__ = ["RETRY_STATUSES", "CircuitBreaker", "RetryPolicy"]

RETRY_STATUSES = frozenset({429, 502, 503, 504})
"""Answers worth another try. Any other 4xx means the request itself is wrong."""


class CircuitBreaker:
    """Closed while calls succeed; open (failing fast) for `reset_after` seconds once
    `threshold` calls in a row failed; then half-open: one trial call decides. A trial that
    never reports (cancelled, or only rate-limited) frees its slot after another `reset_after`.

    Thread-safe; one breaker per client (so per server).
    """

    def __init__(self, threshold: int = 5, reset_after: float = 10.0) -> None:
        self.threshold = threshold
        self.reset_after = reset_after
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_at: float | None = None
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        with self._lock:
            return self._state(time.monotonic())

    def _state(self, now: float) -> str:
        if self._opened_at is None:
            return "closed"
        if now - self._opened_at >= self.reset_after:
            return "half-open"
        return "open"

    def allow(self) -> bool:
        """Whether a call may go out now (in half-open, only one trial at a time)."""
        with self._lock:
            now = time.monotonic()
            state = self._state(now)
            if state == "closed":
                return True
            trial_at = self._trial_at
            if state == "half-open" and (trial_at is None or now - trial_at >= self.reset_after):
                self._trial_at = now
                return True
            return False

    def success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._trial_at = None

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._trial_at is not None or self._failures >= self.threshold:
                self._opened_at = time.monotonic()
            self._trial_at = None

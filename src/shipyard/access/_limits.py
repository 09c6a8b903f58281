"""Rate limits per API key: token buckets (a sustained rate plus a burst).

In-process by default, one set of buckets per worker process. With `SHIPYARD_REDIS_URL` the
buckets live in Redis and every replica shares them. When Redis stops answering the server
keeps serving on in-process buckets, logs it, and shows it in `/metrics`; it tries Redis
again a few seconds later.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Protocol

from shipyard.access._keys import ApiKey
from shipyard.core.errors import RateLimited, RedisUnavailable

__all__ = ["MemoryBuckets", "RateLimiter"]

log = logging.getLogger("shipyard.access.limits")

RETRY_REDIS_SECONDS = 5.0


class Buckets(Protocol):
    async def take(
        self, bucket: str, rate: float, burst: int, cost: int = 1
    ) -> tuple[bool, float]: ...

    async def close(self) -> None: ...


class MemoryBuckets:
    """Token buckets in this process."""

    def __init__(self) -> None:
        self._state: dict[str, tuple[float, float]] = {}

    def take_now(self, bucket: str, rate: float, burst: int, cost: int = 1) -> tuple[bool, float]:
        now = time.monotonic()
        tokens, last = self._state.get(bucket, (float(burst), now))
        tokens = min(float(burst), tokens + (now - last) * rate)
        if tokens >= cost:
            self._state[bucket] = (tokens - cost, now)
            return True, 0.0
        self._state[bucket] = (tokens, now)
        return False, (cost - tokens) / rate

    async def take(self, bucket: str, rate: float, burst: int, cost: int = 1) -> tuple[bool, float]:
        return self.take_now(bucket, rate, burst, cost)

    async def close(self) -> None:
        """Nothing to close: the buckets live in this process."""


class RateLimiter:
    """Checks each call of a rate-limited key against its bucket."""

    def __init__(self, shared: Buckets | None = None) -> None:
        self.shared = shared
        self.local = MemoryBuckets()
        self._redis_down_until = 0.0
        self.shared_up = shared is not None

    @property
    def backend(self) -> str:
        return "redis" if self.shared is not None else "memory"

    async def check(self, key: ApiKey) -> None:
        """Take one token from `key`'s bucket; `RateLimited` with a retry time if there is none."""
        rate, burst = key.rate_per_second, key.burst
        if rate is None or burst is None:
            return
        allowed, wait = await self._take(key.id, rate, burst)
        if not allowed:
            retry = max(1, math.ceil(wait))
            raise RateLimited(
                f"API key {key.id} is over its rate limit of {rate:g} requests/s (burst {burst}); "
                f"retry in {retry} s",
                retry_after=retry,
            )

    async def _take(self, bucket: str, rate: float, burst: int) -> tuple[bool, float]:
        if self.shared is not None and time.monotonic() >= self._redis_down_until:
            try:
                result = await self.shared.take(bucket, rate, burst)
            except RedisUnavailable as error:
                self._redis_down_until = time.monotonic() + RETRY_REDIS_SECONDS
                if self.shared_up:
                    log.warning(
                        "Redis is unreachable (%s); rate limits fall back to this process until it "
                        "answers again",
                        error,
                    )
                self.shared_up = False
            else:
                if not self.shared_up:
                    log.warning("Redis answers again; rate limits are shared across replicas")
                self.shared_up = True
                return result
        return self.local.take_now(bucket, rate, burst)

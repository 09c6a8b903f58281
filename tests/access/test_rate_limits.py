"""Token buckets: the same contract in process and in Redis, and a limiter that survives Redis
going away."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from shipyard.access import ApiKey, MemoryBuckets, RateLimiter
from shipyard.core import errors as e
from shipyard.store.redis import RedisBuckets, RedisUnavailable

REDIS_URL = os.environ.get("SHIPYARD_TEST_REDIS_URL")


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def buckets(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "memory":
        yield MemoryBuckets()
        return
    if not REDIS_URL:
        pytest.skip("SHIPYARD_TEST_REDIS_URL is not set; Redis tests need a server")
    yield RedisBuckets(REDIS_URL, prefix=f"shipyard-test:{uuid.uuid4().hex}:")


def _take(
    buckets: Any, bucket: str, rate: float, burst: int, times: int
) -> list[tuple[bool, float]]:
    async def go() -> list[tuple[bool, float]]:
        out = [await buckets.take(bucket, rate, burst) for _ in range(times)]
        if isinstance(buckets, RedisBuckets):
            await buckets.close()
        return out

    result: list[tuple[bool, float]] = run(go())
    return result


def test_a_full_bucket_allows_the_burst_then_refuses_with_the_wait(buckets: Any) -> None:
    results = _take(buckets, "k1", rate=2.0, burst=5, times=7)
    assert [ok for ok, _ in results] == [True] * 5 + [False] * 2
    wait = results[-1][1]
    assert 0.3 < wait <= 0.5  # one token at 2/s is 0.5 s away (minus what refilled meanwhile)


def test_tokens_refill_at_the_rate(buckets: Any) -> None:
    assert all(ok for ok, _ in _take(buckets, "k2", rate=20.0, burst=2, times=2))
    time.sleep(0.12)  # 2.4 tokens at 20/s, capped at the burst of 2
    results = _take(buckets, "k2", rate=20.0, burst=2, times=3)
    assert [ok for ok, _ in results] == [True, True, False]


def test_buckets_are_separate_per_key(buckets: Any) -> None:
    assert [ok for ok, _ in _take(buckets, "a", 1.0, 1, 2)] == [True, False]
    assert [ok for ok, _ in _take(buckets, "b", 1.0, 1, 1)] == [True]


def _key(rate: float | None, burst: int | None) -> ApiKey:
    return ApiKey("k" * 16, "", "predict", None, rate, burst, datetime.now(UTC), "t")


def test_the_limiter_raises_rate_limited_with_a_whole_second_retry() -> None:
    limiter = RateLimiter()

    async def go() -> None:
        for _ in range(3):
            await limiter.check(_key(1.0, 3))
        with pytest.raises(
            e.RateLimited, match=r"over its rate limit of 1 requests/s \(burst 3\)"
        ) as caught:
            await limiter.check(_key(1.0, 3))
        assert caught.value.retry_after == 1

    run(go())


def test_keys_without_a_rate_are_never_limited() -> None:
    limiter = RateLimiter()

    async def go() -> None:
        for _ in range(1000):
            await limiter.check(_key(None, None))

    run(go())


def test_when_redis_is_unreachable_limits_fall_back_to_this_process(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead = RedisBuckets("redis://127.0.0.1:1/0", timeout=0.2)
    limiter = RateLimiter(dead)

    async def go() -> None:
        with pytest.raises(RedisUnavailable):
            await dead.take("x", 1.0, 1)
        for _ in range(2):
            await limiter.check(_key(1.0, 2))
        with pytest.raises(e.RateLimited):
            await limiter.check(_key(1.0, 2))
        await dead.close()

    run(go())
    assert limiter.shared_up is False
    assert "Redis is unreachable" in caplog.text

"""Redis, for state that replicas share: atomic token buckets for rate limits.

Imported only when `SHIPYARD_REDIS_URL` is set; needs `pip install 'shipyard[redis]'`.
"""

from __future__ import annotations

from typing import Any

from shipyard.core.errors import ConfigurationError, RedisUnavailable, missing_extra

__all__ = ["RedisBuckets", "RedisUnavailable"]

# Refill, then take `cost` tokens if there are enough, in one atomic step on the server.
# Redis's own clock (TIME) keeps replicas with skewed clocks fair.
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil then
  tokens = burst
  ts = now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  wait = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, tostring(wait)}
"""


class RedisBuckets:
    """Token buckets in Redis, shared by every process that uses the same URL and prefix.

    Connections open on first use, inside the caller's event loop.
    """

    def __init__(
        self, url: str, *, prefix: str = "shipyard:bucket:", timeout: float = 0.25
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.timeout = timeout
        self._client: Any = None
        self._script: Any = None

    def _connect(self) -> Any:
        try:
            import redis.asyncio as aioredis
        except ImportError:
            raise missing_extra(
                "redis", "redis", "Shared rate limits (SHIPYARD_REDIS_URL)"
            ) from None
        try:
            client = aioredis.Redis.from_url(
                self.url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout
            )
        except ValueError as error:
            raise ConfigurationError(
                f"SHIPYARD_REDIS_URL {self.url!r} is not a Redis URL ({error}); use e.g. "
                "redis://127.0.0.1:6379/0"
            ) from None
        self._script = client.register_script(_TAKE)
        return client

    async def take(self, bucket: str, rate: float, burst: int, cost: int = 1) -> tuple[bool, float]:
        """Take `cost` tokens; returns (allowed, seconds until they would be there)."""
        import redis.exceptions

        if self._client is None:
            self._client = self._connect()
        try:
            allowed, wait = await self._script(
                keys=[self.prefix + bucket], args=[rate, burst, cost]
            )
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as error:
            raise RedisUnavailable(f"Redis does not answer: {error}") from None
        return bool(int(allowed)), float(wait)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

"""Authenticating calls: a presented key becomes an `ApiKey`, checked once per refresh interval.

Verifying a key reads the database; a server keeps each answer (a key, or why a token was
refused) for `ttl` seconds so the hot path touches no database, and a revoked key stops
working within that time on every replica.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from datetime import UTC, datetime

from shipyard.access._keys import ApiKey
from shipyard.access._keystore import KeyStore
from shipyard.core.errors import Unauthenticated

__all__ = ["ANONYMOUS", "Authenticator", "token_from_headers"]

log = logging.getLogger("shipyard.access")

ANONYMOUS = ApiKey(
    id="anonymous",
    name="auth off",
    scope="admin",
    model=None,
    rate_per_second=None,
    burst=None,
    created_at=datetime(2026, 1, 1, tzinfo=UTC),
    created_by="shipyard",
)
MAX_CACHED = 10_000


def token_from_headers(authorization: str | None, api_key: str | None) -> str:
    """The key from `Authorization: Bearer <key>` or `X-API-Key: <key>`."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthenticated(
                "send the API key as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
            )
        return value.strip()
    if api_key:
        return api_key.strip()
    raise Unauthenticated(
        "this call needs an API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>' "
        "(create one with `shipyard keys create --scope predict`)"
    )


class Authenticator:
    """Turns tokens into keys, caching each verdict for `ttl` seconds.

    Args:
        keys: the key store, or None when authentication is off (every caller is admin).
        ttl: seconds a verdict is trusted before the database is asked again.
    """

    def __init__(self, keys: KeyStore | None, *, ttl: float = 2.0) -> None:
        self.keys = keys
        self.ttl = ttl
        self._cache: OrderedDict[str, tuple[float, ApiKey | Unauthenticated]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.keys is not None

    def cached(self, token: str) -> ApiKey | None:
        """The key for `token` if a fresh verdict is cached; raises a cached refusal."""
        entry = self._cache.get(token)
        if entry is None or entry[0] < time.monotonic():
            return None
        verdict = entry[1]
        if isinstance(verdict, Unauthenticated):
            raise verdict
        return verdict

    def verify(self, token: str) -> ApiKey:
        """Check `token` against the database (blocking; call it off the event loop)."""
        assert self.keys is not None
        try:
            verdict: ApiKey | Unauthenticated = self.keys.verify(token)
        except Unauthenticated as error:
            verdict = error
        self._cache[token] = (time.monotonic() + self.ttl, verdict)
        self._cache.move_to_end(token)
        while len(self._cache) > MAX_CACHED:
            self._cache.popitem(last=False)
        if isinstance(verdict, Unauthenticated):
            raise verdict
        return verdict

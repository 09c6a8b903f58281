"""Authenticating calls: a presented key becomes an `ApiKey` without touching the database.

A server holds every key (its id, scope, binding, revocation and the SHA-256 of its secret),
re-read every refresh interval, and checks presented keys against that snapshot. So the
request path never waits on the database, a revoked key stops working within one refresh on
every replica, and predictions keep being served while the database is away: from the last
known keys, for at most `max_stale_seconds`. Revocations made during an outage apply at the
first refresh after it; past the staleness bound every keyed call answers 503 rather than
trusting a list that may be out of date.

A key newer than the snapshot is looked up once (and a miss remembered until the next
refresh). Failed authentications are budgeted per client (`FailureThrottle`): a client that
keeps presenting bad keys gets 429 for them, without a database look-up, while valid keys,
from that client too, pass as before.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime

from shipyard.access._keys import ApiKey, secret_matches, split_token
from shipyard.access._keystore import KeyStore
from shipyard.core.errors import DatabaseUnavailable, RateLimited, Unauthenticated

__all__ = ["ANONYMOUS", "Authenticator", "FailureThrottle", "token_from_headers"]

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
MAX_REMEMBERED = 10_000

_INVALID = "the API key is not valid; check it, or create one with `shipyard keys create`"


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
    """Turns tokens into keys against an in-memory snapshot of every key.

    Args:
        keys: the key store, or None when authentication is off (every caller is admin).
        max_stale_seconds: how long the last snapshot is trusted while the database cannot
            be read; after that, keyed calls answer 503.
        snapshot: trust the snapshot at all; without (a server that never refreshes it,
            `SHIPYARD_REFRESH_SECONDS=0`) every key is looked up in the database.
        clock: seconds, monotonic (tests inject their own).
    """

    def __init__(
        self,
        keys: KeyStore | None,
        *,
        max_stale_seconds: float = 300.0,
        snapshot: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.keys = keys
        self.max_stale_seconds = max_stale_seconds
        self.use_snapshot = snapshot
        self.clock = clock
        self._snapshot: dict[str, tuple[ApiKey, str]] = {}
        self._loaded_at: float | None = None
        self._unknown: OrderedDict[str, None] = OrderedDict()  # ids missing at the last look
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.keys is not None

    # -- the snapshot ---------------------------------------------------------------------------

    def refresh(self) -> None:
        """Re-read every key (blocking). Raises what the database raises; the old snapshot stays."""
        assert self.keys is not None
        snapshot = self.keys.snapshot()
        with self._lock:
            self._snapshot = snapshot
            self._loaded_at = self.clock()
            self._unknown.clear()

    @property
    def age(self) -> float:
        """Seconds since the keys were last read (infinite before the first read)."""
        return math.inf if self._loaded_at is None else self.clock() - self._loaded_at

    @property
    def fresh(self) -> bool:
        """Whether the snapshot may still be trusted."""
        return not self.enabled or not self.use_snapshot or self.age <= self.max_stale_seconds

    def _check_fresh(self) -> None:
        if not self.fresh:
            raise DatabaseUnavailable(
                f"API keys could not be re-read for {self.age:.0f} s, longer than the "
                f"{self.max_stale_seconds:.0f} s they are trusted for "
                "(SHIPYARD_MAX_STALE_SECONDS); the metadata database does not answer",
                retry_after=5.0,
            )

    # -- verifying --------------------------------------------------------------------------------

    def known(self, token: str) -> ApiKey | None:
        """The key for `token` from the snapshot; None when its id is newer than the snapshot
        (then `lookup` asks the database). Raises `Unauthenticated` for a bad or revoked key."""
        key_id, secret = split_token(token)
        if not self.use_snapshot:
            return None
        self._check_fresh()
        entry = self._snapshot.get(key_id)
        if entry is None:
            if key_id in self._unknown:
                raise Unauthenticated(_INVALID)
            return None
        return _verdict(entry, secret)

    def reload(self, key_id: str) -> None:
        """Re-read one key into the snapshot now (blocking): a change this server made itself
        (signing a key out) applies here at once, elsewhere at the next refresh."""
        if self.keys is None or not self.use_snapshot:
            return
        found = self.keys.lookup(key_id)
        with self._lock:
            if found is not None and key_id in self._snapshot:
                self._snapshot = {**self._snapshot, key_id: found}

    def in_snapshot(self, key_id: str) -> bool:
        """Whether `key_id` is known without asking the database."""
        return key_id in self._snapshot

    def entry(self, key_id: str) -> tuple[ApiKey, str] | None:
        """A key and its secret's SHA-256 by id (blocking: a key newer than the snapshot is
        read from the database once, a miss remembered until the next refresh), revoked or
        not; None when no such key exists. What signs and checks browser sessions."""
        if self.keys is None:
            return None
        if self.use_snapshot:
            self._check_fresh()
            found = self._snapshot.get(key_id)
            if found is not None:
                return found
            if key_id in self._unknown:
                return None
        try:
            found = self.keys.lookup(key_id)
        except DatabaseUnavailable:
            return None
        with self._lock:
            if found is None and self.use_snapshot:
                self._unknown[key_id] = None
                while len(self._unknown) > MAX_REMEMBERED:
                    self._unknown.popitem(last=False)
        return found

    def lookup(self, token: str) -> ApiKey:
        """Check a key newer than the snapshot against the database (blocking).

        While the database is down, such a key is refused like an unknown one: the server
        answers from the last keys it knows.
        """
        assert self.keys is not None
        key_id, secret = split_token(token)
        try:
            entry = self.keys.lookup(key_id)
        except DatabaseUnavailable:
            raise Unauthenticated(
                f"{_INVALID} (the metadata database does not answer, so keys created in the "
                f"last {self.age:.0f} s are not known to this server yet)"
            ) from None
        with self._lock:
            if entry is None:
                if self.use_snapshot:
                    self._unknown[key_id] = None
                while len(self._unknown) > MAX_REMEMBERED:
                    self._unknown.popitem(last=False)
                raise Unauthenticated(_INVALID)
            if not self.use_snapshot:
                pass  # the database's answer is the answer
            elif key_id in self._snapshot:  # a refresh since read it (perhaps revoked): it wins
                entry = self._snapshot[key_id]
            else:
                self._snapshot = {**self._snapshot, key_id: entry}
        return _verdict(entry, secret)


def _verdict(entry: tuple[ApiKey, str], secret: str) -> ApiKey:
    key, digest = entry
    if not secret_matches(secret, digest):
        raise Unauthenticated(
            _INVALID
        )  # the same words as for an unknown id: tell a guesser nothing
    if not key.active:
        raise Unauthenticated(
            f"API key {key.id} was revoked; create a new one with `shipyard keys create`"
        )
    return key


class FailureThrottle:
    """A budget of failed authentications per client: `burst` at once, then `per_second`.

    Args:
        per_second: failures a client earns back per second.
        burst: failures allowed in a row before the client is throttled.
        clock: seconds, monotonic.
    """

    def __init__(
        self,
        per_second: float = 1.0,
        burst: int = 20,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_second = per_second
        self.burst = burst
        self.clock = clock
        self._clients: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    def _tokens(self, client: str) -> float:
        tokens, at = self._clients.get(client, (float(self.burst), self.clock()))
        return min(float(self.burst), tokens + (self.clock() - at) * self.per_second)

    def check(self, client: str) -> None:
        """Raise `RateLimited` when `client` has failed too often to be heard now."""
        tokens = self._tokens(client)
        if tokens < 1.0:
            retry = max(1, math.ceil((1.0 - tokens) / self.per_second))
            raise RateLimited(
                f"too many failed authentications from {client}; retry in {retry} s with a "
                "valid API key",
                retry_after=retry,
            )

    def failed(self, client: str) -> None:
        """Count one failed authentication of `client`."""
        # a client that keeps failing while throttled stays throttled, at most `burst` s longer
        tokens = max(-float(self.burst), self._tokens(client) - 1.0)
        self._clients[client] = (tokens, self.clock())
        self._clients.move_to_end(client)
        while len(self._clients) > MAX_REMEMBERED:
            self._clients.popitem(last=False)

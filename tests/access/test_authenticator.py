"""Verifying keys against a snapshot held in memory: no database on the request path, bounded
trust while the database is away, revocations at the next refresh, and a failure budget per
client that slows guessers but never a valid key."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shipyard.access import ApiKey, Authenticator, FailureThrottle, KeyStore
from shipyard.core import Settings
from shipyard.core import errors as e
from shipyard.registry import Registry


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Outage(KeyStore):
    """The real key store, whose database can be made unreachable (a fake backend, not a mock
    of the authenticator under test)."""

    down = False

    def snapshot(self) -> dict[str, tuple[ApiKey, str]]:
        if self.down:
            raise e.DatabaseUnavailable("the metadata database does not answer")
        return super().snapshot()

    def lookup(self, key_id: str) -> tuple[ApiKey, str] | None:
        if self.down:
            raise e.DatabaseUnavailable("the metadata database does not answer")
        return super().lookup(key_id)


@pytest.fixture
def keys(sqlite_settings: Settings) -> Iterator[Outage]:
    with Registry.from_settings(sqlite_settings) as registry:
        yield Outage(registry.database.open(), actor="tester")


def test_keys_are_verified_from_the_snapshot_and_new_ones_looked_up_once(keys: Outage) -> None:
    known, known_token = keys.create("read")
    auth = Authenticator(keys)
    auth.refresh()
    assert auth.known(known_token) == known
    newer, newer_token = keys.create("predict")
    assert auth.known(newer_token) is None  # newer than the snapshot
    assert auth.lookup(newer_token) == newer
    assert auth.known(newer_token) == newer  # remembered
    unknown = f"sy_{'0' * 16}_{'x' * 30}"
    with pytest.raises(e.Unauthenticated, match="not valid"):
        auth.lookup(unknown)
    with pytest.raises(e.Unauthenticated, match="not valid"):
        auth.known(unknown)  # the miss is remembered until the next refresh
    with pytest.raises(e.Unauthenticated, match="not valid"):
        auth.known(known_token[:-3] + "abc")


def test_a_revocation_applies_at_the_next_refresh(keys: Outage) -> None:
    key, token = keys.create("read")
    auth = Authenticator(keys)
    auth.refresh()
    keys.revoke(key.id)
    assert auth.known(token) == key
    auth.refresh()
    with pytest.raises(e.Unauthenticated, match="was revoked"):
        auth.known(token)


def test_while_the_database_is_away_the_last_keys_serve_until_the_staleness_bound(
    keys: Outage,
) -> None:
    key, token = keys.create("predict")
    clock = Clock()
    auth = Authenticator(keys, max_stale_seconds=60, clock=clock)
    auth.refresh()
    keys.down = True
    with pytest.raises(e.DatabaseUnavailable):
        auth.refresh()
    clock.now += 59
    assert auth.known(token) == key
    assert auth.fresh
    with pytest.raises(e.Unauthenticated, match="not known to this server yet"):
        auth.lookup(f"sy_{'1' * 16}_{'y' * 30}")  # a key it never saw: refused, not a 500
    clock.now += 2
    assert not auth.fresh
    with pytest.raises(e.DatabaseUnavailable, match="SHIPYARD_MAX_STALE_SECONDS") as refused:
        auth.known(token)
    assert refused.value.retry_after == 5.0
    keys.down = False
    auth.refresh()
    assert auth.known(token) == key


def test_a_server_that_never_refreshes_asks_the_database_every_time(keys: Outage) -> None:
    key, token = keys.create("read")
    auth = Authenticator(keys, snapshot=False)
    auth.refresh()
    assert auth.known(token) is None
    assert auth.lookup(token) == key
    keys.revoke(key.id)
    with pytest.raises(e.Unauthenticated, match="was revoked"):
        auth.lookup(token)


def test_the_failure_budget_throttles_a_client_and_refills_with_time() -> None:
    clock = Clock()
    throttle = FailureThrottle(per_second=0.5, burst=3, clock=clock)
    for _ in range(2):
        throttle.failed("10.0.0.1")
        throttle.check("10.0.0.1")
    throttle.failed("10.0.0.1")
    with pytest.raises(e.RateLimited, match="too many failed authentications") as limited:
        throttle.check("10.0.0.1")
    assert limited.value.retry_after == 2
    throttle.check("10.0.0.2")  # other clients are not affected
    clock.now += 2.0
    throttle.check("10.0.0.1")
    for _ in range(50):  # hammering while throttled keeps it throttled, but not forever
        throttle.failed("10.0.0.1")
    with pytest.raises(e.RateLimited):
        throttle.check("10.0.0.1")
    clock.now += 3 / 0.5 + 2 / 0.5 + 1
    throttle.check("10.0.0.1")

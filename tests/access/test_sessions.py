"""Dashboard sessions: a signed cookie naming the key that signed in, checked against the
keys the server knows, so forging, stretching or outliving a revoked key gets nothing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shipyard.access import ApiKey, Authenticator, KeyStore, Sessions
from shipyard.core import Settings
from shipyard.core import errors as e
from shipyard.registry import Registry


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def keys(sqlite_settings: Settings) -> Iterator[KeyStore]:
    with Registry.from_settings(sqlite_settings) as registry:
        yield KeyStore(registry.database.open(), actor="tester")


SECRET = "s" * 32


def _signed_in(keys: KeyStore, clock: Clock, secret: str = SECRET) -> tuple[Sessions, str, str]:
    key, token = keys.create("read", name="analyst")
    auth = Authenticator(keys)
    auth.refresh()
    sessions = Sessions(auth, secret, lifetime_seconds=3600, clock=clock)
    return sessions, sessions.sign_in(key, token), token


def test_a_session_cookie_names_its_key_and_holds_no_secret(keys: KeyStore) -> None:
    clock = Clock()
    sessions, cookie, token = _signed_in(keys, clock)
    assert sessions.key_of(cookie).name == "analyst"
    secret = token.rsplit("_", 1)[1]
    assert secret not in cookie
    assert cookie.startswith("v1.")


def test_a_cookie_expires_after_its_lifetime(keys: KeyStore) -> None:
    clock = Clock()
    sessions, cookie, _ = _signed_in(keys, clock)
    clock.now += 3599
    sessions.key_of(cookie)
    clock.now += 2
    with pytest.raises(e.Unauthenticated, match="sign in again"):
        sessions.key_of(cookie)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda c: c[:-1] + ("A" if c[-1] != "A" else "B"),  # the signature
        lambda c: c.replace(c.split(".")[3], str(int(c.split(".")[3]) + 86400)),  # a longer life
        lambda c: "v1.0123456789abcdef." + ".".join(c.split(".")[2:]),  # another key's id
        lambda c: c + "x",
        lambda c: "",
    ],
)
def test_a_changed_cookie_is_refused(keys: KeyStore, tamper: object) -> None:
    clock = Clock()
    sessions, cookie, _ = _signed_in(keys, clock)
    with pytest.raises(e.Unauthenticated):
        sessions.key_of(tamper(cookie))  # type: ignore[operator]


def test_revoking_the_key_ends_its_sessions_at_the_next_refresh(keys: KeyStore) -> None:
    clock = Clock()
    sessions, cookie, _ = _signed_in(keys, clock)
    key = sessions.key_of(cookie)
    keys.revoke(key.id)
    sessions.auth.refresh()
    with pytest.raises(e.Unauthenticated, match="revoked"):
        sessions.key_of(cookie)


def test_the_server_secret_is_needed_to_check_a_cookie_signed_with_it(keys: KeyStore) -> None:
    clock = Clock()
    sessions, cookie, _ = _signed_in(keys, clock, secret="one" * 8)
    other = Sessions(sessions.auth, "two" * 8, lifetime_seconds=3600, clock=clock)
    sessions.key_of(cookie)
    with pytest.raises(e.Unauthenticated):
        other.key_of(cookie)


def test_the_csrf_token_belongs_to_its_session(keys: KeyStore) -> None:
    clock = Clock()
    sessions, cookie, api_key = _signed_in(keys, clock)
    token = sessions.csrf_token(cookie)
    sessions.check_csrf(cookie, token)
    clock.now += 1  # a second sign-in: another cookie, another token
    second = sessions.sign_in(sessions.key_of(cookie), api_key)
    assert second != cookie
    with pytest.raises(e.Forbidden, match="security token"):
        sessions.check_csrf(second, token)
    with pytest.raises(e.Forbidden):
        sessions.check_csrf(cookie, None)
    with pytest.raises(e.Forbidden):
        sessions.check_csrf(cookie, "\u00e9" * 43)  # not ASCII: refused, not a crash


def test_signing_out_ends_every_earlier_session_of_the_key(keys: KeyStore) -> None:
    clock = Clock()
    sessions, cookie, token = _signed_in(keys, clock)
    copied = cookie  # say, taken from the browser before signing out
    key = sessions.key_of(cookie)
    clock.now += 5
    keys.end_sessions(key.id, datetime.fromtimestamp(clock.now, UTC))
    sessions.auth.reload(key.id)
    with pytest.raises(e.Unauthenticated):
        sessions.key_of(copied)
    clock.now += 1
    again = sessions.sign_in(key, token)  # signing in afterwards works
    assert sessions.key_of(again).id == key.id


class Counting(KeyStore):
    """The real key store, counting its look-ups (a fake backend, not a mock)."""

    lookups = 0

    def lookup(self, key_id: str) -> tuple[ApiKey, str] | None:
        self.lookups += 1
        return super().lookup(key_id)


def test_a_cookie_naming_an_unknown_key_asks_the_database_once(
    sqlite_settings: Settings,
) -> None:
    with Registry.from_settings(sqlite_settings) as registry:
        keys = Counting(registry.database.open(), actor="tester")
        auth = Authenticator(keys)
        auth.refresh()
        sessions = Sessions(auth, SECRET)
        forged = "v1.0123456789abcdef.1800000000000.4000000000." + "A" * 43
        for _ in range(5):
            with pytest.raises(e.Unauthenticated):
                sessions.key_of(forged)
        assert keys.lookups == 1


def test_without_a_configured_secret_one_is_kept_in_the_home(
    keys: KeyStore, tmp_path: Path
) -> None:
    auth = Authenticator(keys)
    path = tmp_path / "home" / "session.secret"
    first = Sessions(auth, secret_file=path)
    second = Sessions(auth, secret_file=path)  # another worker of the same server
    assert first.secret == second.secret
    assert len(first.secret) == 64
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(e.ConfigurationError, match="16 characters"):
        Sessions(auth, "short")

"""Dashboard sessions: a signed cookie naming the key that signed in, checked against the
keys the server knows, so forging, stretching or outliving a revoked key gets nothing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shipyard.access import Authenticator, KeyStore, Sessions
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


def _signed_in(keys: KeyStore, clock: Clock, **options: str) -> tuple[Sessions, str, str]:
    key, token = keys.create("read", name="analyst")
    auth = Authenticator(keys)
    auth.refresh()
    sessions = Sessions(auth, lifetime_seconds=3600, clock=clock, **options)
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
        lambda c: c.replace(c.split(".")[2], str(int(c.split(".")[2]) + 86400)),  # a longer life
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


def test_a_server_secret_is_needed_to_check_a_cookie_signed_with_it(keys: KeyStore) -> None:
    clock = Clock()
    sessions, cookie, _ = _signed_in(keys, clock, secret="one")
    other = Sessions(sessions.auth, lifetime_seconds=3600, clock=clock, secret="two")
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

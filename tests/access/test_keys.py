"""API keys: shown once, stored hashed, scoped, bound to a model, revocable."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select

from shipyard.access import SCOPES, KeyStore, grants, parse_rate
from shipyard.core import Settings
from shipyard.core import errors as e
from shipyard.registry import Registry
from shipyard.store import tables


@pytest.fixture
def keys(settings: Settings) -> Iterator[KeyStore]:
    with Registry.from_settings(settings) as registry:
        yield KeyStore(registry.database.open(), actor="tester")


def test_a_new_key_is_shown_once_and_only_its_hash_is_stored(keys: KeyStore) -> None:
    key, token = keys.create("predict", name="checkout")
    assert token.startswith(f"sy_{key.id}_")
    with keys.database.transaction() as conn:
        row = conn.execute(select(tables.api_keys)).one()
    stored = " ".join(str(v) for v in row)
    assert token.split("_", 2)[2] not in stored
    assert len(row.secret_sha256) == 64
    assert keys.verify(token) == key


def test_verify_refuses_wrong_secrets_unknown_ids_and_malformed_tokens(keys: KeyStore) -> None:
    _key, token = keys.create("read")
    wrong = token[:-4] + ("aaaa" if not token.endswith("aaaa") else "bbbb")
    for bad in (wrong, "sy_0123456789abcdef_" + "x" * 43):
        with pytest.raises(e.Unauthenticated, match="not valid"):
            keys.verify(bad)
    with pytest.raises(e.Unauthenticated, match="not a shipyard key"):
        keys.verify("hunter2")


def test_revoked_keys_stop_working_and_stay_listed_with_all(keys: KeyStore) -> None:
    key, token = keys.create("admin")
    other, _ = keys.create("predict")
    revoked = keys.revoke(key.id)
    assert revoked.revoked_at is not None
    with pytest.raises(e.Unauthenticated, match="was revoked"):
        keys.verify(token)
    assert [k.id for k in keys.list_keys()] == [other.id]
    assert {k.id for k in keys.list_keys(include_revoked=True)} == {key.id, other.id}
    with pytest.raises(e.NotFound, match="shipyard keys list"):
        keys.revoke("0000000000000000")


def test_key_changes_are_in_the_audit_trail(settings: Settings, keys: KeyStore) -> None:
    key, _ = keys.create("predict", model="fraud-detector", rate_per_second=10)
    keys.revoke(key.id)
    with Registry.from_settings(settings) as registry:
        events = [ev for ev in registry.history() if ev.action.startswith("key.")]
    assert [(ev.action, ev.details["key"], ev.model_name) for ev in events] == [
        ("key.revoked", key.id, "fraud-detector"),
        ("key.created", key.id, "fraud-detector"),
    ]


@pytest.mark.parametrize(
    ("scope", "allowed"),
    [
        ("predict", {"predict"}),
        ("read", {"read"}),
        ("write", {"read", "write"}),
        ("admin", {"predict", "read", "write", "admin"}),
    ],
)
def test_scopes_grant_what_they_say(scope: str, allowed: set[str]) -> None:
    assert grants(scope) == allowed
    assert set(SCOPES) == {"predict", "read", "write", "admin"}


def test_check_names_the_scope_needed_and_the_model_binding(keys: KeyStore) -> None:
    key, _ = keys.create("predict", model="fraud-detector")
    key.check(frozenset({"predict"}), "fraud-detector")
    with pytest.raises(e.Forbidden, match="has scope 'predict'; this call needs admin"):
        key.check(frozenset({"admin"}))
    with pytest.raises(e.Forbidden, match="bound to model 'fraud-detector'"):
        key.check(frozenset({"predict"}), "churn")


@pytest.mark.parametrize(
    ("text", "per_second"),
    [("100/s", 100.0), ("6000/min", 100.0), ("36/h", 0.01), (" 2.5 / second ", 2.5)],
)
def test_rates_parse_into_requests_per_second(text: str, per_second: float) -> None:
    assert parse_rate(text) == pytest.approx(per_second)


@pytest.mark.parametrize("text", ["100", "fast", "0/s", "10/day", "-1/s"])
def test_bad_rates_say_how_to_write_one(text: str) -> None:
    with pytest.raises(e.InvalidInput, match=r"e\.g\. 100/s"):
        parse_rate(text)


def test_bad_key_options_are_refused(keys: KeyStore) -> None:
    with pytest.raises(e.InvalidInput, match="is not one of"):
        keys.create("superuser")
    with pytest.raises(e.InvalidInput, match="a burst needs a rate"):
        keys.create("predict", burst=5)
    with pytest.raises(e.InvalidName):
        keys.create("predict", model="no spaces please")
    key, _ = keys.create("predict", rate_per_second=20)
    assert key.burst == 20  # one second's worth by default

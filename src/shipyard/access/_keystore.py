"""Creating, listing, revoking and verifying API keys."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

from shipyard.access import _repository as repo
from shipyard.access._keys import (
    ApiKey,
    new_secret,
    secret_matches,
    split_token,
    token_for,
    validate_scope,
)
from shipyard.core import validate_model_name
from shipyard.core.errors import InvalidInput, NotFound, Unauthenticated
from shipyard.store import Database, record_audit, utcnow

__all__ = ["KeyStore"]


class KeyStore:
    """API keys in the metadata database.

    Args:
        database: the metadata database.
        actor: who is acting, recorded in the audit trail.
    """

    def __init__(self, database: Database, *, actor: str = "unknown") -> None:
        self.database = database
        self.actor = actor

    def acting_as(self, actor: str) -> KeyStore:
        """The same store, recording `actor` on what it changes."""
        return KeyStore(self.database, actor=actor)

    def create(
        self,
        scope: str,
        *,
        model: str | None = None,
        rate_per_second: float | None = None,
        burst: int | None = None,
        name: str = "",
        by: ApiKey | None = None,
        feature_views: Sequence[str] | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key and its token (`sy_<id>_<secret>`); the token is not stored anywhere.

        Args:
            scope: `predict`, `read`, `write` or `admin`.
            model: bind the key to one model name.
            rate_per_second: sustained requests per second (None: unlimited).
            burst: requests allowed at once above the sustained rate (default: one second's
                worth, at least 1).
            name: what the key is for, e.g. `checkout-service`.
            by: the key asking (over HTTP); it may not create a key that can do more than
                itself. None: the operator at the command line.
            feature_views: the feature views the key may read (None: every view).
        """
        views = _feature_views(feature_views)
        if model is not None:
            validate_model_name(model)
        if rate_per_second is not None and rate_per_second <= 0:
            raise InvalidInput(f"rate must be positive, got {rate_per_second}")
        if burst is not None and burst < 1:
            raise InvalidInput(f"burst must be at least 1, got {burst}")
        if burst is not None and rate_per_second is None:
            raise InvalidInput("a burst needs a rate; pass --rate as well (e.g. --rate 100/s)")
        if rate_per_second is not None and burst is None:
            burst = max(1, round(rate_per_second))
        if by is not None:
            by.check_manages(
                validate_scope(scope), model, "create", rate=rate_per_second, burst=burst,
                feature_views=views,
            )  # fmt: skip
        key_id, secret, digest = new_secret()
        key = ApiKey(
            id=key_id,
            name=name,
            scope=validate_scope(scope),
            model=model,
            rate_per_second=rate_per_second,
            burst=burst,
            created_at=utcnow(),
            created_by=self.actor,
            feature_views=views,
        )
        with self.database.transaction() as conn:
            repo.insert_key(conn, key, digest)
            record_audit(
                conn, self.actor, "key.created", model, None,
                {"key": key_id, "scope": key.scope, "name": name, "model": model,
                 "rate_per_second": rate_per_second, "burst": burst,
                 "feature_views": list(views) if views is not None else None},
            )  # fmt: skip
        return key, token_for(key_id, secret)

    def list_keys(self, *, include_revoked: bool = False, by: ApiKey | None = None) -> list[ApiKey]:
        """Keys, oldest first; a key bound to a model (`by`) sees only the keys bound to it."""
        keys = self.database.read(lambda conn: repo.list_keys(conn, include_revoked))
        if by is not None and by.model is not None:
            keys = [k for k in keys if k.model == by.model]
        return keys

    def snapshot(self) -> dict[str, tuple[ApiKey, str]]:
        """Every key (revoked ones too) with its secret's SHA-256, by id: what servers verify
        against, so the request path needs no database."""
        return self.database.read(repo.all_keys)

    def lookup(self, key_id: str) -> tuple[ApiKey, str] | None:
        """One key and its secret's SHA-256 (for a key newer than a server's snapshot)."""
        return self.database.read(lambda conn: repo.get_key(conn, key_id))

    def get(self, key_id: str) -> ApiKey:
        found = self.database.read(lambda conn: repo.get_key(conn, key_id))
        if found is None:
            raise NotFound(f"no API key with id {key_id!r} (shipyard keys list)")
        return found[0]

    def revoke(self, key_id: str, *, by: ApiKey | None = None) -> ApiKey:
        """Revoke a key; servers stop accepting it within their refresh interval.

        `by` (the key asking, over HTTP) may revoke only keys it could have created.
        """
        with self.database.transaction() as conn:
            found = repo.get_key(conn, key_id)
            if found is None or (by is not None and by.model not in (None, found[0].model)):
                # a key bound to another model is not there, as far as `by` can tell
                raise NotFound(f"no API key with id {key_id!r} (shipyard keys list)")
            target = found[0]
            if by is not None:
                by.check_manages(
                    target.scope, target.model, "revoke", feature_views=target.feature_views
                )
            if repo.revoke_key(conn, key_id, self.actor):
                record_audit(
                    conn, self.actor, "key.revoked", target.model, None,
                    {"key": key_id, "scope": target.scope, "name": target.name},
                )  # fmt: skip
        return self.get(key_id)

    def end_sessions(self, key_id: str, at: datetime) -> None:
        """Sign `key_id` out of the dashboard: its sessions issued before `at` are over on
        every server from its next refresh of the keys."""
        with self.database.transaction() as conn:
            repo.end_sessions(conn, key_id, at)
            record_audit(conn, self.actor, "key.signed_out", None, None, {"key": key_id})

    def verify(self, token: str) -> ApiKey:
        """The active key a presented token belongs to; `Unauthenticated` otherwise."""
        key_id, secret = split_token(token)
        found = self.database.read(lambda conn: repo.get_key(conn, key_id))
        if found is None or not secret_matches(secret, found[1]):
            # the same message either way: do not tell a guesser which ids exist
            raise Unauthenticated(
                "the API key is not valid; check it, or create one with `shipyard keys create`"
            )
        key = found[0]
        if not key.active:
            raise Unauthenticated(
                f"API key {key.id} was revoked; create a new one with `shipyard keys create`"
            )
        return key


_VIEW = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def _feature_views(views: Sequence[str] | None) -> tuple[str, ...] | None:
    """The feature views a key is limited to, checked and without repeats."""
    if views is None:
        return None
    found = tuple(dict.fromkeys(v.strip() for v in views if v.strip()))
    if not found:
        raise InvalidInput("--features names no feature view; give view names, comma-separated")
    bad = [v for v in found if not _VIEW.match(v)]
    if bad:
        raise InvalidInput(f"{', '.join(map(repr, bad))} is not a feature view name")
    return found

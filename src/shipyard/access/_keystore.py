"""Creating, listing, revoking and verifying API keys."""

from __future__ import annotations

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

    def create(
        self,
        scope: str,
        *,
        model: str | None = None,
        rate_per_second: float | None = None,
        burst: int | None = None,
        name: str = "",
    ) -> tuple[ApiKey, str]:
        """A new key and its token (`sy_<id>_<secret>`); the token is not stored anywhere.

        Args:
            scope: `predict`, `read`, `write` or `admin`.
            model: bind the key to one model name.
            rate_per_second: sustained requests per second (None: unlimited).
            burst: requests allowed at once above the sustained rate (default: one second's
                worth, at least 1).
            name: what the key is for, e.g. `checkout-service`.
        """
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
        )
        with self.database.transaction() as conn:
            repo.insert_key(conn, key, digest)
            record_audit(
                conn, self.actor, "key.created", model, None,
                {"key": key_id, "scope": key.scope, "name": name, "rate_per_second": rate_per_second},
            )  # fmt: skip
        return key, token_for(key_id, secret)

    def list_keys(self, *, include_revoked: bool = False) -> list[ApiKey]:
        with self.database.transaction() as conn:
            return repo.list_keys(conn, include_revoked)

    def get(self, key_id: str) -> ApiKey:
        with self.database.transaction() as conn:
            found = repo.get_key(conn, key_id)
        if found is None:
            raise NotFound(f"no API key with id {key_id!r} (shipyard keys list)")
        return found[0]

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key; servers stop accepting it within their refresh interval."""
        with self.database.transaction() as conn:
            found = repo.get_key(conn, key_id)
            if found is None:
                raise NotFound(f"no API key with id {key_id!r} (shipyard keys list)")
            if repo.revoke_key(conn, key_id, self.actor):
                record_audit(conn, self.actor, "key.revoked", found[0].model, None, {"key": key_id})
        return self.get(key_id)

    def verify(self, token: str) -> ApiKey:
        """The active key a presented token belongs to; `Unauthenticated` otherwise."""
        key_id, secret = split_token(token)
        with self.database.transaction() as conn:
            found = repo.get_key(conn, key_id)
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

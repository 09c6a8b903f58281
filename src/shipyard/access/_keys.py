"""API keys: who may call, with which scope, on which model, at what rate.

A key reads `sy_<id>_<secret>`. Only the SHA-256 of the secret is stored; the whole key is
shown once, at creation. The secret is 32 random bytes, so a fast hash is as safe as a slow
one here (slow hashes protect guessable passwords, not random tokens).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, get_args

from shipyard.core.errors import Forbidden, InvalidInput, Unauthenticated

__all__ = ["SCOPES", "ApiKey", "Scope", "grants", "parse_rate", "split_token"]

Scope = Literal["predict", "read", "write", "admin"]
SCOPES: tuple[Scope, ...] = get_args(Scope)

# what each scope may do: admin everything, write also reads, predict only scores
_GRANTS: dict[str, frozenset[str]] = {
    "predict": frozenset({"predict"}),
    "read": frozenset({"read"}),
    "write": frozenset({"write", "read"}),
    "admin": frozenset(SCOPES),
}
_TOKEN = re.compile(r"^sy_([0-9a-f]{16})_([A-Za-z0-9_-]{20,128})$")
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$")
_PER = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}


@dataclass(frozen=True)
class ApiKey:
    """A stored key, without its secret."""

    id: str
    name: str
    scope: Scope
    model: str | None
    rate_per_second: float | None
    burst: int | None
    created_at: datetime
    created_by: str
    revoked_at: datetime | None = None
    feature_views: tuple[str, ...] | None = None
    """The feature views the key may read (None: every view)."""
    sessions_after: datetime | None = None
    """Dashboard sessions of this key issued before this moment are over (signed out)."""

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @property
    def actor(self) -> str:
        """Who this key acts as, in the audit trail: its id and name."""
        return f"key {self.id} ({self.name})" if self.name else f"key {self.id}"

    def allows(self, needed: frozenset[str], model: str | None = None) -> bool:
        return bool(_GRANTS[self.scope] & needed) and self.may_see(model)

    def may_see(self, model: str | None) -> bool:
        """Whether this key may touch `model` (None: nothing model-specific)."""
        return self.model is None or model is None or model == self.model

    def check(self, needed: frozenset[str], model: str | None = None) -> None:
        """Raise `Forbidden` unless this key may do `needed` (any of) on `model`."""
        if not _GRANTS[self.scope] & needed:
            raise Forbidden(
                f"API key {self.id} has scope {self.scope!r}; this call needs "
                f"{' or '.join(sorted(needed))} (create one with `shipyard keys create --scope "
                f"{sorted(needed)[0]}`)"
            )
        self.check_model(model)

    def check_model(self, model: str | None, *, reveal: bool = True) -> None:
        """Raise `Forbidden` when this key is bound to a model other than `model` (named in the
        message only with `reveal`: a model found behind a rule id or a prediction id is not
        told to a key that may not see it)."""
        if not self.may_see(model):
            other = f"{model!r}" if reveal else "what this call touches (another model)"
            raise Forbidden(
                f"API key {self.id} is bound to model {self.model!r} and cannot be used for "
                f"{other}; use a key for that model or one without --model"
            )

    def may_read_view(self, view: str) -> bool:
        return self.feature_views is None or view in self.feature_views

    def check_views(self, views: Iterable[str]) -> None:
        """Raise `Forbidden` when this key is limited to feature views other than `views`."""
        denied = sorted(v for v in set(views) if not self.may_read_view(v))
        if denied:
            raise Forbidden(
                f"API key {self.id} may not read the feature view {', '.join(denied)}; it is "
                f"limited to {', '.join(self.feature_views or ())} (create a key with "
                f"`shipyard keys create --features {','.join(denied)}`)"
            )

    def check_manages(
        self,
        scope: str,
        model: str | None,
        action: str,
        *,
        rate: float | None = None,
        burst: int | None = None,
        feature_views: Sequence[str] | None = None,
    ) -> None:
        """Raise `Forbidden` unless this key may `action` ("create", "revoke") a key of `scope`
        bound to `model` (limited to `rate`/`burst`): never one that could do more than this
        key itself (a wider scope, another or no model binding, a looser rate limit). Only an
        unbound admin key manages unbound keys."""
        if action == "create" and self.rate_per_second is not None:
            looser = rate is None or rate > self.rate_per_second or (burst or 0) > (self.burst or 0)
            if looser:
                raise Forbidden(
                    f"API key {self.id} is limited to {self.rate_per_second:g} requests/s "
                    f"(burst {self.burst}) and cannot {action} a key with a looser limit; give "
                    "the new key a --rate (and burst) no higher than that"
                )
        if scope in _GRANTS and not _GRANTS[scope] <= _GRANTS[self.scope]:
            raise Forbidden(
                f"API key {self.id} has scope {self.scope!r} and cannot {action} a key with "
                f"scope {scope!r}, which can do more than it can"
            )
        if self.feature_views is not None and (
            feature_views is None or not set(feature_views) <= set(self.feature_views)
        ):
            raise Forbidden(
                f"API key {self.id} is limited to the feature views "
                f"{', '.join(self.feature_views)} and cannot {action} a key that reads others"
                + ("; pass --features with a subset of them" if action == "create" else "")
            )
        if self.model is not None and model != self.model:
            target = f"bound to model {model!r}" if model is not None else "not bound to a model"
            raise Forbidden(
                f"API key {self.id} is bound to model {self.model!r} and cannot {action} a key "
                f"{target}; only a key without a model binding manages those"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "scope": self.scope,
            "model": self.model,
            "rate_per_second": self.rate_per_second,
            "burst": self.burst,
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "feature_views": list(self.feature_views) if self.feature_views is not None else None,
        }


def grants(scope: str) -> frozenset[str]:
    """What a key of `scope` may do."""
    return _GRANTS[scope]


def new_secret() -> tuple[str, str, str]:
    """A new key id, its secret, and the secret's SHA-256."""
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return key_id, secret, hash_secret(secret)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def token_for(key_id: str, secret: str) -> str:
    return f"sy_{key_id}_{secret}"


def split_token(token: str) -> tuple[str, str]:
    """The id and secret of a presented key; `Unauthenticated` when it is not shaped like one."""
    match = _TOKEN.match(token.strip())
    if match is None:
        raise Unauthenticated(
            "the API key is not a shipyard key (they look like sy_<16 hex>_<secret>); "
            "send the key `shipyard keys create` printed"
        )
    return match.group(1), match.group(2)


def secret_matches(secret: str, stored_sha256: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_sha256)


def parse_rate(text: str) -> float:
    """`100/s`, `6000/min`, `1/h` -> requests per second."""
    match = _RATE.match(text)
    if match is None or float(match.group(1)) <= 0:
        raise InvalidInput(
            f"rate {text!r} is not a rate; write it as a positive count per unit, e.g. 100/s, "
            "6000/min or 50/h"
        )
    return float(match.group(1)) / _PER[match.group(2)]


def validate_scope(scope: str) -> Scope:
    if scope not in SCOPES:
        raise InvalidInput(f"scope {scope!r} is not one of {', '.join(SCOPES)}")
    return scope

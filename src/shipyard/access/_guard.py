"""The one authorisation step, whatever the transport (HTTP routes, gRPC methods):

authenticate the key (a snapshot in memory; bad keys are budgeted per client)
  -> check its scope
  -> check the key's model binding against every model the call touches
  -> take a rate-limit token
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import anyio

from shipyard.access._auth import ANONYMOUS, Authenticator, FailureThrottle, token_from_headers
from shipyard.access._keys import ApiKey
from shipyard.access._limits import RateLimiter
from shipyard.core.errors import Unauthenticated
from shipyard.core.redaction import hide_paths

__all__ = ["Authorizer", "Caller", "client_key"]


@dataclass(frozen=True)
class Caller:
    """Who is calling: the key, and what it may see."""

    key: ApiKey

    @property
    def actor(self) -> str:
        """What the audit trail records for changes this caller makes."""
        return "anonymous (auth off)" if self.key is ANONYMOUS else self.key.actor

    @property
    def is_admin(self) -> bool:
        return self.key.scope == "admin"

    def may_see(self, model: str | None) -> bool:
        return self.key.may_see(model)

    def shown(self, value: Any) -> Any:
        """`value` as this caller may read it: local paths (where training data lay, say) are
        for admin keys; others see only the file's name."""
        return value if self.is_admin else hide_paths(value)

    def only(self, model: str | None) -> str | None:
        """The model filter of a listing: the key's binding, or what the caller asked for
        (a bound key asking for another model is refused)."""
        self.key.check_model(model)
        return self.key.model if self.key.model is not None else model


def client_key(host: str | None) -> str:
    """Who a failure budget belongs to: the address, or its /64 for IPv6 (one host holds a
    whole /64, and could otherwise start afresh from each address)."""
    host = host or "unknown"
    if ":" in host:
        try:
            return str(ipaddress.ip_network(f"{host}/64", strict=False))
        except ValueError:
            return host
    return host


class Authorizer:
    """Authentication, scope, model binding and rate limits, in one step.

    Args:
        auth: verifies keys (authenticators without a store admit everyone as admin).
        limiter: per-key rate limits.
        throttle: per-client budget of failed authentications.
    """

    def __init__(
        self, auth: Authenticator, limiter: RateLimiter, throttle: FailureThrottle | None = None
    ) -> None:
        self.auth = auth
        self.limiter = limiter
        self.throttle = throttle or FailureThrottle()

    async def authenticate(
        self, authorization: str | None, api_key: str | None, client: str
    ) -> ApiKey:
        """The key a caller presents (the anonymous admin when auth is off)."""
        if not self.auth.enabled:
            return ANONYMOUS
        try:
            token = token_from_headers(authorization, api_key)
            key = self.auth.known(token)
            if key is None:  # newer than the snapshot: a database look-up, if the client earned it
                if self.auth.use_snapshot:  # (without a snapshot every key is looked up)
                    self.throttle.check(client)
                key = await anyio.to_thread.run_sync(self.auth.lookup, token)
        except Unauthenticated:
            self.throttle.failed(client)
            self.throttle.check(client)
            raise
        return key

    async def admit(
        self, key: ApiKey, needed: frozenset[str], models: Iterable[str | None] = ()
    ) -> Caller:
        """The rest of the step for an authenticated key: scope, models, a rate-limit token."""
        key.check(needed)
        for model in models:
            key.check_model(model)
        await self.limiter.check(key)
        return Caller(key)

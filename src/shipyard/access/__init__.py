"""Who may call: API keys with scopes, model bindings and rate limits."""

from __future__ import annotations

from shipyard.access._auth import ANONYMOUS, Authenticator, FailureThrottle, token_from_headers
from shipyard.access._guard import Authorizer, Caller, client_key
from shipyard.access._keys import SCOPES, ApiKey, Scope, grants, parse_rate
from shipyard.access._keystore import KeyStore
from shipyard.access._limits import MemoryBuckets, RateLimiter
from shipyard.access._session import SESSION_COOKIE, Sessions

__all__ = [
    "ANONYMOUS",
    "SCOPES",
    "SESSION_COOKIE",
    "ApiKey",
    "Authenticator",
    "Authorizer",
    "Caller",
    "FailureThrottle",
    "KeyStore",
    "MemoryBuckets",
    "RateLimiter",
    "Scope",
    "Sessions",
    "client_key",
    "grants",
    "parse_rate",
    "token_from_headers",
]

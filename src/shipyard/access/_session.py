"""Browser sessions for the dashboard: sign in once with an API key, then a signed cookie.

The cookie says which key signed in and until when, signed with HMAC-SHA256 keyed by that
key's stored secret digest (and the server's `session_secret` when one is set):

    v1.<key id>.<expires, unix seconds>.<signature>

It holds no secret and needs no session table: any replica that knows the key can check it,
and revoking the key ends its sessions at the next refresh of the key snapshot, like its API
calls. A form's CSRF token is derived the same way from the session, so a page on another
site can neither read it nor forge it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Callable

from shipyard.access._auth import Authenticator
from shipyard.access._keys import ApiKey, split_token
from shipyard.core.errors import Forbidden, Unauthenticated

__all__ = ["SESSION_COOKIE", "Sessions"]

SESSION_COOKIE = "shipyard_session"
_COOKIE = re.compile(r"^v1\.([0-9a-f]{16})\.(\d{1,12})\.([A-Za-z0-9_-]{43})$")
_SIGN_IN_AGAIN = "your session has ended; sign in again with an API key"


def _b64(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class Sessions:
    """Issues and checks dashboard session cookies against the keys `auth` knows.

    Args:
        auth: the server's authenticator (its key snapshot decides whether a key still works).
        lifetime_seconds: how long a session lasts after signing in.
        secret: mixed into every signature when set, so sessions need the server's secret too.
        clock: seconds since the epoch (tests inject their own).
    """

    def __init__(
        self,
        auth: Authenticator,
        *,
        lifetime_seconds: float = 12 * 3600,
        secret: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.auth = auth
        self.lifetime_seconds = lifetime_seconds
        self.secret = (secret or "").encode()
        self.clock = clock

    def _mac(self, digest: str, message: str) -> str:
        key = hmac.new(self.secret, digest.encode(), hashlib.sha256).digest()
        return _b64(hmac.new(key, message.encode(), hashlib.sha256).digest())

    def sign_in(self, key: ApiKey, token: str) -> str:
        """The cookie value for `key`, which `token` (already verified) presented."""
        key_id, _ = split_token(token)
        entry = self.auth.entry(key_id)
        if entry is None or entry[0].id != key.id:
            raise Unauthenticated(_SIGN_IN_AGAIN)
        expires = int(self.clock() + self.lifetime_seconds)
        body = f"v1.{key.id}.{expires}"
        return f"{body}.{self._mac(entry[1], 'session.' + body)}"

    def key_of(self, cookie: str | None) -> ApiKey:
        """The key a session cookie belongs to; `Unauthenticated` when it is missing, forged,
        expired, or its key was revoked."""
        if not cookie:
            raise Unauthenticated("sign in with an API key to see the dashboard")
        key, _ = self._check(cookie)
        return key

    def csrf_token(self, cookie: str) -> str:
        """The token every form of this session carries."""
        _, digest = self._check(cookie)
        return self._mac(digest, "csrf." + cookie)

    def check_csrf(self, cookie: str, token: str | None) -> None:
        """Raise `Forbidden` unless `token` is this session's CSRF token."""
        if not token or not hmac.compare_digest(self.csrf_token(cookie), token):
            raise Forbidden(
                "the form's security token does not match your session (it may be from an old "
                "page or another site); reload the page and try again"
            )

    def _check(self, cookie: str) -> tuple[ApiKey, str]:
        found = _COOKIE.match(cookie)
        if found is None:
            raise Unauthenticated(_SIGN_IN_AGAIN)
        key_id, expires, signature = found.groups()
        if int(expires) < self.clock():
            raise Unauthenticated(_SIGN_IN_AGAIN)
        entry = self.auth.entry(key_id)
        if entry is None:
            raise Unauthenticated(_SIGN_IN_AGAIN)
        key, digest = entry
        expected = self._mac(digest, f"session.v1.{key_id}.{expires}")
        if not hmac.compare_digest(expected, signature):
            raise Unauthenticated(_SIGN_IN_AGAIN)
        if not key.active:
            raise Unauthenticated(
                f"API key {key.id} was revoked, which ended this session; sign in with another"
            )
        return key, digest

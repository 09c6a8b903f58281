"""Browser sessions for the dashboard: sign in once with an API key, then a signed cookie.

The cookie says which key signed in, when, and until when, signed with HMAC-SHA256 keyed by
the server's session secret and that key's stored secret digest:

    v1.<key id>.<issued, unix ms>.<expires, unix seconds>.<signature>

It holds no secret and needs no session table: any replica with the same session secret that
knows the key can check it. A copy of the key table alone cannot mint one (the server secret
lives outside the database: `SHIPYARD_SESSION_SECRET`, or a file in the server's home).
Revoking the key ends its sessions at the next refresh of the key snapshot, like its API calls;
signing out ends every session of the key issued before it (`ApiKey.sessions_after`). A form's
CSRF token is derived the same way from the session, so a page on another site can neither
read it nor forge it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from shipyard.access._auth import Authenticator
from shipyard.access._keys import ApiKey, split_token
from shipyard.core.errors import ConfigurationError, Forbidden, Unauthenticated

__all__ = ["SESSION_COOKIE", "Sessions"]

SESSION_COOKIE = "shipyard_session"
_COOKIE = re.compile(r"^v1\.([0-9a-f]{16})\.(\d{1,15})\.(\d{1,12})\.([A-Za-z0-9_-]{43})$")
_ASCII = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_SIGN_IN_AGAIN = "your session has ended; sign in again with an API key"


def _b64(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class Sessions:
    """Issues and checks dashboard session cookies against the keys `auth` knows.

    Args:
        auth: the server's authenticator (its key snapshot decides whether a key still works).
        secret: the server's session secret (the same on every replica), or None to keep one
            in `secret_file` (made on first use, readable by its owner only): enough for the
            workers of one machine; replicas on several machines share `secret`.
        secret_file: where the secret is kept when `secret` is None.
        lifetime_seconds: how long a session lasts after signing in.
        clock: seconds since the epoch (tests inject their own).
    """

    def __init__(
        self,
        auth: Authenticator,
        secret: str | None = None,
        *,
        secret_file: Path | None = None,
        lifetime_seconds: float = 12 * 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if secret is not None and len(secret) < 16:
            raise ConfigurationError(
                "SHIPYARD_SESSION_SECRET needs at least 16 characters (e.g. `openssl rand -hex 32`)"
            )
        if secret is None and secret_file is None:
            raise ValueError("Sessions needs a secret or a file to keep one in")
        self.auth = auth
        self.lifetime_seconds = lifetime_seconds
        self._secret = None if secret is None else secret.encode()
        self.secret_file = secret_file
        self.clock = clock

    @property
    def secret(self) -> bytes:
        if self._secret is None:
            assert self.secret_file is not None
            self._secret = _kept_secret(self.secret_file)
        return self._secret

    def _mac(self, digest: str, message: str) -> str:
        key = hmac.new(self.secret, digest.encode(), hashlib.sha256).digest()
        return _b64(hmac.new(key, message.encode(), hashlib.sha256).digest())

    def sign_in(self, key: ApiKey, token: str) -> str:
        """The cookie value for `key`, which `token` (already verified) presented."""
        key_id, _ = split_token(token)
        entry = self.auth.entry(key_id)
        if entry is None or entry[0].id != key.id:
            raise Unauthenticated(_SIGN_IN_AGAIN)
        now = self.clock()
        body = f"v1.{key.id}.{int(now * 1000)}.{int(now + self.lifetime_seconds)}"
        return f"{body}.{self._mac(entry[1], 'session.' + body)}"

    def key_id(self, cookie: str | None) -> str | None:
        """The key a cookie names, unchecked (None when it is not a session cookie)."""
        found = _COOKIE.match(cookie or "")
        return None if found is None else found.group(1)

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
        if (
            not token
            or not _ASCII.match(token)
            or not hmac.compare_digest(self.csrf_token(cookie).encode(), token.encode())
        ):
            raise Forbidden(
                "the form's security token does not match your session (it may be from an old "
                "page or another site); reload the page and try again"
            )

    def _check(self, cookie: str) -> tuple[ApiKey, str]:
        found = _COOKIE.match(cookie)
        if found is None:
            raise Unauthenticated(_SIGN_IN_AGAIN)
        key_id, issued, expires, signature = found.groups()
        if int(expires) < self.clock():
            raise Unauthenticated(_SIGN_IN_AGAIN)
        entry = self.auth.entry(key_id)
        if entry is None:
            raise Unauthenticated(_SIGN_IN_AGAIN)
        key, digest = entry
        expected = self._mac(digest, f"session.v1.{key_id}.{issued}.{expires}")
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise Unauthenticated(_SIGN_IN_AGAIN)
        if not key.active:
            raise Unauthenticated(
                f"API key {key.id} was revoked, which ended this session; sign in with another"
            )
        if key.sessions_after is not None and int(issued) < key.sessions_after.timestamp() * 1000:
            raise Unauthenticated(_SIGN_IN_AGAIN)
        return key, digest


def _kept_secret(path: Path) -> bytes:
    """The secret in `path`, made (random, owner-only) by whichever process asks first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))
    deadline = time.monotonic() + 5.0
    while True:  # another process may be writing it this instant
        text = path.read_text().strip()
        if len(text) == 64 or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    if len(text) < 16:
        raise ConfigurationError(
            f"the dashboard's session secret in {path} is damaged; delete the file (every "
            "dashboard session ends) or set SHIPYARD_SESSION_SECRET"
        )
    return text.encode()

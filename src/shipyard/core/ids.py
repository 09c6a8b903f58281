"""Identifiers: validated model names, aliases, `name:version` references, and new ids."""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass

from shipyard.core.errors import InvalidName

__all__ = [
    "MAX_VERSION",
    "ModelRef",
    "new_id",
    "new_ids",
    "parse_version",
    "validate_alias",
    "validate_model_name",
]

MAX_VERSION = 2**31 - 1  # versions are 32-bit integers in the metadata database

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


def validate_model_name(name: str) -> str:
    """Return `name` if it can name a model, else raise `InvalidName` saying what is allowed."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidName(
            f"model name {name!r} is not allowed; use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (e.g. 'fraud-detector')"
        )
    return name


def validate_alias(alias: str) -> str:
    """Return `alias` if it can be an alias, else raise `InvalidName`."""
    if not isinstance(alias, str) or not _ALIAS.match(alias):
        raise InvalidName(
            f"alias {alias!r} is not allowed; use 1-64 letters, digits, '_' or '-', starting "
            "with a letter (e.g. 'production', 'champion')"
        )
    return alias


def parse_version(text: str, *, where: str = "") -> int:
    """A version number from text: 1 to `MAX_VERSION`, else `InvalidName` saying so."""
    if (
        not text.isascii()
        or not text.isdigit()
        or len(text) > 10
        or not 1 <= int(text) <= MAX_VERSION
    ):
        raise InvalidName(
            f"version {text[:40]!r}{where} must be a whole number from 1 to {MAX_VERSION}"
        )
    return int(text)


@dataclass(frozen=True)
class ModelRef:
    """A parsed `name`, `name:3` or `name:production` reference.

    Exactly one of `version` and `alias` is set when the reference names one; both are None
    for a bare name, which callers resolve to their default alias.
    """

    name: str
    version: int | None = None
    alias: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        name, sep, tag = text.partition(":")
        validate_model_name(name)
        if not sep:
            return cls(name)
        if tag.isdigit():
            return cls(name, version=parse_version(tag, where=f" in {text!r}"))
        return cls(name, alias=validate_alias(tag))

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}:{self.version}"
        if self.alias is not None:
            return f"{self.name}:{self.alias}"
        return self.name


class _Entropy:
    """The operating system's randomness (`os.urandom`), read 64 KiB at a time.

    A request takes its ids' random bits from here instead of a `getrandom` call each: a
    system call lets go of the GIL, and under load the request then waits for the scoring
    thread to hand it back. Forked processes start with an empty pool, so no two processes
    ever hand out the same bytes.
    """

    SIZE = 1 << 16

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        # A new lock too: a thread of the parent may have held the old one at the fork.
        self._lock = threading.Lock()
        self._pool = b""
        self._at = 0

    def hex(self, n: int) -> str:
        """`n` random bytes as hex digits."""
        with self._lock:
            if self._at + n > len(self._pool):
                self._pool = os.urandom(max(self.SIZE, n))
                self._at = 0
            taken = self._pool[self._at : self._at + n]
            self._at += n
        return taken.hex()


_ENTROPY = _Entropy()
os.register_at_fork(after_in_child=_ENTROPY._reset)


def new_id() -> str:
    """A 32-hex-digit id that sorts by creation time (48-bit ms clock + 80 random bits)."""
    return f"{time.time_ns() // 1_000_000:012x}{_ENTROPY.hex(10)}"


def new_ids(n: int) -> list[str]:
    """`n` ids as `new_id` makes them, with one clock read."""
    clock = f"{time.time_ns() // 1_000_000:012x}"
    noise = _ENTROPY.hex(10 * n)
    return [clock + noise[i : i + 20] for i in range(0, 20 * n, 20)]

"""The services tests can use: their URLs from the environment, or the local ones that answer.

CI exports `SHIPYARD_TEST_POSTGRES_URL` and `SHIPYARD_TEST_REDIS_URL`. A developer who runs
`make test` on a machine where PostgreSQL and Redis answer on their usual local ports gets the
same suite without exporting anything: each service is tried once (connect and a trivial
query, two seconds at most) and used when it answers. `SHIPYARD_TEST_LOCAL_SERVICES=off`
turns the probing off; a service that does not answer leaves its tests to skip with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Callable

__all__ = ["LOCAL", "discover", "found"]

LOCAL = {
    "SHIPYARD_TEST_POSTGRES_URL": "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "SHIPYARD_TEST_REDIS_URL": "redis://127.0.0.1:6379/0",
}

found: dict[str, str] = {}
"""Which variables `discover` set, and how (for the run's summary)."""


def _postgres(url: str) -> None:
    import psycopg

    plain = url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(plain, connect_timeout=2) as conn:
        conn.execute("SELECT 1")


def _redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    finally:
        client.close()


PROBES: dict[str, Callable[[str], None]] = {
    "SHIPYARD_TEST_POSTGRES_URL": _postgres,
    "SHIPYARD_TEST_REDIS_URL": _redis,
}


def discover(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Set each unset service variable of `environ` (default `os.environ`) to the local
    service when it answers; return what was decided for each, in words."""
    env = os.environ if environ is None else environ
    decided: dict[str, str] = {}
    for variable, url in LOCAL.items():
        if env.get(variable):
            decided[variable] = f"{env[variable]} (from the environment)"
        elif env.get("SHIPYARD_TEST_LOCAL_SERVICES", "on") == "off":
            decided[variable] = "unset (SHIPYARD_TEST_LOCAL_SERVICES=off)"
        else:
            try:
                PROBES[variable](url)
            except Exception as error:  # any failure means: not usable here
                decided[variable] = f"unset: nothing usable at {url} ({type(error).__name__})"
            else:
                env[variable] = url
                decided[variable] = f"{url} (answered locally)"
    if environ is None:  # the run's own decision, for its summary
        found.clear()
        found.update(decided)
    return decided

"""Online stores: the newest value of every feature per entity, for lookups at request time.

One small protocol, two stores: SQLite (the default, a file beside the metadata) and Redis
(`SHIPYARD_REDIS_URL`, shared by replicas). Both keep each value's event time, and a write
never replaces a value with an older one, so materializing twice, or out of order, ends in
the same state. The TTL is applied by the reader (`FeatureStore.get_online`), not by the
store: an expired value is still there, and reads as stale.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from shipyard.core.errors import RedisUnavailable, missing_extra
from shipyard.features._definitions import Feature

__all__ = ["Layout", "OnlineStore", "RedisStore", "SqliteStore"]

WRITE_CHUNK = 10_000


@dataclass(frozen=True)
class Layout:
    """How one version of a view lies in a store: its keys (and whether they are integers)
    and its features."""

    view: str
    version: int
    keys: tuple[str, ...]
    integer_keys: tuple[bool, ...]
    features: tuple[Feature, ...]

    @property
    def table(self) -> str:
        return f"fv_{self.view}_{self.version}"


Found = tuple[float, tuple[Any, ...]] | None
"""One entity's row: its event time (epoch seconds) and the asked features' values."""


class OnlineStore(Protocol):
    kind: str

    def write(self, layout: Layout, rows: pa.Table) -> int:
        """Upsert `rows` (the keys, `__ts` in epoch seconds, the features); a row older than
        what the store holds for its entity is skipped. Returns the rows offered."""
        ...

    def read(
        self, layout: Layout, keys: Sequence[tuple[Any, ...]], features: Sequence[str]
    ) -> list[Found]:
        """For each key tuple, its event time and the values of `features` (None: never
        written)."""
        ...

    def count(self, layout: Layout) -> int: ...

    def close(self) -> None: ...


def _decoded(feature: Feature, value: Any) -> Any:
    if value is None:
        return None
    if feature.dtype == "bool":
        return value in (1, True, "1", "True", "true")
    if feature.dtype == "int":
        return int(value)
    if feature.dtype == "float":
        return float(value)
    return str(value)


# -- SQLite ---------------------------------------------------------------------------------------

_SQL_TYPE = {"float": "REAL", "int": "INTEGER", "bool": "INTEGER", "string": "TEXT"}


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class SqliteStore:
    """One table per view version in a SQLite file; a connection per thread."""

    kind = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._tables: set[str] = set()
        self._reads: dict[tuple[str, tuple[str, ...], int], str] = {}
        self._bools: dict[tuple[str, tuple[str, ...]], tuple[int, ...]] = {}
        self._connections: dict[int, sqlite3.Connection] = {}  # by thread
        self._guard = threading.Lock()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            self._local.conn = conn
            with self._guard:
                # worker threads come and go (a server's pool retires idle ones): the
                # connections of threads that ended are closed, not kept open forever
                alive = {t.ident for t in threading.enumerate()}
                for ident in [i for i in self._connections if i not in alive]:
                    self._connections.pop(ident).close()
                previous = self._connections.get(threading.get_ident())
                if previous is not None:
                    previous.close()
                self._connections[threading.get_ident()] = conn
        return conn

    def _exists(self, layout: Layout) -> bool:
        if layout.table in self._tables:
            return True
        found = (
            self._conn()
            .execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (layout.table,)
            )
            .fetchone()
        )
        if found:
            self._tables.add(layout.table)
        return found is not None

    def _create(self, layout: Layout) -> None:
        keys = [
            f"{_q(k)} {'INTEGER' if integer else 'TEXT'} NOT NULL"
            for k, integer in zip(layout.keys, layout.integer_keys, strict=True)
        ]
        features = [f"{_q(f.name)} {_SQL_TYPE[f.dtype]}" for f in layout.features]
        self._conn().execute(
            f"CREATE TABLE IF NOT EXISTS {_q(layout.table)} ({', '.join(keys)}, "
            f"__ts REAL NOT NULL, {', '.join(features)}, "
            f"PRIMARY KEY ({', '.join(_q(k) for k in layout.keys)})) WITHOUT ROWID"
        )
        self._tables.add(layout.table)

    def write(self, layout: Layout, rows: pa.Table) -> int:
        self._create(layout)
        names = [*layout.keys, "__ts", *(f.name for f in layout.features)]
        updates = ", ".join(f"{_q(n)} = excluded.{_q(n)}" for n in names if n not in layout.keys)
        sql = (
            f"INSERT INTO {_q(layout.table)} ({', '.join(_q(n) for n in names)}) "
            f"VALUES ({', '.join('?' for _ in names)}) "
            f"ON CONFLICT ({', '.join(_q(k) for k in layout.keys)}) DO UPDATE SET {updates} "
            f"WHERE excluded.__ts >= {_q(layout.table)}.__ts"
        )
        conn = self._conn()
        for batch in rows.select(names).to_batches(WRITE_CHUNK):
            columns = [batch.column(i).to_pylist() for i in range(len(names))]
            with conn:
                conn.executemany(sql, zip(*columns, strict=True))
        return int(rows.num_rows)

    def read(
        self, layout: Layout, keys: Sequence[tuple[Any, ...]], features: Sequence[str]
    ) -> list[Found]:
        if not keys or not self._exists(layout):
            return [None] * len(keys)
        wanted = tuple(features)
        conn = self._conn()
        bools = self._bool_positions(layout, wanted)
        if len(keys) == 1:
            cache = (layout.table, wanted, 1)
            sql = self._reads.get(cache)
            if sql is None:
                where = " AND ".join(f"{_q(k)} = ?" for k in layout.keys)
                sql = (
                    f"SELECT __ts, {', '.join(_q(f) for f in wanted)} FROM {_q(layout.table)} "
                    f"WHERE {where}"
                )
                self._reads[cache] = sql
            row = conn.execute(sql, keys[0]).fetchone()
            return [_values(row[0], row[1:], bools) if row else None]
        listed = ", ".join(_q(k) for k in layout.keys)
        placeholders = ", ".join(
            ("(" + ", ".join("?" for _ in layout.keys) + ")") for _ in range(len(keys))
        )
        sql = (
            f"SELECT {listed}, __ts, {', '.join(_q(f) for f in wanted)} FROM {_q(layout.table)} "
            f"WHERE ({listed}) IN (VALUES {placeholders})"
        )
        width = len(layout.keys)
        flat = [value for key in keys for value in key]
        # keys come typed as the table holds them (integers or text), so they match as tuples
        found = {tuple(row[:width]): row[width:] for row in conn.execute(sql, flat).fetchall()}
        out: list[Found] = []
        for key in keys:
            row = found.get(tuple(key))
            out.append(_values(row[0], row[1:], bools) if row else None)
        return out

    def _bool_positions(self, layout: Layout, wanted: tuple[str, ...]) -> tuple[int, ...]:
        """Which asked features are booleans: SQLite hands back its own types for the
        others (REAL, INTEGER, TEXT), and 0/1 for these."""
        cache = (layout.table, wanted)
        found = self._bools.get(cache)
        if found is None:
            kinds = {f.name: f.dtype for f in layout.features}
            found = tuple(i for i, name in enumerate(wanted) if kinds[name] == "bool")
            self._bools[cache] = found
        return found

    def count(self, layout: Layout) -> int:
        if not self._exists(layout):
            return 0
        row = self._conn().execute(f"SELECT count(*) FROM {_q(layout.table)}").fetchone()
        return 0 if row is None else int(row[0])

    def close(self) -> None:
        with self._guard:
            for conn in self._connections.values():
                conn.close()
            self._connections.clear()
        self._local = threading.local()


def _values(ts: float, row: Sequence[Any], bools: tuple[int, ...]) -> Found:
    if not bools:
        return float(ts), tuple(row)
    values = list(row)
    for i in bools:
        if values[i] is not None:
            values[i] = bool(values[i])
    return float(ts), tuple(values)


# -- Redis ----------------------------------------------------------------------------------------

# newer wins: skip a row older than the entity's stored time; a null value deletes its field
_UPSERT = """
local current = redis.call('HGET', KEYS[1], '__ts')
if current and tonumber(current) > tonumber(ARGV[1]) then return 0 end
local fields = {'__ts', ARGV[1]}
for i = 2, #ARGV, 2 do
  if ARGV[i + 1] == '\\0' then
    redis.call('HDEL', KEYS[1], ARGV[i])
  else
    table.insert(fields, ARGV[i])
    table.insert(fields, ARGV[i + 1])
  end
end
redis.call('HSET', KEYS[1], unpack(fields))
return 1
"""
_NULL = "\0"


def _encoded(value: Any) -> str:
    if value is None:
        return _NULL
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return repr(value)
    return str(value)


class RedisStore:
    """A hash per entity (`<prefix><view>:<version>:<keys>`), written through a script so
    that an older row never replaces a newer one."""

    kind = "redis"

    def __init__(
        self, url: str, *, prefix: str = "shipyard:features:", timeout: float = 2.0
    ) -> None:
        try:
            import redis
        except ImportError:  # pragma: no cover - the redis extra is in every test install
            raise missing_extra("redis", "redis", "the Redis online store") from None
        self.url = url
        self.prefix = prefix
        self._redis = redis
        self._client = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=True
        )
        self._upsert = self._client.register_script(_UPSERT)

    def _key(self, layout: Layout, key: Sequence[Any]) -> str:
        return f"{self.prefix}{layout.view}:{layout.version}:" + "\x1f".join(str(k) for k in key)

    def _call(self, what: str, fn: Any) -> Any:
        try:
            return fn()
        except self._redis.RedisError as error:
            raise RedisUnavailable(
                f"the Redis online store at {self.url.split('@')[-1]} failed while {what}: {error}"
            ) from None

    def write(self, layout: Layout, rows: pa.Table) -> int:
        names = [f.name for f in layout.features]
        for batch in rows.to_batches(WRITE_CHUNK):
            keys = list(zip(*(batch.column(k).to_pylist() for k in layout.keys), strict=True))
            times = batch.column("__ts").to_pylist()
            values = list(zip(*(batch.column(n).to_pylist() for n in names), strict=True))

            def send(
                keys: list[Any] = keys, times: list[Any] = times, values: list[Any] = values
            ) -> None:
                pipe = self._client.pipeline(transaction=False)
                for key, ts, row in zip(keys, times, values, strict=True):
                    args: list[str] = [repr(float(ts))]
                    for name, value in zip(names, row, strict=True):
                        args += [name, _encoded(value)]
                    self._upsert(keys=[self._key(layout, key)], args=args, client=pipe)
                pipe.execute()

            self._call("writing", send)
        return int(rows.num_rows)

    def read(
        self, layout: Layout, keys: Sequence[tuple[Any, ...]], features: Sequence[str]
    ) -> list[Found]:
        if not keys:
            return []
        fields = ["__ts", *features]

        def fetch() -> list[Any]:
            if len(keys) == 1:
                return [self._client.hmget(self._key(layout, keys[0]), fields)]
            pipe = self._client.pipeline(transaction=False)
            for key in keys:
                pipe.hmget(self._key(layout, key), fields)
            return list(pipe.execute())

        by_name = {f.name: f for f in layout.features}
        out: list[Found] = []
        for row in self._call("reading", fetch):
            if row[0] is None:
                out.append(None)
                continue
            out.append(
                (
                    float(row[0]),
                    tuple(_decoded(by_name[n], v) for n, v in zip(features, row[1:], strict=True)),
                )
            )
        return out

    def count(self, layout: Layout) -> int:
        pattern = f"{self.prefix}{layout.view}:{layout.version}:*"
        found: int = self._call(
            "counting", lambda: sum(1 for _ in self._client.scan_iter(pattern, count=1000))
        )
        return found

    def close(self) -> None:
        self._client.close()

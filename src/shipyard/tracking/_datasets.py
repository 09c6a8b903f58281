"""Data versions: the data sets runs trained and validated on, kept so a model can be made again.

A snapshot is the data as an Arrow table, written once as Parquet at
`datasets/<sha[:2]>/<sha>.parquet` in the artifact store. Its id is the SHA-256 of the table's
Arrow IPC form (the same digest `fingerprint` gives), so the same data logged by a hundred runs
is one file and one row, and unchanged data costs no space. Each snapshot keeps its schema, row
count, a profile of its columns, and the key that identifies a row when one was declared.

    versions = DataVersions(database, artifacts)
    snap = versions.snapshot(frame, key=["transaction_id"])
    versions.load(snap.sha256)        # the same rows back, as a pyarrow Table
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from shipyard.core.errors import InvalidInput, NotFound
from shipyard.core.profile import as_arrow, profile, table_sha256
from shipyard.core.signature import Signature
from shipyard.store import ArtifactStore, Database, tables, utcnow

__all__ = ["SNAPSHOT_SUFFIXES", "DataVersion", "DataVersions"]

D = tables.data_versions
SNAPSHOT_SUFFIXES = (".parquet", ".pq", ".csv")  # files a path can be snapshotted from
PROFILE_ROWS = 200_000  # rows a snapshot's profile is worked out on (drawn evenly)
MIN_PREFIX = 6  # the shortest id prefix a data version is named by


@dataclass(frozen=True)
class DataVersion:
    """A stored snapshot of a data set."""

    sha256: str
    rows: int
    schema: list[dict[str, str]]
    profile: dict[str, Any]
    key: list[str] | None
    path: str
    file_sha256: str
    size_bytes: int
    created_at: datetime
    created_by: str

    @property
    def columns(self) -> list[str]:
        return [c["name"] for c in self.schema]

    def to_dict(self) -> dict[str, Any]:
        return {
            "sha256": self.sha256,
            "rows": self.rows,
            "schema": self.schema,
            "profile": self.profile,
            "key": self.key,
            "path": self.path,
            "file_sha256": self.file_sha256,
            "size_bytes": self.size_bytes,
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
        }


class DataVersions:
    """Snapshots in the artifact store, their records in the metadata database."""

    def __init__(
        self, database: Database, artifacts: ArtifactStore, *, actor: str = "unknown"
    ) -> None:
        self.database = database
        self.artifacts = artifacts
        self.actor = actor

    def snapshot(self, data: Any, *, key: Sequence[str] | str | None = None) -> DataVersion:
        """Store `data` (a frame, Arrow table, records, 2-D array, or a Parquet/CSV path) unless
        the same data is stored already, and return its version."""
        table = read_data(data)
        keys = _key(key, table.column_names)
        sha = table_sha256(table)
        known = self._find(sha)
        if known is not None and self.artifacts.exists(known.path):
            return known
        path = f"datasets/{sha[:2]}/{sha}.parquet"
        stored = self.artifacts.write_bytes(path, _parquet(table))
        record = {
            "sha256": sha, "rows": int(table.num_rows), "schema": _schema(table),
            "profile": _profile(table), "key": keys, "path": path, "file_sha256": stored.sha256,
            "size_bytes": stored.size, "created_at": utcnow(), "created_by": self.actor,
        }  # fmt: skip
        try:
            with self.database.transaction() as conn:
                if known is not None:  # the row outlived its file: the file is back now
                    conn.execute(
                        D.update().where(D.c.sha256 == sha).values(file_sha256=stored.sha256)
                    )
                else:
                    conn.execute(insert(D).values(**record))
        except IntegrityError:  # another process stored the same data first: its row stands
            pass
        found = self._find(sha)
        assert found is not None
        return found

    def get(self, ref: str) -> DataVersion:
        """A data version by its id or an unambiguous prefix of it (at least 6 characters)."""
        ref = ref.strip().lower()
        if len(ref) < MIN_PREFIX or any(c not in "0123456789abcdef" for c in ref):
            raise InvalidInput(
                f"{ref!r} is not a data version id; give its SHA-256 or its first "
                f"{MIN_PREFIX}+ hex characters (shipyard data list)"
            )
        found = self.database.read(
            lambda conn: conn.execute(
                select(D).where(D.c.sha256.startswith(ref, autoescape=True)).limit(2)
            ).all()
        )
        if not found:
            raise NotFound(f"no data version {ref!r} (shipyard data list)")
        if len(found) > 1:
            raise InvalidInput(f"{ref!r} names more than one data version; give more characters")
        return _version(found[0])

    def list_versions(self, among: Sequence[str] | None = None) -> list[DataVersion]:
        """Data versions, newest first; `among` keeps only those ids."""
        query = select(D).order_by(D.c.created_at.desc(), D.c.sha256)
        if among is not None:
            query = query.where(D.c.sha256.in_(sorted(set(among))))
        return self.database.read(lambda conn: [_version(r) for r in conn.execute(query)])

    def load(self, ref: str) -> Any:
        """The snapshot's rows as a pyarrow Table, checked against the file's SHA-256."""
        import pyarrow.parquet as pq

        version = self.get(ref)
        data = self.artifacts.read_bytes(version.path, version.file_sha256)
        return pq.read_table(io.BytesIO(data))

    def _find(self, sha: str) -> DataVersion | None:
        row = self.database.read(
            lambda conn: conn.execute(select(D).where(D.c.sha256 == sha)).first()
        )
        return _version(row) if row is not None else None


def read_data(data: Any) -> Any:
    """`data` as a pyarrow Table: in-memory data through `as_arrow` (so its id is its
    fingerprint), a Parquet or CSV file read whole."""
    if not isinstance(data, str | Path):
        return as_arrow(data)
    path = Path(data)
    if not path.is_file() or path.suffix.lower() not in SNAPSHOT_SUFFIXES:
        raise InvalidInput(
            f"cannot snapshot {str(path)!r}: give a frame or a .parquet or .csv file"
        )
    from shipyard.core.tables import read_table_file

    frame = read_table_file(path, "csv" if path.suffix.lower() == ".csv" else "parquet")
    return as_arrow(frame)


def _key(key: Sequence[str] | str | None, columns: list[str]) -> list[str] | None:
    if key is None:
        return None
    keys = [key] if isinstance(key, str) else list(key)
    missing = [k for k in keys if k not in columns]
    if not keys or missing:
        raise InvalidInput(
            f"the key {missing or keys} is not among the data's columns "
            f"({', '.join(columns[:20])}); name the column(s) that identify a row"
        )
    return keys


def _parquet(table: Any) -> bytes:
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def _schema(table: Any) -> list[dict[str, str]]:
    return [{"name": f.name, "type": str(f.type)} for f in table.schema]


def _profile(table: Any) -> dict[str, Any]:
    """The profile drift checks read, for every column a signature can hold; the others
    (timestamps, nested values) are listed with their type only."""
    rows = table.num_rows
    if rows > PROFILE_ROWS:
        step = rows / PROFILE_ROWS
        table = table.take([int(i * step) for i in range(PROFILE_ROWS)])
    frame = table.to_pandas()
    held, other = [], {}
    for name in frame.columns:
        try:
            held.append(Signature.infer(frame[[name]]).columns[0])
        except InvalidInput:
            other[str(name)] = {"type": str(table.schema.field(name).type), "profiled": False}
    profiled = profile(frame, Signature(tuple(held))) if held else {"columns": {}}
    return {"rows": rows, "columns": {**profiled["columns"], **other}}


def _version(row: Any) -> DataVersion:
    created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
    return DataVersion(
        sha256=row.sha256, rows=row.rows, schema=list(row.schema), profile=dict(row.profile),
        key=list(row.key) if row.key else None, path=row.path, file_sha256=row.file_sha256,
        size_bytes=row.size_bytes, created_at=created, created_by=row.created_by,
    )  # fmt: skip

"""Where a batch job writes: a Parquet or CSV file (a path or any fsspec URL), or a SQL table.

Nothing half-written ever looks complete. Chunks go to a staging place beside the target,
each written whole or not at all, and the target appears in one step once every chunk is
there:

    file   OUTPUT.partial/job.json, part-000000.arrow, ...  ->  OUTPUT (a rename, or one PUT)
    table  TABLE__partial (rows with their chunk), TABLE__partial_job  ->  TABLE (one transaction)

The staging place also holds the job (`job.json`): the same command run again after a crash
finds it and goes on from the first chunk that is not there. A Parquet job that runs from its
first chunk to its last also writes the output itself beside the target as the chunks come,
so that its commit is a rename; a resumed job's chunks are joined at commit.
"""

from __future__ import annotations

import io
import os
import tempfile
from abc import ABC, abstractmethod
from typing import Any

import orjson
import pyarrow as pa

from shipyard.batch._inputs import _fs_of, _kind_of
from shipyard.core.errors import Conflict, InvalidInput, ServiceUnavailable
from shipyard.core.redaction import redact_url

__all__ = ["FileOutput", "Output", "TableOutput", "column_kind", "open_output"]


class Output(ABC):
    """A job's target and its staging place."""

    description: str

    @abstractmethod
    def exists(self) -> bool:
        """Whether the target is already there (a finished output)."""

    @abstractmethod
    def staged(self) -> dict[str, Any] | None:
        """The job an earlier run staged here, if one did."""

    @abstractmethod
    def stage(self, job: dict[str, Any]) -> None:
        """Start a staging place for `job`, discarding any earlier one."""

    @abstractmethod
    def done(self) -> int:
        """How many chunks, from the first on, are staged whole."""

    @abstractmethod
    def write(self, index: int, table: pa.Table) -> None:
        """Stage chunk `index`, whole or not at all (again: it replaces the earlier one)."""

    @abstractmethod
    def commit(self, *, overwrite: bool) -> None:
        """Make the target out of the staged chunks, in one step, and clear the staging place."""

    @abstractmethod
    def discard(self) -> None:
        """Remove the staging place."""

    @abstractmethod
    def close(self) -> None:
        """Let go of open files and connections (a database's pool)."""


# -- files ---------------------------------------------------------------------------------------


class FileOutput(Output):
    """A Parquet or CSV file, local or on any fsspec filesystem."""

    def __init__(self, target: str) -> None:
        kind = _kind_of(target)
        if kind is None:
            raise InvalidInput(
                f"cannot write {target}: name the output .parquet or .csv (or give --db URL "
                "to write a table)"
            )
        self.kind = kind
        self.target = target
        self.description = target
        self.fs, self.path = _fs_of(target)
        self.local = "file" in (
            self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        )
        self.staging = f"{self.path}.partial"
        self._joined: _Joined | None = None  # the output itself, written as the chunks come
        parent = self.path.rsplit("/", 1)[0] if "/" in self.path else "."
        if self.local and not os.path.isdir(parent):
            raise InvalidInput(
                f"cannot write {target}: the folder {parent} does not exist; create it first"
            )

    def close(self) -> None:
        if self._joined is not None:
            self._joined.abandon()
            self._joined = None

    @property
    def _part_kind(self) -> str:
        """Staged chunks of a Parquet output are Arrow IPC files (LZ4): a quarter of the CPU of
        writing Parquet, for files that are read once, by the commit, if at all."""
        return "arrow" if self.kind == "parquet" else self.kind

    def _part(self, index: int) -> str:
        return f"{self.staging}/part-{index:06d}.{self._part_kind}"

    def exists(self) -> bool:
        return bool(self.fs.exists(self.path))

    def staged(self) -> dict[str, Any] | None:
        try:
            with self.fs.open(f"{self.staging}/job.json", "rb") as fh:
                job: dict[str, Any] = orjson.loads(fh.read())
        except (FileNotFoundError, orjson.JSONDecodeError):
            return None
        return job

    def stage(self, job: dict[str, Any]) -> None:
        self.discard()
        try:
            self.fs.makedirs(self.staging, exist_ok=True)
        except OSError as error:
            raise InvalidInput(f"cannot write beside {self.target}: {error}") from None
        self._put(f"{self.staging}/job.json", orjson.dumps(job, option=orjson.OPT_INDENT_2))
        if self.kind == "parquet":  # a job from its first chunk: the output grows beside them
            folder = os.path.dirname(self.path) if self.local else None
            self._joined = _Joined(folder)

    def done(self) -> int:
        try:
            names = {p.rsplit("/", 1)[-1] for p in self.fs.ls(self.staging, detail=False)}
        except FileNotFoundError:
            return 0
        count = 0
        while f"part-{count:06d}.{self._part_kind}" in names:
            count += 1
        return count

    def write(self, index: int, table: pa.Table) -> None:
        if self.kind == "parquet":
            sink = pa.BufferOutputStream()
            options = pa.ipc.IpcWriteOptions(compression="lz4")
            with pa.ipc.new_file(sink, table.schema, options=options) as writer:
                writer.write_table(table)
            self._put(self._part(index), sink.getvalue().to_pybytes())
            if self._joined is not None and not self._joined.add(index, table):
                self._joined = None  # out of order, or a schema that changes: joined at commit
            return
        import pyarrow.csv as pacsv

        text = io.BytesIO()
        pacsv.write_csv(table, text, pacsv.WriteOptions(include_header=False))
        self._put(self._part(index), text.getvalue())

    def _put(self, path: str, data: bytes) -> None:
        """Write `data` whole or not at all: a rename locally, one PUT on an object store."""
        try:
            if self.local:
                tmp = f"{path}.{os.getpid()}.tmp"
                with open(tmp, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
            else:
                with self.fs.open(path, "wb") as fh:
                    fh.write(data)
        except OSError as error:
            raise ServiceUnavailable(f"cannot write {path}: {error}") from None

    def commit(self, *, overwrite: bool) -> None:
        done = self.done()
        joined, self._joined = self._joined, None
        tmp = joined.finish(done) if joined is not None else None
        try:
            if tmp is None:  # a resumed job, or chunks of changing schemas: joined now
                folder = os.path.dirname(self.path) if self.local else None
                fd, tmp = tempfile.mkstemp(prefix=".shipyard-", suffix=f".{self.kind}", dir=folder)
                os.close(fd)
                parts = [self._part(i) for i in range(done)]
                if self.kind == "parquet":
                    self._join_parquet(parts, tmp)
                else:
                    self._join_csv(parts, tmp)
            if self.exists() and not overwrite:  # appeared while the job ran
                raise Conflict(f"{self.target} appeared while the job ran; --overwrite replaces it")
            if self.local:
                os.replace(tmp, self.path)
            else:
                self.fs.put_file(tmp, self.path)
        finally:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
        self.discard()

    def _join_parquet(self, parts: list[str], tmp: str) -> None:
        import pyarrow.parquet as pq

        def read(part: str) -> pa.Table:
            with self.fs.open(part, "rb") as fh:
                return pa.ipc.open_file(pa.py_buffer(fh.read())).read_all()

        # a column null in one chunk and typed in another (a SQL source) takes the type
        schema = pa.unify_schemas([read(p).schema for p in parts], promote_options="permissive")
        with pq.ParquetWriter(tmp, schema, **_parquet_options(schema)) as writer:
            for part in parts:  # one chunk in memory at a time
                writer.write_table(read(part).cast(schema))

    def _join_csv(self, parts: list[str], tmp: str) -> None:
        header = self.staged() or {}
        with open(tmp, "wb") as out:
            out.write((",".join(_csv_quote(c) for c in header.get("columns", [])) + "\n").encode())
            for part in parts:
                with self.fs.open(part, "rb") as fh:
                    while block := fh.read(8 << 20):
                        out.write(block)

    def discard(self) -> None:
        if self.fs.exists(self.staging):
            self.fs.rm(self.staging, recursive=True)


def _parquet_options(schema: pa.Schema) -> dict[str, Any]:
    """zstd, with dictionaries only where values repeat (a text or flag column, the model and
    version): building one for unique values (prediction ids, scores, row ids) costs half the
    write and makes the file bigger."""
    repeating = [
        f.name
        for f in schema
        if f.name in ("model", "version", "label")
        or pa.types.is_string(f.type)
        or pa.types.is_large_string(f.type)
        or pa.types.is_dictionary(f.type)
        or pa.types.is_boolean(f.type)
    ]
    return {
        "compression": "zstd",
        "use_dictionary": [n for n in repeating if n != "prediction_id"],
    }


class _Joined:
    """The Parquet output written as its chunks are staged, in order, so that committing a job
    that ran from its first chunk to its last is a rename. Anything else (a chunk out of
    order, a schema that changes between chunks) abandons it; the commit then joins the
    staged chunks instead."""

    def __init__(self, folder: str | None) -> None:
        fd, self.path = tempfile.mkstemp(prefix=".shipyard-", suffix=".parquet", dir=folder)
        os.close(fd)
        self.writer: Any = None
        self.next = 0

    def add(self, index: int, table: pa.Table) -> bool:
        import pyarrow.parquet as pq

        if index != self.next or (self.writer is not None and table.schema != self.writer.schema):
            self.abandon()
            return False
        if self.writer is None:
            self.writer = pq.ParquetWriter(
                self.path, table.schema, **_parquet_options(table.schema)
            )
        self.writer.write_table(table)
        self.next += 1
        return True

    def finish(self, chunks: int) -> str | None:
        """The written file, if it holds exactly the `chunks` staged chunks."""
        if self.writer is None or self.next != chunks:
            self.abandon()
            return None
        self.writer.close()
        self.writer = None
        return self.path

    def abandon(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if os.path.exists(self.path):
            os.unlink(self.path)


def _csv_quote(name: str) -> str:
    return f'"{name.replace(chr(34), chr(34) * 2)}"' if any(c in name for c in ',"\n') else name


# -- tables --------------------------------------------------------------------------------------


def column_kind(arrow_type: pa.DataType) -> str:
    """The word a staged job keeps for an output column's type (what a table column becomes)."""
    if pa.types.is_boolean(arrow_type):
        return "bool"
    if pa.types.is_integer(arrow_type):
        return "int"
    if pa.types.is_floating(arrow_type):
        return "float"
    if pa.types.is_timestamp(arrow_type):
        return "timestamptz" if arrow_type.tz is not None else "timestamp"
    if pa.types.is_date(arrow_type):
        return "date"
    return "text"


def _sql_type(kind: str) -> Any:
    import sqlalchemy as sa

    return {
        "bool": sa.Boolean(),
        "int": sa.BigInteger(),
        "float": sa.Double(),
        "timestamptz": sa.DateTime(timezone=True),
        "timestamp": sa.DateTime(),
        "date": sa.Date(),
    }.get(kind, sa.Text())


class TableOutput(Output):
    """A table in any database SQLAlchemy reaches (created by the job; `--overwrite` replaces
    it). Chunks are staged in `TABLE__partial` with their chunk and row number, so the table
    is made in one transaction in the input's order."""

    def __init__(self, db: str, table: str) -> None:
        import sqlalchemy as sa

        self.db = db
        self.table = table
        self.description = f"table {table} in {redact_url(db)}"
        try:
            self.engine = sa.create_engine(db)
        except (sa.exc.ArgumentError, ValueError) as error:
            raise InvalidInput(f"{redact_url(db)} is not a database URL: {error}") from None
        self.schema_name, _, self.name = table.rpartition(".")
        self.meta = sa.MetaData(schema=self.schema_name or None)
        self.staging_name = f"{self.name}__partial"
        self._job: dict[str, Any] | None = None
        self.jobs = sa.Table(
            f"{self.name}__partial_job", self.meta, sa.Column("job", sa.Text, nullable=False)
        )

    def close(self) -> None:
        self.engine.dispose()

    def _connect(self) -> Any:
        import sqlalchemy as sa

        try:
            return self.engine.begin()
        except sa.exc.OperationalError as error:
            raise ServiceUnavailable(
                f"cannot reach {redact_url(self.db)}: {error.orig}; check that the database is "
                "up and the URL is right"
            ) from None

    def _has(self, name: str) -> bool:
        import sqlalchemy as sa

        try:
            return bool(sa.inspect(self.engine).has_table(name, schema=self.schema_name or None))
        except sa.exc.OperationalError as error:
            raise ServiceUnavailable(f"cannot reach {redact_url(self.db)}: {error.orig}") from None

    def exists(self) -> bool:
        return self._has(self.name)

    def staged(self) -> dict[str, Any] | None:
        import sqlalchemy as sa

        if not self._has(self.jobs.name):
            return None
        with self._connect() as conn:
            text = conn.execute(sa.select(self.jobs.c.job)).scalar()
        return orjson.loads(text) if text else None

    def _staging(self, job: dict[str, Any]) -> Any:
        import sqlalchemy as sa

        existing = self.meta.tables.get(
            f"{self.schema_name}.{self.staging_name}" if self.schema_name else self.staging_name
        )
        if existing is not None:
            return existing
        columns = [sa.Column(name, _sql_type(kind)) for name, kind in job["column_types"]]
        return sa.Table(
            self.staging_name,
            self.meta,
            sa.Column("_chunk", sa.Integer, nullable=False, index=True),
            sa.Column("_row", sa.Integer, nullable=False),
            *columns,
        )

    def stage(self, job: dict[str, Any]) -> None:
        self.discard()
        staging = self._staging(job)
        with self._connect() as conn:
            staging.create(conn)
            self.jobs.create(conn)
            conn.execute(self.jobs.insert().values(job=orjson.dumps(job).decode()))
        self._job = job

    def done(self) -> int:
        import sqlalchemy as sa

        if not self._has(self.staging_name):
            return 0
        staging = sa.Table(self.staging_name, sa.MetaData(schema=self.schema_name or None),
                           autoload_with=self.engine)  # fmt: skip
        with self._connect() as conn:
            found = {r[0] for r in conn.execute(sa.select(staging.c._chunk).distinct())}
        count = 0
        while count in found:
            count += 1
        return count

    def write(self, index: int, table: pa.Table) -> None:
        staging = self._staging(self._job_of())
        rows = table.to_pylist()
        for i, row in enumerate(rows):
            row["_chunk"], row["_row"] = index, i
        with self._connect() as conn:
            conn.execute(staging.delete().where(staging.c._chunk == index))
            if rows:
                conn.execute(staging.insert(), rows)

    def _job_of(self) -> dict[str, Any]:
        job = self._job or self.staged()
        if job is None:
            raise Conflict(f"the staging tables of {self.description} went away while it ran")
        self._job = job
        return job

    def commit(self, *, overwrite: bool) -> None:
        import sqlalchemy as sa

        job = self._job_of()
        quote = self.engine.dialect.identifier_preparer.quote
        prefix = f"{quote(self.schema_name)}." if self.schema_name else ""
        listed = ", ".join(quote(name) for name, _ in job["column_types"])
        with self._connect() as conn:
            if self.exists():
                if not overwrite:
                    raise Conflict(
                        f"{self.description} appeared while the job ran; --overwrite replaces it"
                    )
                conn.execute(sa.text(f"DROP TABLE {prefix}{quote(self.name)}"))
            conn.execute(
                sa.text(
                    f"CREATE TABLE {prefix}{quote(self.name)} AS SELECT {listed} FROM "
                    f"{prefix}{quote(self.staging_name)} ORDER BY _chunk, _row"
                )
            )
            conn.execute(sa.text(f"DROP TABLE {prefix}{quote(self.staging_name)}"))
            conn.execute(sa.text(f"DROP TABLE {prefix}{quote(self.jobs.name)}"))

    def discard(self) -> None:
        import sqlalchemy as sa

        quote = self.engine.dialect.identifier_preparer.quote
        prefix = f"{quote(self.schema_name)}." if self.schema_name else ""
        with self._connect() as conn:
            for name in (self.staging_name, self.jobs.name):
                conn.execute(sa.text(f"DROP TABLE IF EXISTS {prefix}{quote(name)}"))
        self._job = None


def open_output(target: str, *, db: str | None = None) -> Output:
    """A file (a path or URL ending .parquet/.csv) or, with `db`, a table of that name."""
    if db is not None and _kind_of(target) is None and "://" not in target:
        return TableOutput(db, target)
    return FileOutput(target)

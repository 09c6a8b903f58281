"""What a batch job reads: Parquet or CSV files (a path or any fsspec URL, a file or a folder
of them), a SQL table or query through SQLAlchemy. Each reads as a stream of Arrow tables of
exactly `rows` rows (the last may be shorter), from any row on, so a job that stopped resumes
where its output ends without holding more than a chunk in memory.

    Input.open(source, query=..., db=...)  ->  .schema, .total_rows, .identity()
    .chunks(rows, skip)                     ->  Iterator[pa.Table]
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from shipyard.core.errors import InvalidInput, MissingDependency, ServiceUnavailable
from shipyard.core.redaction import redact_url

__all__ = ["FileInput", "Input", "SqlInput", "open_input"]

FILE_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}
_READ_ROWS = 65_536  # rows per fetch from a SQL source, re-cut into the job's chunks
_BUFFER = 1 << 20  # bytes read at a time from each column of a Parquet row group


class Input(ABC):
    """A job's rows, in an order that is the same every time they are read."""

    description: str

    @property
    @abstractmethod
    def schema(self) -> pa.Schema:
        """The columns and their Arrow types."""

    @property
    def total_rows(self) -> int | None:
        """How many rows, when known without reading them."""
        return None

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """What names these rows as they are now: a job resumes only over the same identity."""

    @abstractmethod
    def _batches(self, skip: int, rows: int) -> Iterator[pa.RecordBatch | pa.Table]:
        """The rows from row `skip` on (it may start earlier: `chunks` cuts what is left), in
        batches of about `rows` where the source lets the reader choose (a chunk that is one
        batch is not copied)."""

    def _skipped(self, skip: int) -> int:
        """How many rows `_batches(skip)` has skipped itself."""
        return 0

    @abstractmethod
    def close(self) -> None:
        """Let go of open files and connections (a database's pool)."""

    def chunks(self, rows: int, skip: int = 0) -> Iterator[pa.Table]:
        """Tables of exactly `rows` rows (the last may be shorter) from row `skip` on."""
        drop = skip - self._skipped(skip)
        pending: list[pa.Table] = []
        held = 0
        for batch in self._batches(skip, rows):
            table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
            if drop:
                cut = min(drop, table.num_rows)
                table, drop = table.slice(cut), drop - cut
            if not table.num_rows:
                continue
            pending.append(table)
            held += table.num_rows
            while held >= rows:
                whole = pa.concat_tables(pending) if len(pending) > 1 else pending[0]
                yield whole.slice(0, rows).combine_chunks()
                rest = whole.slice(rows)
                pending, held = ([rest] if rest.num_rows else []), rest.num_rows
        if held:
            whole = pa.concat_tables(pending) if len(pending) > 1 else pending[0]
            yield whole.combine_chunks()


def _fs_of(url: str) -> tuple[Any, str]:
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(url)
    except ImportError as error:
        scheme = url.split("://", 1)[0]
        raise MissingDependency(
            f"reading {scheme}:// URLs needs its fsspec backend ({error}); install it, e.g. "
            "pip install 's3fs' for s3://"
        ) from None
    except ValueError as error:
        raise InvalidInput(f"cannot read {url!r}: {error}") from None
    return fs, path


def _is_local(fs: Any) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocol or "local" in protocol


class FileInput(Input):
    """Parquet or CSV: one file, or every file of that kind in a folder (in name order)."""

    def __init__(self, source: str, *, columns: dict[str, pa.DataType] | None = None) -> None:
        self.source = source
        self.description = source
        self.fs, path = _fs_of(source)
        try:
            if self.fs.isdir(path):
                found = sorted(
                    p for p in self.fs.find(path) if _kind_of(p) and not _hidden(p, path)
                )
                if not found:
                    raise InvalidInput(
                        f"{source} is a folder with no .parquet or .csv files in it; point "
                        "--input at a file or at a folder of them"
                    )
            elif self.fs.exists(path):
                found = [path]
            else:
                raise InvalidInput(
                    f"{source} does not exist; check the path (a file, a folder of Parquet or "
                    "CSV files, or an fsspec URL such as s3://bucket/data.parquet)"
                )
        except OSError as error:
            raise ServiceUnavailable(f"cannot reach {source}: {error}") from None
        kinds = {_kind_of(p) for p in found}
        if None in kinds or len(kinds) != 1:
            raise InvalidInput(
                f"cannot read {source}: name Parquet (.parquet, .pq) or CSV (.csv) files, "
                "one kind per job"
            )
        self.kind: str = kinds.pop() or ""
        self.files = found
        self.csv_types = columns or {}  # CSV columns read as the model's types
        self._schema: pa.Schema | None = None
        self._rows: list[int] | None = None
        self._open: dict[str, tuple[Any, Any]] = {}
        self._copies: dict[str, str] = {}  # remote CSV file -> its local copy, until `close`
        self._spool: tempfile.TemporaryDirectory[str] | None = None

    # -- what the files hold -----------------------------------------------------------------

    def _parquet(self, path: str) -> Any:
        """The file's reader, opened once (its footer read once) until `close`."""
        import pyarrow.parquet as pq

        found = self._open.get(path)
        if found is not None:
            return found[1]
        # a local file is read by Arrow itself (no Python file object in the way), each
        # column through a 1 MiB buffer: a row group is never held whole (measured on 1M-row
        # groups of 31 columns: 284 MB peak against 542 MB prefetching whole row groups)
        handle = None if _is_local(self.fs) else self.fs.open(path, "rb")
        try:
            reader = pq.ParquetFile(
                handle if handle is not None else path, pre_buffer=False, buffer_size=_BUFFER
            )
        except (pa.ArrowInvalid, OSError) as error:
            if handle is not None:
                handle.close()
            raise InvalidInput(f"{path} is not a readable Parquet file: {error}") from None
        self._open[path] = (handle, reader)
        return reader

    def _local(self, path: str) -> str:
        """The path of a local file holding `path`'s bytes: the file itself, or a copy of a
        remote one made once, in this thread. Arrow's CSV reader reads ahead in a thread of its
        own; given a Python file object, that thread calls into Python, and one still reading
        when the interpreter shuts down (a reader let go of early: an error, a schema read from
        the first block) aborts the process. A native file keeps that thread out of Python."""
        if _is_local(self.fs):
            return path
        copy = self._copies.get(path)
        if copy is None:
            if self._spool is None:
                self._spool = tempfile.TemporaryDirectory(prefix="shipyard-batch-")
            copy = str(Path(self._spool.name) / f"{len(self._copies)}.csv")
            try:
                self.fs.get_file(path, copy)
            except OSError as error:
                raise InvalidInput(f"cannot read {path}: {error}") from None
            self._copies[path] = copy
        return copy

    def close(self) -> None:
        for handle, reader in self._open.values():
            if handle is not None:
                handle.close()
            else:
                reader.close()
        self._open.clear()
        if self._spool is not None:
            self._spool.cleanup()
            self._spool = None
            self._copies.clear()

    @property
    def schema(self) -> pa.Schema:
        if self._schema is None:
            if self.kind == "parquet":
                self._schema = self._parquet(self.files[0]).schema_arrow
            else:
                first = next(iter(self._csv(self.files[0])), None)
                if first is None:
                    raise InvalidInput(f"{self.files[0]} has no rows to score")
                self._schema = first.schema
        return self._schema

    @property
    def total_rows(self) -> int | None:
        if self.kind != "parquet":
            return None
        if self._rows is None:
            self._rows = [self._parquet(p).metadata.num_rows for p in self.files]
        return sum(self._rows)

    def identity(self) -> dict[str, Any]:
        listed = []
        for path in self.files:
            info = self.fs.info(path)
            listed.append(
                [path, info.get("size"), str(info.get("mtime") or info.get("LastModified") or "")]
            )
        digest = hashlib.sha256(repr(listed).encode()).hexdigest()
        return {"input": self.source, "kind": self.kind, "files": len(listed), "sha256": digest}

    # -- reading ---------------------------------------------------------------------------------

    def _skipped(self, skip: int) -> int:
        if self.kind != "parquet" or not skip:
            return 0
        skipped = 0
        for path in self.files:
            meta = self._parquet(path).metadata
            for group in range(meta.num_row_groups):
                n = meta.row_group(group).num_rows
                if skipped + n > skip:
                    return skipped
                skipped += n
        return skipped

    def _batches(self, skip: int, rows: int) -> Iterator[pa.RecordBatch | pa.Table]:
        if self.kind == "csv":
            for path in self.files:
                yield from self._csv(path)
            return
        skipped = 0
        reading = False  # from the first row group holding row `skip` on, every group is read
        for path in self.files:
            parquet = self._parquet(path)
            meta = parquet.metadata
            groups = []
            for group in range(meta.num_row_groups):
                n = meta.row_group(group).num_rows
                if not reading and skipped + n <= skip:
                    skipped += n  # whole row groups before the resume point are never read
                else:
                    reading = True
                    groups.append(group)
            for group in groups:
                try:
                    yield from parquet.iter_batches(batch_size=rows, row_groups=[group])
                except (pa.ArrowInvalid, OSError) as error:
                    raise InvalidInput(f"cannot read {path}: {error}") from None

    def _csv(self, path: str) -> Iterator[pa.RecordBatch]:
        import pyarrow.csv as pacsv

        try:
            handle = pa.input_stream(self._local(path), compression=None)
        except OSError as error:
            raise InvalidInput(f"cannot read {path}: {error}") from None
        try:
            reader = pacsv.open_csv(
                handle,
                read_options=pacsv.ReadOptions(block_size=8 << 20),
                convert_options=pacsv.ConvertOptions(column_types=self.csv_types),
            )
            yield from reader
        except pa.ArrowInvalid as error:
            raise InvalidInput(
                f"cannot read {path} as CSV: {error}; fix that row or give the column a "
                "consistent type"
            ) from None
        except OSError as error:
            raise InvalidInput(f"cannot read {path}: {error}") from None
        finally:
            handle.close()


def _kind_of(path: str) -> str | None:
    for suffix, kind in FILE_SUFFIXES.items():
        if path.lower().endswith(suffix):
            return kind
    return None


def _hidden(path: str, root: str) -> bool:
    """Files a writer keeps beside its output (`_SUCCESS`, `.crc`, `_tmp` folders)."""
    return any(part.startswith(("_", ".")) for part in path[len(root) :].split("/") if part)


_ORDER_BY = re.compile(r"\border\s+by\b", re.IGNORECASE)


class SqlInput(Input):
    """A table or a query through SQLAlchemy. A table is read in its primary key's order; a
    query in the order it gives, so only a query with ORDER BY (or a `key`) can resume: any
    other starts over after a stop (still scoring every row exactly once)."""

    def __init__(
        self, db: str, *, table: str | None = None, query: str | None = None, key: str | None = None
    ) -> None:
        import sqlalchemy as sa

        if (table is None) == (query is None):
            raise InvalidInput("name a table or give a query to read, not both")
        self.db = db
        try:
            self.engine = sa.create_engine(db)
        except (sa.exc.ArgumentError, ValueError) as error:
            raise InvalidInput(
                f"{redact_url(db)} is not a database URL SQLAlchemy knows ({error}); "
                "e.g. postgresql+psycopg://user@host/db or sqlite:///data.db"
            ) from None
        except ImportError as error:
            raise MissingDependency(f"the database driver is not installed: {error}") from None
        self.table = table
        self.key = key
        if table is not None:
            self.sql = self._table_sql(table)
            self.description = f"table {table} in {redact_url(db)}"
            self.ordered = True
        else:
            assert query is not None
            text = query.strip().rstrip(";")
            self.ordered = key is not None or bool(_ORDER_BY.search(text))
            self.sql = f"SELECT * FROM ({text}) AS q ORDER BY {self._quote(key)}" if key else text
            self.description = f"query on {redact_url(db)}"
        self._schema: pa.Schema | None = None

    def close(self) -> None:
        self.engine.dispose()

    def _quote(self, name: str) -> str:
        return str(self.engine.dialect.identifier_preparer.quote(name))

    def _table_sql(self, table: str) -> str:
        import sqlalchemy as sa

        try:
            inspector = sa.inspect(self.engine)
            schema, _, name = table.rpartition(".")
            if not inspector.has_table(name, schema=schema or None):
                raise InvalidInput(
                    f"there is no table {table!r} in {redact_url(self.db)}; check its name "
                    "(schema.table where it is not in the default schema)"
                )
            key = inspector.get_pk_constraint(name, schema=schema or None).get(
                "constrained_columns"
            ) or ([self.key] if self.key else [])
        except sa.exc.OperationalError as error:
            raise ServiceUnavailable(
                f"cannot reach {redact_url(self.db)}: {error.orig}; check that the database "
                "is up and the URL is right"
            ) from None
        quoted = ".".join(self._quote(p) for p in table.split("."))
        order = f" ORDER BY {', '.join(self._quote(k) for k in key)}" if key else ""
        if not key:  # a table without a key has no stable order: such a job starts over
            self.ordered = False
        return f"SELECT * FROM {quoted}{order}"

    @property
    def schema(self) -> pa.Schema:
        if self._schema is None:
            first = next(self._read(0, limit=1), None)
            if first is None:
                raise InvalidInput(f"the {self.description} has no rows to score")
            self._schema = first.schema
        return self._schema

    @property
    def total_rows(self) -> int | None:
        if self.table is None:
            return None
        import sqlalchemy as sa

        with self.engine.connect() as conn:
            return int(
                conn.execute(sa.text(f"SELECT count(*) FROM ({self.sql}) AS c")).scalar_one()
            )

    def identity(self) -> dict[str, Any]:
        digest = hashlib.sha256(f"{redact_url(self.db)}\n{self.sql}".encode()).hexdigest()
        return {"input": self.description, "kind": "sql", "sha256": digest}

    def _skipped(self, skip: int) -> int:
        return skip if self.ordered else 0

    def _batches(self, skip: int, rows: int) -> Iterator[pa.Table]:
        return self._read(skip if self.ordered else 0)

    def _read(self, offset: int, limit: int | None = None) -> Iterator[pa.Table]:
        import sqlalchemy as sa

        sql = self.sql
        if limit is not None or offset:
            # LIMIT with the largest integer: SQLite and MySQL take no OFFSET without a LIMIT
            sql = f"SELECT * FROM ({sql}) AS r LIMIT {limit if limit is not None else 2**63 - 1}"
            sql += f" OFFSET {offset}" if offset else ""
        try:
            with self.engine.connect() as conn:
                result = conn.execution_options(stream_results=True).execute(sa.text(sql))
                names = list(result.keys())
                while rows := result.fetchmany(_READ_ROWS):
                    yield pa.table(
                        [pa.array(list(values)) for values in zip(*rows, strict=True)], names=names
                    )
        except sa.exc.OperationalError as error:
            raise ServiceUnavailable(
                f"cannot read the {self.description}: {error.orig}; check that the database "
                "is up and the URL is right"
            ) from None
        except sa.exc.ProgrammingError as error:
            raise InvalidInput(f"the {self.description} failed: {error.orig}") from None


def open_input(
    source: str | None,
    *,
    query: str | None = None,
    db: str | None = None,
    key: str | None = None,
    columns: dict[str, pa.DataType] | None = None,
) -> Input:
    """The input a job names: a file or folder (`source`), a table in `db` (`source` is its
    name), or a `query` on `db`."""
    if query is not None:
        if db is None:
            raise InvalidInput("--query needs --db URL, the database to run it on")
        if source is not None:
            raise InvalidInput("give --input or --query, not both")
        return SqlInput(db, query=query, key=key)
    if source is None:
        raise InvalidInput("say what to score: --input PATH|URL, or --query SQL with --db URL")
    if db is not None and _kind_of(source) is None and "://" not in source:
        return SqlInput(db, table=source, key=key)
    return FileInput(source, columns=columns)

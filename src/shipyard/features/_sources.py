"""A view's source rows as a DuckDB relation: files read where they lie (any fsspec URL),
SQL queries and prediction logs staged as Parquet in bounded chunks, the row-level
transform applied chunk by chunk, and every declared column checked before use."""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shipyard.core.errors import InvalidInput, UserCodeFailed
from shipyard.features._definitions import (
    FeatureView,
    FileSource,
    LogSource,
    SqlSource,
)

__all__ = ["CHUNK_ROWS", "Relation", "SourceReader", "connect", "literal", "one", "quote"]

CHUNK_ROWS = 100_000


def quote(name: str) -> str:
    """A SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def one(conn: duckdb.DuckDBPyConnection, sql: str) -> tuple[Any, ...]:
    """The single row `sql` answers (the result is consumed, so the connection is free)."""
    rows = conn.execute(sql).fetchall()
    return tuple(rows[0]) if rows else ()


def connect(workdir: Path, memory_limit: str | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB that spills to `workdir` past `memory_limit` (e.g. "2GB")."""
    conn = duckdb.connect()
    conn.execute("SET TimeZone = 'UTC'")
    conn.execute(f"SET temp_directory = {literal(str(workdir))}")
    conn.execute("SET preserve_insertion_order = false")
    if memory_limit:
        try:
            conn.execute(f"SET memory_limit = {literal(memory_limit)}")
        except duckdb.Error:
            raise InvalidInput(
                f"memory limit {memory_limit!r} is not a size; write it like 512MB or 4GB"
            ) from None
    return conn


@dataclass
class Relation:
    """A source as DuckDB reads it: `sql` goes after FROM; `columns` are its names and types."""

    sql: str
    columns: dict[str, str]
    files: dict[str, list[Any]] = field(default_factory=dict)
    """The files read (path -> [size, modified]), for an incremental run to skip next time."""


class SourceReader:
    """Reads views' sources into one DuckDB connection.

    Args:
        conn: the connection the relations belong to.
        workdir: where staged sources (SQL results, logs, transformed rows) are written.
        log_table: the prediction log of a model, for `LogSource`.
    """

    def __init__(
        self,
        conn: duckdb.DuckDBPyConnection,
        workdir: Path,
        log_table: Callable[[str], pa.Table] | None = None,
    ) -> None:
        self.conn = conn
        self.workdir = workdir
        self.log_table = log_table
        self._stages = 0
        self._filesystems: set[str] = set()

    def relation(
        self,
        view: FeatureView,
        *,
        skip_files: dict[str, list[Any]] | None = None,
        since: datetime | None = None,
    ) -> Relation:
        """The view's source rows (transformed), with its declared columns checked.

        `skip_files`: files of a file source read before, unchanged since, left out.
        `since`: a SQL source or a log is read from this event time on (the database filters
        the rows; a log is filtered as it is read), else whole.
        """
        source = view.source
        files: dict[str, list[Any]] = {}
        if isinstance(source, FileSource):
            files = self._files(view, source)
            fresh = [p for p, info in files.items() if (skip_files or {}).get(p) != info]
            sql = self._read_files(source, fresh) if fresh else None
            if sql is None:
                sql = self._empty(view, source, files)
            if callable(view.transform):
                staged = self._stage(view, self._batches_of(sql), empty_ok=True)
                if staged is None:  # no rows: the transform's columns, from an empty frame
                    empty = self.conn.sql(f"SELECT * FROM {sql} LIMIT 0").to_arrow_table()
                    staged = self._staged(view, iter([empty.to_pandas()]))
                sql = staged
        elif isinstance(source, SqlSource):
            staged = self._stage(view, self._sql_batches(view, source, since), empty_ok=True)
            # nothing at or after `since` (its rows were deleted): the whole source then
            sql = staged or self._staged(view, self._sql_batches(view, source, None))
        elif isinstance(source, LogSource):
            staged = self._stage(view, self._log_batches(view, source, since), empty_ok=True)
            sql = staged or self._staged(view, self._log_batches(view, source, None))
        else:  # pragma: no cover - the definitions admit no other kind
            raise InvalidInput(f"view {view.name!r}: unknown source {source!r}")
        if isinstance(view.transform, str):  # the same query offline and online
            sql = f"(WITH source AS (SELECT * FROM {sql}) {view.transform})"
        columns = self._describe(view, sql)
        check_columns(view, columns)
        return Relation(sql, columns, files)

    # -- files ----------------------------------------------------------------------------------

    def _files(self, view: FeatureView, source: FileSource) -> dict[str, list[Any]]:
        suffix = ".csv" if source.format == "csv" else ".parquet"
        path = source.path
        if "://" in path and not path.startswith("file://"):
            import fsspec

            fs, root = fsspec.core.url_to_fs(path)
            protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
            if any(c in root for c in "*?["):
                found = fs.glob(root)
            elif fs.isdir(root):
                found = [p for p in fs.find(root) if p.endswith(suffix)]
            else:
                found = [root] if fs.exists(root) else []
            if protocol not in self._filesystems:
                self.conn.register_filesystem(fs)
                self._filesystems.add(protocol)
            infos = {}
            for name in sorted(found):
                info = fs.info(name)
                mtime = info.get("mtime") or info.get("LastModified") or info.get("created")
                infos[f"{protocol}://{name}"] = [int(info.get("size") or 0), str(mtime)]
        else:
            local = path.removeprefix("file://")
            if any(c in local for c in "*?["):
                found = glob.glob(local, recursive=True)
            elif os.path.isdir(local):
                found = [str(p) for p in Path(local).rglob(f"*{suffix}")]
            else:
                found = [local] if os.path.exists(local) else []
            infos = {}
            for name in sorted(found):
                stat = os.stat(name)
                infos[os.path.abspath(name)] = [stat.st_size, stat.st_mtime_ns]
        if not infos:
            raise InvalidInput(
                f"view {view.name!r}: its source {path} has no {source.format} files; check the "
                "path (a folder is read with every file under it)"
            )
        return infos

    def _read_files(self, source: FileSource, paths: list[str]) -> str:
        listed = "[" + ", ".join(literal(p) for p in paths) + "]"
        if source.format == "csv":
            return f"read_csv({listed}, union_by_name = true)"
        return f"read_parquet({listed}, union_by_name = true)"

    def _empty(self, view: FeatureView, source: FileSource, files: dict[str, list[Any]]) -> str:
        """No file changed: the source's columns with no rows (the first file's schema)."""
        first = self._read_files(source, [next(iter(files))])
        return f"(SELECT * FROM {first} LIMIT 0)"

    def count_before(self, view: FeatureView, moment: datetime) -> int:
        """Rows of a SQL source or a log with an event time before `moment`, counted where
        they lie (a rise between two runs means rows arrived late, older than the watermark)."""
        source = view.source
        if isinstance(source, SqlSource):
            import sqlalchemy as sa

            query = (
                f"SELECT count(*) FROM ({source.query}) AS shipyard_source "
                f"WHERE {quote(view.timestamp_field)} < :moment"
            )
            engine = sa.create_engine(source.url)
            try:
                with engine.connect() as conn:
                    bound = {"moment": moment.astimezone(UTC).replace(tzinfo=None)}
                    return int(conn.execute(sa.text(query), bound).scalar_one())
            except sa.exc.SQLAlchemyError as error:
                raise InvalidInput(
                    f"view {view.name!r}: its SQL source failed: "
                    f"{str(getattr(error, 'orig', None) or error).splitlines()[0][:300]}"
                ) from None
            finally:
                engine.dispose()
        if isinstance(source, LogSource) and self.log_table is not None:
            table = self.log_table(source.model)
            if table.num_rows == 0:
                return 0
            bound = pa.scalar(moment, table.schema.field("ts").type)
            return int(pc.sum(pc.less(table.column("ts"), bound)).as_py() or 0)
        return 0

    # -- staged sources -------------------------------------------------------------------------

    def _batches_of(self, sql: str) -> Iterator[pd.DataFrame]:
        reader = self.conn.sql(f"SELECT * FROM {sql}").to_arrow_reader(CHUNK_ROWS)
        assert reader is not None  # a SELECT has a result
        for batch in reader:
            yield batch.to_pandas()

    def _sql_batches(
        self, view: FeatureView, source: SqlSource, since: datetime | None
    ) -> Iterator[pd.DataFrame]:
        import sqlalchemy as sa

        query, params = source.query, {}
        if since is not None:  # bound as naive UTC, as SQLAlchemy writes times for any database
            query = (
                f"SELECT * FROM ({source.query}) AS shipyard_source "
                f"WHERE {quote(view.timestamp_field)} >= :since"
            )
            params = {"since": since.astimezone(UTC).replace(tzinfo=None)}
        try:
            engine = sa.create_engine(source.url)
        except Exception as error:
            raise InvalidInput(
                f"view {view.name!r}: cannot use the database URL of its SQL source ({error})"
            ) from None
        try:
            with engine.connect() as conn:
                yield from pd.read_sql(sa.text(query), conn, params=params, chunksize=CHUNK_ROWS)
        except sa.exc.SQLAlchemyError as error:
            raise InvalidInput(
                f"view {view.name!r}: its SQL source failed: "
                f"{str(getattr(error, 'orig', None) or error).splitlines()[0][:300]}"
            ) from None
        finally:
            engine.dispose()

    def _log_batches(
        self, view: FeatureView, source: LogSource, since: datetime | None
    ) -> Iterator[pd.DataFrame]:
        if self.log_table is None:
            raise InvalidInput(f"view {view.name!r}: prediction logs are not readable here")
        table = self.log_table(source.model)
        if since is not None and table.num_rows:
            table = table.filter(
                pc.greater_equal(
                    table.column("ts"), pa.scalar(since, table.schema.field("ts").type)
                )
            )
            if table.num_rows == 0:
                return
        if table.num_rows == 0:
            raise InvalidInput(
                f"view {view.name!r}: the prediction log of {source.model!r} is empty"
            )
        flat = {"ts": table.column("ts")}
        if "features" in table.column_names:
            features = pa.Table.from_struct_array(table.column("features").combine_chunks())
            flat.update({name: features.column(name) for name in features.column_names})
        for name in ("prediction_id", "version", "label", "value", "score"):
            if name in table.column_names:
                flat[name] = table.column(name)
        logged = pa.table(flat)
        for batch in logged.to_batches(CHUNK_ROWS):
            yield batch.to_pandas()

    def _staged(self, view: FeatureView, frames: Iterator[pd.DataFrame]) -> str:
        staged = self._stage(view, frames)
        assert staged is not None  # without empty_ok, no rows raise
        return staged

    def _stage(
        self, view: FeatureView, frames: Iterator[pd.DataFrame], *, empty_ok: bool = False
    ) -> str | None:
        """Write `frames` (transformed) to one Parquet file; its reader (None for no rows,
        when `empty_ok`)."""
        self._stages += 1
        path = self.workdir / f"staged_{view.name}_{self._stages}.parquet"
        writer: pq.ParquetWriter | None = None
        schema: pa.Schema | None = None
        try:
            for frame in frames:
                if empty_ok and frame.empty:
                    continue  # an empty chunk has no column types to keep
                if callable(view.transform):
                    frame = _transformed(view, frame)
                table = pa.Table.from_pandas(frame, preserve_index=False)
                if writer is None:
                    schema = table.schema
                    writer = pq.ParquetWriter(path, schema)
                elif table.schema != schema:
                    try:
                        table = table.cast(schema)
                    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
                        raise InvalidInput(
                            f"view {view.name!r}: its source's column types change between "
                            f"chunks ({table.schema} after {schema}); cast them in the source"
                        ) from None
                writer.write_table(table)
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            if empty_ok:
                return None
            raise InvalidInput(f"view {view.name!r}: its source returned no rows")
        return f"read_parquet({literal(str(path))})"

    # -- columns --------------------------------------------------------------------------------

    def _describe(self, view: FeatureView, sql: str) -> dict[str, str]:
        try:
            rows = self.conn.execute(f"DESCRIBE SELECT * FROM {sql}").fetchall()
        except duckdb.Error as error:
            raise InvalidInput(
                f"view {view.name!r}: cannot read its source {view.source.spec()}: "
                f"{str(error).splitlines()[0][:300]}"
            ) from None
        return {str(r[0]): str(r[1]) for r in rows}


def _transformed(view: FeatureView, frame: pd.DataFrame) -> pd.DataFrame:
    assert callable(view.transform)
    try:
        out = view.transform(frame)
    except Exception as error:
        name = getattr(view.transform, "__name__", "transform")
        raise UserCodeFailed.raised(f"transform of view {view.name!r}", name, error) from error
    if not isinstance(out, pd.DataFrame):
        raise InvalidInput(
            f"view {view.name!r}: its transform returned {type(out).__name__}, not a DataFrame"
        )
    return out


def check_columns(view: FeatureView, columns: dict[str, str]) -> None:
    """Every column the view declares is in its source, with a type that fits."""
    needed = {**dict.fromkeys(view.join_keys, "join key"), view.timestamp_field: "timestamp field"}
    if view.created_timestamp_field:
        needed[view.created_timestamp_field] = "created timestamp field"
    if view.aggregations:
        needed.update({a.column: f"column aggregated by {a.feature}" for a in view.aggregations})
    else:
        needed.update({f.name: "feature" for f in view.all_features})
    missing = [f"{name} ({role})" for name, role in needed.items() if name not in columns]
    if missing:
        raise InvalidInput(
            f"view {view.name!r}: its source has no column {', '.join(missing)}; it has "
            f"{', '.join(list(columns)[:30])}. Fix the view's definition or its source, then "
            "apply again"
        )
    for name in filter(None, (view.timestamp_field, view.created_timestamp_field)):
        kind = columns[name].upper()
        if not (kind.startswith("TIMESTAMP") or kind == "DATE" or kind == "VARCHAR"):
            raise InvalidInput(
                f"view {view.name!r}: its {name!r} column is {columns[name]}, not a timestamp; "
                "store times as timestamps (or ISO 8601 text)"
            )
    numeric = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "FLOAT", "DOUBLE", "DECIMAL",
               "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "BOOLEAN")  # fmt: skip
    for agg in view.aggregations:
        if agg.function in ("mean", "sum", "stddev") and not columns[agg.column].upper().startswith(
            numeric
        ):
            raise InvalidInput(
                f"view {view.name!r}: {agg.function} of {agg.column!r} needs numbers; the "
                f"column is {columns[agg.column]}"
            )

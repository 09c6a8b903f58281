"""Reading the logs back: DuckDB over the Parquet segments, on any artifact root.

A local root is scanned by DuckDB directly; a remote one (S3, ...) through pyarrow datasets
over fsspec, so no DuckDB extension has to be downloaded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds

from shipyard.store import ArtifactStore

__all__ = ["LogReader", "id_time"]


_ID = re.compile(r"^[0-9a-f]{32}$")


def id_time(prediction_id: str) -> datetime | None:
    """When a shipyard id was made (its first 12 hex digits are a millisecond clock); None for
    anything that is not 32 lower-case hex digits of a time a calendar can hold."""
    if not isinstance(prediction_id, str) or not _ID.match(prediction_id):
        return None
    try:
        return datetime.fromtimestamp(int(prediction_id[:12], 16) / 1000, UTC)
    except (ValueError, OverflowError, OSError):  # past the year 9999
        return None


class LogReader:
    """Queries over `logs/predictions` and `logs/labels` in an artifact store."""

    def __init__(self, store: ArtifactStore, *, threads: int | None = None) -> None:
        self.store = store
        self.threads = threads

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection for queries over the logs, using at most `threads` threads
        (a server keeps monitoring from taking every core from the prediction path)."""
        if self.threads is None:
            return duckdb.connect()
        return duckdb.connect(config={"threads": self.threads})

    def prediction_files(
        self, *, model: str | None = None, days: Iterable[str] | None = None
    ) -> list[str]:
        model_part = f"model={model}" if model else "model=*"
        if days is None:
            return self.store.glob(f"logs/predictions/{model_part}/date=*/*.parquet")
        wanted = sorted(set(days))
        if len(wanted) <= 3:
            files: list[str] = []
            for day in wanted:
                files += self.store.glob(f"logs/predictions/{model_part}/date={day}/*.parquet")
            return files
        # many days (ids from all over the calendar): one listing, filtered, not one per day
        keep = {f"date={day}" for day in wanted}
        every = self.store.glob(f"logs/predictions/{model_part}/date=*/*.parquet")
        return [f for f in every if f.rsplit("/", 2)[-2] in keep]

    def label_files(self) -> list[str]:
        return self.store.glob("logs/labels/date=*/*.parquet")

    def error_files(self, days: Iterable[str] | None = None) -> list[str]:
        if days is None:
            return self.store.glob("logs/errors/date=*/*.parquet")
        files: list[str] = []
        for day in sorted(set(days)):
            files += self.store.glob(f"logs/errors/date={day}/*.parquet")
        return files

    def relation(self, conn: duckdb.DuckDBPyConnection, files: list[str], name: str) -> bool:
        """Register `files` as view `name` in `conn`; False when there are none."""
        if not files:
            return False
        if self.store.is_local:
            paths = [str(self.store.local_path(f)) for f in files]
            relation = conn.read_parquet(paths, union_by_name=True, hive_partitioning=False)
            relation.create_view(name, replace=True)
        else:
            paths = [self.store._full(f) for f in files]
            with self.store.failures_explained(f"read {len(paths)} log segments"):
                dataset = ds.dataset(paths, filesystem=self.store.fs, format="parquet")
                # a dataset takes the first file's schema; segments differ (features, outputs)
                schema = pa.unify_schemas(
                    [f.physical_schema for f in dataset.get_fragments()],
                    promote_options="permissive",
                )
                dataset = ds.dataset(
                    paths, filesystem=self.store.fs, format="parquet", schema=schema
                )
            conn.register(name, dataset)
        return True

    def truth(self, conn: duckdb.DuckDBPyConnection, files: list[str]) -> bool:
        """Register view `truth` (prediction_id, truth) in `conn`: the latest label of each
        prediction among `files` (a label sent again replaces the earlier one); empty, and
        False, when there are no label files. The one query of "the label of a prediction"."""
        if not self.relation(conn, files, "labels"):
            conn.execute(
                "CREATE OR REPLACE TEMP VIEW truth AS "
                "SELECT NULL::VARCHAR AS prediction_id, NULL::VARCHAR AS truth WHERE false"
            )
            return False
        conn.execute(
            "CREATE OR REPLACE TEMP VIEW truth AS SELECT prediction_id, "
            "arg_max(label, received_at) AS truth FROM labels GROUP BY prediction_id"
        )
        return True

    def known_ids(self, ids: Iterable[str]) -> set[str]:
        """Which of `ids` are logged predictions (searching only the days the ids were made)."""
        return set(self.models_of(ids))

    def models_of(self, ids: Iterable[str]) -> dict[str, str]:
        """The model of each of `ids` that is a logged prediction (searching only the days the
        ids were made)."""
        return {pid: model for pid, (model, _) in self.predictions_of(ids).items()}

    def predictions_of(self, ids: Iterable[str]) -> dict[str, tuple[str, int]]:
        """The model and version of each of `ids` that is a logged prediction (searching only
        the days the ids were made)."""
        wanted = [i for i in ids if id_time(i) is not None]
        if not wanted:
            return {}
        days = set()
        for i in wanted:
            made = id_time(i)
            assert made is not None
            # a prediction is logged after its id is made (within the longest deadline, 60 s),
            # so one made just before midnight may sit in the next day's folder
            days |= {(made + timedelta(seconds=s)).strftime("%Y-%m-%d") for s in (-1, 0, 60)}
        files = self.prediction_files(days=days)
        conn = self.connect()
        try:
            if not self.relation(conn, files, "predictions"):
                return {}
            conn.register("wanted", pa.table({"prediction_id": wanted}))
            rows = conn.execute(
                "SELECT DISTINCT p.prediction_id, p.model, p.version FROM predictions p "
                "JOIN wanted w USING (prediction_id)"
            ).fetchall()
        finally:
            conn.close()
        return {r[0]: (r[1], int(r[2])) for r in rows}

    def labels_of(
        self, ids: Iterable[str], *, made: Mapping[str, datetime] | None = None
    ) -> dict[str, str]:
        """The latest logged label (as text) of each of `ids` that has one. A label comes
        after its prediction, so only the label days from the earliest prediction's onward are
        read. `made`: when predictions whose ids do not tell it were made (devices' uploads)."""
        made = made or {}
        times = {i: made.get(i) or id_time(i) for i in set(ids)}
        wanted = sorted(i for i, t in times.items() if t is not None)
        if not wanted:
            return {}
        first = min(t for t in times.values() if t is not None)
        first_day = (first - timedelta(days=1)).strftime("%Y-%m-%d")
        files = [f for f in self.label_files() if f.split("date=", 1)[-1][:10] >= first_day]
        conn = self.connect()
        try:
            if not self.truth(conn, files):
                return {}
            conn.register("wanted", pa.table({"prediction_id": wanted}))
            rows = conn.execute(
                "SELECT t.prediction_id, t.truth FROM truth t JOIN wanted w USING (prediction_id)"
            ).fetchall()
        finally:
            conn.close()
        return {r[0]: r[1] for r in rows}

    def predictions(self, model: str | None = None) -> pa.Table:
        """All logged predictions (of one model), as an Arrow table. For tests and small logs."""
        return self._table(self.prediction_files(model=model), "predictions")

    def labels(self) -> pa.Table:
        """All logged labels, as an Arrow table."""
        return self._table(self.label_files(), "labels")

    def errors(self) -> pa.Table:
        """All logged refused or failed prediction requests, as an Arrow table."""
        return self._table(self.error_files(), "errors")

    def _table(self, files: list[str], name: str) -> Any:
        conn = self.connect()
        try:
            if not self.relation(conn, files, name):
                return pa.table({})
            return conn.sql(f"SELECT * FROM {name}").to_arrow_table()
        finally:
            conn.close()

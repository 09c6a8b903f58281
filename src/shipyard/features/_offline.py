"""Point-in-time training sets: for every entity row, each view's newest value at or before
the row's event time and inside the view's TTL (ASOF joins), or its aggregations over the
window ending at the event time (range joins). Every entity row comes back exactly once, in
the order given; a row with no value has nulls, and the result counts them per view.

DuckDB does the work out of core: it spills to a temporary folder past its memory limit, so
memory follows the width of the data, not its length."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from shipyard.core.errors import InvalidInput
from shipyard.features._definitions import SQL_TYPES, Aggregation, FeatureView
from shipyard.features._sources import Relation, SourceReader, literal, one, quote

__all__ = [
    "AGGREGATE_SQL",
    "Selection",
    "TrainingSet",
    "aggregate_columns",
    "key_family",
    "point_in_time",
    "source_select",
]

AGGREGATE_SQL = {
    "mean": "favg({c})",
    "sum": "fsum({c})",
    "count": "count({c})",
    "min": "min({c})",
    "max": "max({c})",
    "stddev": "stddev_samp({c})",
    "last": "arg_max({c}, {ts})",
    "distinct_count": "count(DISTINCT {c})",
}


@dataclass(frozen=True)
class Selection:
    """Features of one view version that a training set or a request asks for."""

    view: FeatureView
    version: int
    features: tuple[str, ...]

    @property
    def ref(self) -> str:
        return f"{self.view.name}@{self.version}"


@dataclass
class TrainingSet:
    """The entity rows with their features (`table`, or written to `path`)."""

    rows: int
    nulls: dict[str, int]
    """Per view: entity rows it had no value for (none inside the TTL, or no events in the
    window); their feature cells are null (counts of aggregations are 0)."""
    columns: list[str]
    lineage: dict[str, Any]
    table: pa.Table | None = None
    path: Path | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_pandas(self) -> Any:
        if self.table is None:
            raise InvalidInput(f"the training set was written to {self.path}; read it from there")
        return self.table.to_pandas()


def key_family(duckdb_type: str) -> str:
    """integer, number, text, time or other: join keys must agree on this."""
    kind = duckdb_type.upper()
    if kind.startswith(("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT",
                        "USMALLINT", "UINTEGER", "UBIGINT")):  # fmt: skip
        return "integer"
    if kind.startswith(("FLOAT", "DOUBLE", "DECIMAL")):
        return "number"
    if kind.startswith("VARCHAR"):
        return "text"
    if kind.startswith(("TIMESTAMP", "DATE")):
        return "time"
    return "other"


def _interval(seconds: float) -> str:
    return f"INTERVAL '{int(seconds)} seconds'"


def point_in_time(
    reader: SourceReader,
    entities: pa.Table,
    selections: list[Selection],
    *,
    timestamp_column: str = "event_timestamp",
    full_names: bool = False,
    out: Path | None = None,
) -> TrainingSet:
    """The training set of `entities` (join keys and an event time per row) with the
    features of `selections`."""
    conn = reader.conn
    if timestamp_column not in entities.column_names:
        raise InvalidInput(
            f"the entity rows have no {timestamp_column!r} column: each row needs the time its "
            "label refers to (pass timestamp_column= / --timestamp-column to name it)"
        )
    needed = sorted({k for s in selections for k in s.view.join_keys})
    absent = [k for k in needed if k not in entities.column_names]
    if absent:
        raise InvalidInput(
            f"the entity rows lack the join key {', '.join(absent)} (needed by "
            f"{', '.join(s.view.name for s in selections if set(s.view.join_keys) & set(absent))})"
        )
    reserved = [c for c in entities.column_names if c.startswith("__")]
    if reserved:
        raise InvalidInput(f"entity columns may not start with '__': {', '.join(reserved)}")
    names = _output_names(entities, selections, full_names)
    n = entities.num_rows
    conn.register("__entities_in", entities.append_column("__row", pa.array(np.arange(n))))
    ts = quote(timestamp_column)
    try:
        conn.execute(
            f"CREATE OR REPLACE TEMP TABLE __e AS SELECT *, CAST({ts} AS TIMESTAMPTZ) AS __ts "
            "FROM __entities_in"
        )
    except duckdb.Error:
        raise InvalidInput(
            f"the entity rows' {timestamp_column!r} column does not hold times (timestamps or "
            "ISO 8601 text)"
        ) from None
    finally:
        conn.unregister("__entities_in")
    missing_times = one(conn, "SELECT count(*) FROM __e WHERE __ts IS NULL")
    if missing_times[0]:
        raise InvalidInput(
            f"{missing_times[0]} entity rows have no {timestamp_column!r}; every row needs the "
            "time its label refers to"
        )
    entity_types = {str(r[0]): str(r[1]) for r in conn.execute("DESCRIBE __e").fetchall()}

    ctes: list[str] = []
    joins: list[str] = []
    selects = [f"e.{quote(c)}" for c in entities.column_names]
    misses: list[str] = []
    for i, selection in enumerate(selections):
        view = selection.view
        relation = reader.relation(view)
        _check_keys(view, relation, entity_types)
        source = _source_cte(view, relation)
        ctes.append(f"src_{i} AS ({source})")
        if view.aggregations:
            cte, select, miss = _aggregation(i, view, selection, names)
            ctes.append(cte)
            joins.append(f"LEFT JOIN agg_{i} a{i} ON a{i}.__row = e.__row")
        else:
            on = " AND ".join(f"e.{quote(k)} = v{i}.{quote(k)}" for k in view.join_keys)
            joins.append(f"ASOF LEFT JOIN src_{i} v{i} ON {on} AND e.__ts >= v{i}.__ts")
            ttl = view.ttl_length
            fresh = (
                f"v{i}.__ts >= e.__ts - {_interval(ttl.total_seconds())}"
                if ttl is not None
                else f"v{i}.__ts IS NOT NULL"
            )
            select = [
                f"CASE WHEN {fresh} THEN v{i}.{quote(f)} END AS {quote(names[(view.name, f)])}"
                for f in selection.features
            ]
            miss = f"NOT coalesce({fresh}, false)"
        selects.extend(select)
        misses.append(f"({miss}) AS __miss_{i}")
    sql = (
        f"WITH {', '.join(ctes)} SELECT e.__row, {', '.join(selects + misses)} FROM __e e "
        + " ".join(joins)
    )
    try:
        conn.execute(f"CREATE OR REPLACE TEMP TABLE __result AS {sql}")
    except duckdb.ConversionException as error:
        raise InvalidInput(
            f"a view's timestamps could not be read as times: {str(error).splitlines()[0][:200]}"
        ) from None
    counted = one(
        conn,
        "SELECT "
        + ", ".join(f"count(*) FILTER (WHERE __miss_{i})" for i in range(len(selections)))
        + " FROM __result",
    )
    nulls = {s.view.name: int(c) for s, c in zip(selections, counted, strict=True)}
    columns = [*entities.column_names, *names.values()]
    listed = ", ".join(quote(c) for c in columns)
    lineage = {
        "views": {s.view.name: s.version for s in selections},
        "features": [f"{s.view.name}@{s.version}:{f}" for s in selections for f in s.features],
    }
    result = TrainingSet(rows=n, nulls=nulls, columns=columns, lineage=lineage)
    ordered = f"SELECT {listed} FROM __result ORDER BY __row"
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(f".{out.name}.partial")
        conn.execute(f"COPY ({ordered}) TO {literal(str(partial))} (FORMAT parquet)")
        partial.replace(out)  # a half-written file never looks complete
        result.path = out
    else:
        result.table = conn.sql(ordered).to_arrow_table()
    conn.execute("DROP TABLE IF EXISTS __result")
    conn.execute("DROP TABLE IF EXISTS __e")
    return result


def _output_names(
    entities: pa.Table, selections: list[Selection], full_names: bool
) -> dict[tuple[str, str], str]:
    names: dict[tuple[str, str], str] = {}
    taken = set(entities.column_names)
    for selection in selections:
        for feature in selection.features:
            name = f"{selection.view.name}__{feature}" if full_names else feature
            if name in taken:
                clash = "an entity column" if name in entities.column_names else "another feature"
                raise InvalidInput(
                    f"feature {selection.view.name}:{feature} would be the column {name!r}, "
                    f"which is already {clash}; ask for full names (full_names=True / "
                    "--full-names: view__feature) or rename the column"
                )
            taken.add(name)
            names[(selection.view.name, feature)] = name
    return names


def _check_keys(view: FeatureView, relation: Relation, entity_types: dict[str, str]) -> None:
    for key in view.join_keys:
        mine, theirs = key_family(entity_types[key]), key_family(relation.columns[key])
        if mine != theirs:
            raise InvalidInput(
                f"join key {key!r} is {entity_types[key]} in the entity rows but "
                f"{relation.columns[key]} in the source of view {view.name!r}; cast one to the other"
            )


def source_select(view: FeatureView, relation: Relation) -> str:
    """The view's source rows as features are computed from them, offline and online alike:
    the join keys, the features cast to their declared types (or the raw columns an
    aggregation reads), `__ts` (the event time) and `__created` when declared."""
    keys = [quote(k) for k in view.join_keys]
    if view.aggregations:
        raw = sorted({a.column for a in view.aggregations} - set(view.join_keys))
        columns = [quote(c) for c in raw]
    else:
        columns = [
            f"CAST({quote(f.name)} AS {SQL_TYPES[f.dtype]}) AS {quote(f.name)}"
            for f in view.all_features
        ]
    created = (
        f", CAST({quote(view.created_timestamp_field)} AS TIMESTAMPTZ) AS __created"
        if view.created_timestamp_field and not view.aggregations
        else ""
    )
    ts = quote(view.timestamp_field)
    # a row without a time or without a key describes no entity at any time: left out
    present = " AND ".join(f"{k} IS NOT NULL" for k in [ts, *keys])
    return (
        f"SELECT {', '.join([*keys, *columns])}, CAST({ts} AS TIMESTAMPTZ) AS __ts{created} "
        f"FROM {relation.sql} WHERE {present}"
    )


def _source_cte(view: FeatureView, relation: Relation) -> str:
    sql = source_select(view, relation)
    if view.created_timestamp_field and not view.aggregations:
        keys = ", ".join(quote(k) for k in view.join_keys)
        sql = (
            f"SELECT * FROM ({sql}) QUALIFY row_number() OVER (PARTITION BY {keys}, __ts "
            "ORDER BY __created DESC NULLS LAST) = 1"
        )
    return sql


def aggregate_columns(view: FeatureView, since: str, alias: str = "t") -> list[str]:
    """The SQL of each aggregation of `view` over the rows of `alias` newer than `since` (an
    expression of the window's end minus the aggregation's window)."""
    out = []
    for agg in view.aggregations:
        expression = AGGREGATE_SQL[agg.function].format(
            c=f"{alias}.{quote(agg.column)}", ts=f"{alias}.__ts"
        )
        window = since.format(window=_interval(agg.length.total_seconds()))
        kind = SQL_TYPES[agg.dtype or "float"]
        out.append(
            f"CAST({expression} FILTER (WHERE {alias}.__ts > {window}) AS {kind}) "
            f"AS {quote(agg.feature)}"
        )
    return out


def _aggregation(
    i: int, view: FeatureView, selection: Selection, names: dict[tuple[str, str], str]
) -> tuple[str, list[str], str]:
    keys = " AND ".join(f"e.{quote(k)} = t.{quote(k)}" for k in view.join_keys)
    widest = _interval(view.max_window.total_seconds())
    cte = (
        f"agg_{i} AS (SELECT e.__row, {', '.join(aggregate_columns(view, 'e.__ts - {window}'))} "
        f"FROM __e e JOIN src_{i} t ON {keys} AND t.__ts <= e.__ts AND t.__ts > e.__ts - {widest} "
        "GROUP BY e.__row)"
    )
    by_name: dict[str, Aggregation] = {a.feature: a for a in view.aggregations}
    select = []
    for feature in selection.features:
        column = f"a{i}.{quote(feature)}"
        if by_name[feature].function in ("count", "distinct_count"):
            column = f"coalesce({column}, 0)"
        select.append(f"{column} AS {quote(names[(view.name, feature)])}")
    return cte, select, f"a{i}.__row IS NULL"

"""How a materialization run reads a view's source: which rows (a snapshot view's newest per
entity in a time range; an aggregation view's affected entities as of the run's end), from
when a source must be read, and the source checks `apply` makes first."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import duckdb

from shipyard.core.errors import InvalidInput
from shipyard.features._definitions import FeatureView
from shipyard.features._offline import aggregate_columns, key_family
from shipyard.features._online import Layout
from shipyard.features._repository import MaterializationRun
from shipyard.features._sources import Relation, SourceReader, literal, one, quote

__all__ = [
    "aggregation_rows",
    "check_source",
    "latest",
    "layout_of",
    "layout_record",
    "read_from",
    "snapshot_rows",
    "ts_literal",
]


def check_source(reader: SourceReader, view: FeatureView) -> None:
    """Refuse a source that would give wrong features: rows without a time, two rows of one
    entity at one time with nothing to say which is newer."""
    relation = reader.relation(view)
    ts = quote(view.timestamp_field)
    keys = ", ".join(quote(k) for k in view.join_keys)
    duplicates = (
        f"count(*) - count(DISTINCT ({keys}, {ts}))"
        if not view.aggregations and not view.created_timestamp_field
        else "0"
    )
    try:
        row = one(
            reader.conn,
            f"SELECT count(*) FILTER (WHERE {ts} IS NULL), {duplicates}, "
            f"count(*) FILTER (WHERE TRY_CAST({ts} AS TIMESTAMPTZ) IS NULL AND {ts} IS NOT NULL) "
            f"FROM {relation.sql}",
        )
    except duckdb.Error as error:
        raise InvalidInput(f"view {view.name!r}: cannot read its source: {error}") from None
    no_time, doubled, unreadable = (int(x or 0) for x in row)
    if no_time:
        raise InvalidInput(
            f"view {view.name!r}: {no_time} rows of its source have no {view.timestamp_field!r}; "
            "every row needs the time its values became true (drop or fill them in the source)"
        )
    if unreadable:
        raise InvalidInput(
            f"view {view.name!r}: {unreadable} values of {view.timestamp_field!r} are not times"
        )
    if doubled:
        raise InvalidInput(
            f"view {view.name!r}: {doubled} rows repeat an entity ({', '.join(view.join_keys)}) "
            f"at the same {view.timestamp_field!r}; declare created_timestamp_field to say which "
            "row is newer, or remove the duplicates"
        )


def ts_literal(moment: datetime) -> str:
    return f"TIMESTAMPTZ {literal(moment.astimezone(UTC).isoformat())}"


def read_from(
    view: FeatureView,
    mode: str,
    last: MaterializationRun | None,
    start: datetime | None,
    end: datetime,
) -> datetime | None:
    """The earliest event time a run needs, for sources that can be read from a time on
    (SQL, logs): an aggregation's widest window before `end` (and before the last run's end,
    for the entities whose events left a window since), a backfill's `start`, the watermark
    of an incremental run; None: everything."""
    if view.aggregations:
        since = end - view.max_window
        if last is not None and last["end"] is not None:
            since = min(since, last["end"] - view.max_window)
        return since
    if mode == "range":
        return start
    if mode == "incremental" and last is not None:
        return last["watermark"]
    return None


def latest(*moments: datetime | None) -> datetime | None:
    found = [m if m.tzinfo else m.replace(tzinfo=UTC) for m in moments if m is not None]
    return max(found, default=None)


def snapshot_rows(view: FeatureView, lower: datetime | None, end: datetime) -> tuple[str, str]:
    """The source rows in [lower, end] (their filter), and the newest row per entity among
    them (the query)."""
    where = f"__ts <= {ts_literal(end)}" + (
        f" AND __ts >= {ts_literal(lower)}" if lower is not None else ""
    )
    keys = ", ".join(quote(k) for k in view.join_keys)
    order = "__ts DESC" + (", __created DESC NULLS LAST" if view.created_timestamp_field else "")
    features = ", ".join(quote(f.name) for f in view.all_features)
    query = (
        f"SELECT {keys}, CAST(epoch_us(__ts) / 1e6 AS DOUBLE) AS __ts, {features} FROM src "
        f"WHERE {where} "
        f"QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY {order}) = 1"
    )
    return where, query


def aggregation_rows(
    view: FeatureView, last: MaterializationRun | None, end: datetime, *, full: bool
) -> tuple[str, str]:
    """Each affected entity's aggregations as of `end`: entities with events since the last
    run (`full`: every entity with events in the window), and entities whose events left a
    window since then (their numbers fell, to 0 when none is left)."""
    widest = view.max_window
    keys = [quote(k) for k in view.join_keys]
    listed = ", ".join(keys)
    window = f"__ts > {ts_literal(end - widest)} AND __ts <= {ts_literal(end)}"
    previous = last["end"] if last is not None else None
    if previous is None or previous >= end:
        changed = window
    else:
        # events since the last run, and events that left a window since then (each window
        # length loses the events between its start then and its start now)
        lengths = sorted({a.length for a in view.aggregations})
        new = window if full else f"__ts > {ts_literal(previous)} AND __ts <= {ts_literal(end)}"
        changed = " OR ".join(
            [f"({new})"]
            + [
                f"(__ts > {ts_literal(previous - w)} AND __ts <= {ts_literal(end - w)})"
                for w in lengths
            ]
        )
    since = "TIMESTAMPTZ " + literal(end.astimezone(UTC).isoformat()) + " - {window}"
    aggregates = aggregate_columns(view, since)
    join = " AND ".join(f"k.{k} = t.{k}" for k in keys)
    counts = {a.feature for a in view.aggregations if a.function in ("count", "distinct_count")}
    outer = ", ".join(
        f"coalesce({quote(a.feature)}, 0) AS {quote(a.feature)}"
        if a.feature in counts
        else quote(a.feature)
        for a in view.aggregations
    )
    query = (
        f"WITH k AS (SELECT DISTINCT {listed} FROM src WHERE {changed}), "
        f"t AS (SELECT * FROM src WHERE {window}), "
        f"a AS (SELECT {', '.join('k.' + k for k in keys)}, {', '.join(aggregates)} "
        f"FROM k LEFT JOIN t ON {join} GROUP BY ALL) "
        f"SELECT {listed}, CAST({end.timestamp()!r} AS DOUBLE) AS __ts, {outer} FROM a"
    )
    return window, query


def layout_of(view: FeatureView, version: int, relation: Relation) -> Layout:
    integer = tuple(key_family(relation.columns[k]) == "integer" for k in view.join_keys)
    return Layout(view.name, version, view.join_keys, integer, tuple(view.all_features))


def layout_record(layout: Layout) -> dict[str, Any]:
    return {"keys": list(layout.keys), "integer_keys": list(layout.integer_keys)}

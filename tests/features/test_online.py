"""Online stores (one contract, SQLite and Redis) and the feature store's materialization and
reads: TTLs honoured, incremental runs that read only what is new, and the same vector online
as offline for the same entity and time."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from shipyard.core import Settings
from shipyard.core.errors import InvalidInput
from shipyard.features import (
    Feature,
    FeatureStore,
    Layout,
    OnlineStore,
    RedisStore,
    SqliteStore,
    load_definitions,
)
from shipyard.registry import Registry
from tests.features.conftest import same, transactions

REDIS_URL = os.environ.get("SHIPYARD_TEST_REDIS_URL")
LAYOUT = Layout(
    "stats", 1, ("customer_id",), (True,),
    (Feature("spend", "float"), Feature("count", "int"), Feature("tier", "string"), Feature("vip", "bool")),
)  # fmt: skip


@pytest.fixture(params=["sqlite", "redis"])
def online(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OnlineStore]:
    if request.param == "sqlite":
        store: OnlineStore = SqliteStore(tmp_path / "online.sqlite")
    else:
        if not REDIS_URL:
            pytest.skip("SHIPYARD_TEST_REDIS_URL is not set; the Redis store needs a server")
        store = RedisStore(REDIS_URL, prefix=f"shipyard-test:{uuid.uuid4().hex}:")
    yield store
    if isinstance(store, RedisStore):
        for key in store._client.scan_iter(f"{store.prefix}*"):
            store._client.delete(key)
    store.close()


def _rows(keys: list[int], ts: float, spend: list[float | None]) -> pa.Table:
    return pa.table(
        {
            "customer_id": keys,
            "__ts": [ts] * len(keys),
            "spend": spend,
            "count": [int(k) * 2 for k in keys],
            "tier": [f"t{k}" for k in keys],
            "vip": [k % 2 == 0 for k in keys],
        }
    )


def test_the_store_contract(online: OnlineStore) -> None:
    assert online.read(LAYOUT, [(1,)], ["spend"]) == [None]  # nothing written yet
    assert online.write(LAYOUT, _rows([1, 2, 3], 100.0, [1.5, 2.5, None])) == 3
    found = online.read(LAYOUT, [(2,), (9,), (1,)], ["spend", "count", "tier", "vip"])
    assert found == [(100.0, (2.5, 4, "t2", True)), None, (100.0, (1.5, 2, "t1", False))]
    # one entity, and the asked features only, in the asked order
    assert online.read(LAYOUT, [(3,)], ["vip", "spend"]) == [(100.0, (False, None))]
    # an older value never replaces a newer one; a newer (or equally new) one does
    online.write(LAYOUT, _rows([1], 50.0, [99.0]))
    online.write(LAYOUT, _rows([2], 200.0, [None]))
    assert online.read(LAYOUT, [(1,), (2,)], ["spend"]) == [(100.0, (1.5,)), (200.0, (None,))]
    assert online.count(LAYOUT) == 3


def test_text_and_composite_keys(online: OnlineStore) -> None:
    layout = Layout("pairs", 1, ("customer", "merchant"), (False, True), (Feature("n", "int"),))
    online.write(
        layout,
        pa.table({"customer": ["a", "b"], "merchant": [1, 1], "__ts": [1.0, 2.0], "n": [5, 6]}),
    )
    assert online.read(layout, [("b", 1), ("a", 2), ("a", 1)], ["n"]) == [
        (2.0, (6,)),
        None,
        (1.0, (5,)),
    ]


# -- the feature store over each online store -----------------------------------------------------

T = datetime(2026, 6, 20, tzinfo=UTC)  # inside the events' 60 days
AFTER = datetime(2026, 7, 5, tzinfo=UTC)  # after all of them


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def features(
    sqlite_settings: Settings, definitions_file: Path, online: OnlineStore
) -> Iterator[tuple[FeatureStore, Clock]]:
    clock = Clock(T)
    with Registry.from_settings(sqlite_settings) as registry:
        store = FeatureStore(registry, sqlite_settings, online=online, clock=clock)
        store.apply(load_definitions(definitions_file))
        yield store, clock


def test_online_equals_offline_for_the_same_entity_and_time(
    features: tuple[FeatureStore, Clock],
) -> None:
    """The skew test: what serving looks up at T is what a training set computes for T."""
    store, _ = features
    runs = store.materialize()
    assert {r["view"]: r["mode"] for r in runs} == dict.fromkeys(
        ["customer_activity", "customer_daily", "merchant_risk"], "full"
    )
    refs = ["customer_daily:*", "customer_activity:*", "merchant_risk:*"]
    entities = pd.DataFrame(
        {"customer_id": np.arange(1, 62), "merchant_id": np.arange(1, 62) % 12 + 1}
    )
    offline = store.training_set(entities.assign(event_timestamp=T), refs).to_pandas()
    online = store.get_online(entities.to_dict("records"), refs)
    compared = 0
    for i in range(len(entities)):
        for name, value in online.values[i].items():
            assert same(value, offline.at[i, name]), (i, name, value, offline.at[i, name])
            compared += 1
    assert compared == 61 * 11
    # some customers have no value (never seen, or silent for longer than the TTL / window)
    assert 0 < online.missing["customer_daily"] + online.stale["customer_daily"] < 61


def test_values_past_the_ttl_read_as_stale(features: tuple[FeatureStore, Clock]) -> None:
    store, clock = features
    store.materialize(["customer_daily"])
    rows = [{"customer_id": c} for c in range(1, 61)]
    fresh = store.get_online(rows, ["customer_daily:daily_spend"])
    ok = [i for i, s in enumerate(fresh.status) if s["customer_daily"] == "ok"]
    assert ok
    newest = max(fresh.event_times[i]["customer_daily"] for i in ok)
    clock.now = newest + timedelta(days=2)  # the TTL's last moment: still fresh
    assert fresh.values[ok[0]]["daily_spend"] is not None
    assert (
        store.get_online(rows, ["customer_daily:daily_spend"]).status[
            next(i for i in ok if fresh.event_times[i]["customer_daily"] == newest)
        ]["customer_daily"]
        == "ok"
    )
    clock.now = newest + timedelta(days=2, seconds=1)
    late = store.get_online(rows, ["customer_daily:daily_spend"])
    # every stored value is past its TTL now (those already stale at T, and the fresh ones)
    assert late.stale["customer_daily"] == 60 - fresh.missing["customer_daily"] > len(ok)
    assert all(late.values[i]["daily_spend"] is None for i in ok)
    assert all(late.event_times[i]["customer_daily"] is not None for i in ok)  # still told when


def test_incremental_runs_read_only_new_files_and_are_idempotent(
    sqlite_settings: Settings, tmp_path: Path, online: OnlineStore
) -> None:
    folder = tmp_path / "daily"
    folder.mkdir()
    events = transactions()
    first = events[events["event_timestamp"] < pd.Timestamp("2026-06-01", tz="UTC")]
    later = events[events["event_timestamp"] >= pd.Timestamp("2026-06-01", tz="UTC")]
    first.to_parquet(folder / "part-1.parquet")
    module = tmp_path / "defs.py"
    module.write_text(
        "from shipyard.features import Entity, FeatureView, FileSource\n"
        "c = Entity('customer', join_keys=['customer_id'])\n"
        f"latest = FeatureView(name='latest_txn', entities=[c], source=FileSource('{folder}'),\n"
        "    features=['amount', 'merchant_id'])\n"
    )
    with Registry.from_settings(sqlite_settings) as registry:
        store = FeatureStore(registry, sqlite_settings, online=online, clock=Clock(AFTER))
        store.apply(load_definitions(module))
        full = store.materialize()[0]
        assert (full["mode"], full["rows_read"]) == ("full", len(first))
        later.to_parquet(folder / "part-2.parquet")
        step = store.materialize()[0]
        assert step["mode"] == "incremental"
        assert step["rows_read"] == len(later)  # the old file was not read again
        assert step["entities_written"] == later["customer_id"].nunique()
        again = store.materialize()[0]
        assert (again["rows_read"], again["entities_written"]) == (0, 0)
        # a late file with older rows: read, and newer values are kept
        first_seen = events.groupby("customer_id").head(1)
        stale = first_seen.assign(
            amount=-1.0, event_timestamp=first_seen["event_timestamp"] - pd.Timedelta(days=1)
        )
        stale.to_parquet(folder / "part-0-late.parquet")
        store.materialize()
        everything = store.training_set(
            pd.DataFrame({"customer_id": events["customer_id"].unique()}).assign(
                event_timestamp=AFTER
            ),
            ["latest_txn:amount"],
        ).to_pandas()
        got = store.get_online(
            everything[["customer_id"]].to_dict("records"), ["latest_txn:amount"]
        )
        assert [v["amount"] for v in got.values] == everything["amount"].tolist()
        assert -1.0 not in everything["amount"].tolist()  # older than what was there
        # `full` reads everything again
        assert store.materialize(full=True)[0]["rows_read"] == len(events) + len(stale)


def test_sql_sources_are_read_from_their_watermark(
    sqlite_settings: Settings, tmp_path: Path, online: OnlineStore
) -> None:
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    engine = sa.create_engine(url)
    events = transactions()
    events.iloc[:3000].to_sql("txns", engine, index=False)
    module = tmp_path / "defs.py"
    module.write_text(
        "from shipyard.features import Entity, FeatureView, SqlSource\n"
        "c = Entity('customer', join_keys=['customer_id'])\n"
        f"latest = FeatureView(name='latest_sql', entities=[c], source=SqlSource('SELECT * FROM txns', '{url}'),\n"
        "    features=['amount'])\n"
    )
    with Registry.from_settings(sqlite_settings) as registry:
        store = FeatureStore(registry, sqlite_settings, online=online, clock=Clock(AFTER))
        store.apply(load_definitions(module))
        assert store.materialize()[0]["rows_read"] == 3000
        events.iloc[3000:].to_sql("txns", engine, index=False, if_exists="append")
        step = store.materialize()[0]
        # from the watermark on: the new rows, and the rows at the watermark's own time again
        assert step["mode"] == "incremental"
        assert len(events) - 3000 <= step["rows_read"] <= len(events) - 3000 + 1
    engine.dispose()


def test_reading_before_materializing_and_bad_keys(features: tuple[FeatureStore, Clock]) -> None:
    store, _ = features
    result = store.get_online([{"customer_id": 1}], ["customer_daily:daily_spend"])
    assert result.status == [{"customer_daily": "missing"}]
    store.materialize(["customer_daily"])
    with pytest.raises(InvalidInput, match="entity row 0 has no 'customer_id'"):
        store.get_online([{"merchant_id": 1}], ["customer_daily:daily_spend"])
    with pytest.raises(InvalidInput, match="customer_id must be a 64-bit integer"):
        store.get_online([{"customer_id": "abc"}], ["customer_daily:daily_spend"])
    # keys given as text (a query string, a CLI argument) find integer keys
    assert store.get_online([{"customer_id": "1"}], ["customer_daily:daily_spend"]).views == {
        "customer_daily": 1
    }
    with pytest.raises(InvalidInput, match="--start must be before --end"):
        store.materialize(start=T, end=T - timedelta(days=1))


def test_incremental_aggregations_equal_a_fresh_computation(
    features: tuple[FeatureStore, Clock],
) -> None:
    """Materialized at T, then again 5 and 40 days later (incremental: only the entities
    with new events or events leaving a window are recomputed), the online values equal a
    training set computed at the later time, for every customer."""
    store, clock = features
    refs = ["customer_activity:*", "merchant_risk:*"]
    entities = pd.DataFrame(
        {"customer_id": np.arange(1, 62), "merchant_id": np.arange(1, 62) % 12 + 1}
    )
    store.materialize(["customer_activity", "merchant_risk"], end=T)
    for later, full in ((T + timedelta(days=5), False), (T + timedelta(days=40), True)):
        runs = store.materialize(["customer_activity", "merchant_risk"], end=later, full=full)
        assert {r["mode"] for r in runs} == {"full" if full else "incremental"}
        clock.now = later
        offline = store.training_set(entities.assign(event_timestamp=later), refs).to_pandas()
        online = store.get_online(entities.to_dict("records"), refs)
        for i in range(len(entities)):
            for name, value in online.values[i].items():
                assert same(value, offline.at[i, name]), (
                    later,
                    i,
                    name,
                    value,
                    offline.at[i, name],
                )
    # forty days on, every window has emptied: counts are 0 and means are gone, online too
    assert all(v["customer_count_7d"] == 0 for v in online.values)


def test_a_sql_source_is_filtered_by_its_database(tmp_path: Path) -> None:
    """Read from a time on, a SQL source fetches only the rows from then on (the query runs
    with the bound in its WHERE), not the whole table filtered afterwards."""
    import sqlalchemy as sa

    from shipyard.features import Entity, FeatureView, SqlSource
    from shipyard.features._sources import SourceReader, connect, one

    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    engine = sa.create_engine(url)
    events = transactions()
    events.to_sql("txns", engine, index=False)
    engine.dispose()
    view = FeatureView(
        name="latest_sql", entities=[Entity("customer", ["customer_id"])],
        source=SqlSource("SELECT * FROM txns", url), features=["amount"],
    )  # fmt: skip
    since = datetime(2026, 6, 15, tzinfo=UTC)
    conn = connect(tmp_path)
    try:
        reader = SourceReader(conn, tmp_path)
        fetched = one(conn, f"SELECT count(*) FROM {reader.relation(view, since=since).sql}")[0]
        everything = one(conn, f"SELECT count(*) FROM {reader.relation(view).sql}")[0]
        # a bound after every row: nothing there, so the whole source is read instead
        after = one(conn, f"SELECT count(*) FROM {reader.relation(view, since=AFTER).sql}")[0]
    finally:
        conn.close()
    assert fetched == (events["event_timestamp"] >= pd.Timestamp(since)).sum() < everything
    assert everything == after == len(events)


def test_rows_arriving_late_in_a_sql_source_are_not_missed(
    sqlite_settings: Settings, tmp_path: Path, online: OnlineStore
) -> None:
    """A SQL source is read from its watermark; a row that arrives later with an older time
    (a late event) is noticed by the count of rows before the watermark, and the source is
    read in full, so the entity gets it when it is newer than what the store holds."""
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    engine = sa.create_engine(url)
    t0 = pd.Timestamp("2026-06-01", tz="UTC")
    rows = pd.DataFrame({"customer_id": [1, 2, 3], "amount": [10.0, 20.0, 30.0],
                         "event_timestamp": [t0, t0 + pd.Timedelta(days=10), t0 + pd.Timedelta(days=20)]})  # fmt: skip
    rows.to_sql("txns", engine, index=False)
    module = tmp_path / "defs.py"
    module.write_text(
        "from shipyard.features import Entity, FeatureView, SqlSource\n"
        "c = Entity('customer', join_keys=['customer_id'])\n"
        f"latest = FeatureView(name='latest_sql', entities=[c], source=SqlSource('SELECT * FROM txns', '{url}'),\n"
        "    features=['amount'])\n"
    )
    with Registry.from_settings(sqlite_settings) as registry:
        store = FeatureStore(registry, sqlite_settings, online=online, clock=Clock(AFTER))
        store.apply(load_definitions(module))
        first = store.materialize()[0]
        assert first["source_state"] == {"before_watermark": 2, "late_rows": 0}
        # customer 1's newer value, dated before the watermark (day 20): a late arrival
        pd.DataFrame(
            {"customer_id": [1], "amount": [11.0], "event_timestamp": [t0 + pd.Timedelta(days=5)]}
        ).to_sql("txns", engine, index=False, if_exists="append")
        caught = store.materialize()[0]
        assert caught["mode"] == "full"
        assert caught["source_state"] == {"before_watermark": 3, "late_rows": 1}
        got = store.get_online([{"customer_id": 1}], ["latest_sql:amount"])
        assert got.values == [{"amount": 11.0}]
        assert store.materialize()[0]["mode"] == "incremental"  # nothing late since
    engine.dispose()


def test_sqlite_connections_of_finished_threads_are_closed(tmp_path: Path) -> None:
    import threading

    store = SqliteStore(tmp_path / "online.sqlite")
    store.write(LAYOUT, _rows([1], 1.0, [1.0]))
    for _ in range(50):  # a server's worker pool: threads that read once and retire
        worker = threading.Thread(target=lambda: store.read(LAYOUT, [(1,)], ["spend"]))
        worker.start()
        worker.join()
    store.read(LAYOUT, [(1,)], ["spend"])
    assert len(store._connections) <= 2  # this thread's, and at most the last worker's
    store.close()


def test_a_file_with_rows_after_the_end_is_read_again(
    sqlite_settings: Settings, tmp_path: Path, online: OnlineStore
) -> None:
    folder = tmp_path / "daily"
    folder.mkdir()
    t0 = pd.Timestamp("2026-06-01", tz="UTC")
    pd.DataFrame({"customer_id": [1, 1], "amount": [1.0, 2.0],
                  "event_timestamp": [t0, t0 + pd.Timedelta(days=5)]}).to_parquet(folder / "part-1.parquet")  # fmt: skip
    module = tmp_path / "defs.py"
    module.write_text(
        "from shipyard.features import Entity, FeatureView, FileSource\n"
        "c = Entity('customer', join_keys=['customer_id'])\n"
        f"latest = FeatureView(name='latest_txn', entities=[c], source=FileSource('{folder}'),\n"
        "    features=['amount'])\n"
    )
    with Registry.from_settings(sqlite_settings) as registry:
        store = FeatureStore(registry, sqlite_settings, online=online, clock=Clock(AFTER))
        store.apply(load_definitions(module))
        store.materialize(end=(t0 + pd.Timedelta(days=2)).to_pydatetime())  # day 5 is after it
        assert store.get_online([{"customer_id": 1}], ["latest_txn:amount"]).values == [
            {"amount": 1.0}
        ]
        later = store.materialize(end=(t0 + pd.Timedelta(days=10)).to_pydatetime())[0]
        assert later["rows_read"] == 2  # the file again: its day-5 row was not written before
        assert store.get_online([{"customer_id": 1}], ["latest_txn:amount"]).values == [
            {"amount": 2.0}
        ]

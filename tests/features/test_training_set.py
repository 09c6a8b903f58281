"""Point-in-time training sets against a brute-force reference, cell by cell: every entity
row comes back exactly once, in order, with nulls (counted) where a view has no value."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from shipyard.core.errors import InvalidInput
from shipyard.features import FeatureStore, load_definitions
from tests.features.conftest import (
    aggregate,
    entity_rows,
    latest_value,
    same,
    snapshots,
    transactions,
    window_rows,
)

AGGREGATIONS = {
    "customer_avg_transaction_amount_30d": ("amount", "mean", 30),
    "customer_total_7d": ("amount", "sum", 7),
    "customer_count_7d": ("amount", "count", 7),
    "customer_min_7d": ("amount", "min", 7),
    "customer_max_7d": ("amount", "max", 7),
    "customer_std_30d": ("amount", "stddev", 30),
    "customer_last_amount": ("amount", "last", 30),
    "customer_merchants_30d": ("merchant_id", "distinct_count", 30),
}


def test_every_row_once_identical_to_brute_force(store: FeatureStore) -> None:
    events = transactions()
    daily = snapshots(events)
    rows = entity_rows(events)
    result = store.training_set(
        rows, ["customer_daily:*", "customer_activity:*", "merchant_risk:merchant_fraud_rate_7d"]
    )
    got = result.to_pandas()
    assert len(got) == len(rows) == result.rows
    # the entity rows as given, in order
    pd.testing.assert_frame_equal(got[list(rows.columns)], rows, check_dtype=False)
    nulls = {"customer_daily": 0, "customer_activity": 0, "merchant_risk": 0}
    for i, row in rows.iterrows():
        at = row["event_timestamp"]
        expected = latest_value(daily, "customer_id", row["customer_id"], at, timedelta(days=2),
                                ["daily_spend", "daily_count"])  # fmt: skip
        nulls["customer_daily"] += expected["daily_spend"] is None
        for name, (column, function, days) in AGGREGATIONS.items():
            window = window_rows(
                events, "customer_id", row["customer_id"], at, timedelta(days=days)
            )
            expected[name] = aggregate(window, column, function)
        widest = window_rows(events, "customer_id", row["customer_id"], at, timedelta(days=30))
        nulls["customer_activity"] += widest.empty
        merchant = window_rows(events, "merchant_id", row["merchant_id"], at, timedelta(days=7))
        expected["merchant_fraud_rate_7d"] = aggregate(merchant, "is_fraud", "mean")
        nulls["merchant_risk"] += merchant.empty
        for name, value in expected.items():
            assert same(got.at[i, name], value), (i, name, got.at[i, name], value)
    assert result.nulls == nulls
    # the data has rows without a value inside the TTL and rows for an unknown customer
    assert 0 < nulls["customer_daily"] < len(rows)
    assert got["customer_count_7d"].dtype == np.int64  # counts are 0, never null
    assert result.lineage["views"] == {
        "customer_daily": 1,
        "customer_activity": 1,
        "merchant_risk": 1,
    }


def test_ties_are_broken_by_the_created_timestamp(
    store: FeatureStore, tmp_path: Path, data_dir: Path
) -> None:
    at = pd.Timestamp("2026-05-10", tz="UTC")
    rows = pd.DataFrame(
        {
            "customer_id": [1, 1, 1, 2],
            "event_timestamp": [at, at, at - pd.Timedelta(days=1), at],
            "created": [at, at + pd.Timedelta(hours=1), at, at],
            "score": [0.1, 0.9, 0.5, 0.3],
        }
    )
    rows.to_parquet(data_dir / "scores.parquet")
    module = tmp_path / "scores.py"
    module.write_text(
        "from shipyard.features import Entity, FeatureView, FileSource\n"
        "customer = Entity('customer', join_keys=['customer_id'])\n"
        f"scores = FeatureView(name='scores', entities=[customer], source=FileSource('{data_dir}/scores.parquet'),\n"
        "    features=['score'], created_timestamp_field='created', ttl='30d')\n"
    )
    store.apply(load_definitions(module))
    entities = pd.DataFrame(
        {"customer_id": [1, 1, 2, 3], "event_timestamp": [at, at - pd.Timedelta(hours=1), at, at]}
    )
    got = store.training_set(entities, ["scores:score"]).to_pandas()
    # the later-created of the two rows at `at`; before `at`, the day-old row; none for 3
    assert got["score"].tolist()[:3] == [0.9, 0.5, 0.3]
    assert np.isnan(got["score"].iloc[3])


def test_written_to_parquet_and_given_as_a_file(store: FeatureStore, tmp_path: Path) -> None:
    rows = entity_rows(transactions(), n=50)
    entities = tmp_path / "entities.parquet"
    rows.to_parquet(entities)
    out = tmp_path / "out" / "train.parquet"
    result = store.training_set(entities, ["customer_daily:daily_spend"], out=out, full_names=True)
    assert result.table is None
    assert result.path == out
    written = pq.read_table(out).to_pandas()
    assert list(written.columns) == [*rows.columns, "customer_daily__daily_spend"]
    assert len(written) == len(rows)
    assert not list(out.parent.glob(".*partial"))


def test_bounded_memory_on_data_larger_than_the_cap(
    store: FeatureStore, tmp_path: Path, data_dir: Path
) -> None:
    """300k events (~10 MB of Parquet, far more in memory) joined under a 40 MB DuckDB cap:
    DuckDB spills instead of failing, and the answer matches the uncapped one."""
    big = transactions(rows=300_000, customers=3_000, seed=11)
    big.to_parquet(data_dir / "transactions.parquet")
    rows = entity_rows(big, n=20_000, seed=5)
    features = [
        "customer_activity:customer_count_7d",
        "customer_activity:customer_avg_transaction_amount_30d",
    ]
    capped = store.training_set(rows, features, memory_limit="40MB").to_pandas()
    free = store.training_set(rows, features).to_pandas()
    pd.testing.assert_frame_equal(capped, free)
    with pytest.raises(InvalidInput, match="not a size"):
        store.training_set(rows, features, memory_limit="lots")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.drop(columns=["event_timestamp"]), "no 'event_timestamp' column"),
        (lambda r: r.drop(columns=["customer_id"]), "lack the join key customer_id"),
        (lambda r: r.assign(event_timestamp=pd.NaT), "have no 'event_timestamp'"),
        (lambda r: r.assign(event_timestamp="yesterday"), "does not hold times"),
        (
            lambda r: r.assign(customer_id=r["customer_id"].astype(str)),
            "is VARCHAR in the entity rows",
        ),
        (lambda r: r.assign(daily_spend=1.0), "already an entity column"),
    ],
)
def test_bad_entity_rows_are_refused_with_the_fix(
    store: FeatureStore, change: Callable[[pd.DataFrame], pd.DataFrame], message: str
) -> None:
    rows = entity_rows(transactions(), n=20)
    with pytest.raises(InvalidInput, match=message):
        store.training_set(change(rows), ["customer_daily:daily_spend"])


def test_unknown_views_and_features_are_named(store: FeatureStore) -> None:
    rows = entity_rows(transactions(), n=5)
    with pytest.raises(Exception, match="no feature view named 'nope'"):
        store.training_set(rows, ["nope:x"])
    with pytest.raises(InvalidInput, match="has no feature spend"):
        store.training_set(rows, ["customer_daily:spend"])
    with pytest.raises(InvalidInput, match="is not view:feature"):
        store.training_set(rows, ["customer_daily"])

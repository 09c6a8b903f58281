"""Small raw data for the feature store, a definitions module over it, and brute-force
references that compute every feature the slow, obvious way."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from shipyard.core import Settings
from shipyard.features import FeatureStore, load_definitions
from shipyard.registry import Registry

START = datetime(2026, 5, 1, tzinfo=UTC)


def transactions(
    rows: int = 4000, customers: int = 60, merchants: int = 12, seed: int = 7
) -> pd.DataFrame:
    """Raw events over 60 days: a few busy customers, many quiet ones (some go silent for
    weeks, so TTLs and windows find nothing)."""
    rng = np.random.default_rng(seed)
    weights = rng.gamma(0.5, 1.0, customers)
    customer = rng.choice(customers, rows, p=weights / weights.sum()) + 1
    seconds = np.sort(rng.choice(60 * 86_400, rows, replace=False))
    return pd.DataFrame(
        {
            "customer_id": customer.astype(np.int64),
            "merchant_id": (rng.integers(0, merchants, rows) + 1).astype(np.int64),
            "event_timestamp": pd.to_datetime(START) + pd.to_timedelta(seconds, unit="s"),
            "amount": np.round(rng.lognormal(3.0, 0.8, rows), 2),
            "is_fraud": (rng.random(rows) < 0.05).astype(np.int64),
        }
    )


def snapshots(events: pd.DataFrame) -> pd.DataFrame:
    """One row per customer and active day, as of the end of the day (a precomputed table
    like the ones users already have)."""
    day = events["event_timestamp"].dt.floor("D") + pd.Timedelta(days=1)
    daily = (
        events.assign(day=day)
        .groupby(["customer_id", "day"])
        .agg(spend=("amount", "sum"), count=("amount", "size"))
        .reset_index()
    )
    return pd.DataFrame(
        {
            "customer_id": daily["customer_id"],
            "event_timestamp": daily["day"],
            "daily_spend": daily["spend"],
            "daily_count": daily["count"].astype(np.int64),
        }
    )


def entity_rows(events: pd.DataFrame, n: int = 400, seed: int = 3) -> pd.DataFrame:
    """Label rows: customers and merchants at times inside and after the events, some exactly
    on a snapshot's time or a TTL's edge, some for customers never seen."""
    rng = np.random.default_rng(seed)
    picked = events.sample(n, random_state=seed)
    offsets = pd.to_timedelta(rng.integers(0, 3 * 86_400, n), unit="s")
    rows = pd.DataFrame(
        {
            "customer_id": picked["customer_id"].to_numpy(),
            "merchant_id": picked["merchant_id"].to_numpy(),
            "event_timestamp": (picked["event_timestamp"] + offsets).to_numpy(),
            "label": rng.integers(0, 2, n),
        }
    )
    edges = pd.DataFrame(
        {
            "customer_id": [999, 1, 1, 1],
            "merchant_id": [1, 1, 2, 3],
            "event_timestamp": pd.to_datetime(
                [
                    START + timedelta(days=5),
                    START + timedelta(days=10),
                    START + timedelta(days=12),
                    START + timedelta(days=12, seconds=1),
                ]
            ),
            "label": [0, 1, 0, 1],
        }
    )
    # on the edges: at an event's own time (inside its windows), a 7-day window after it (just
    # outside), a snapshot's time plus the 2-day TTL (still fresh) and one second more (stale)
    k = max(n // 10, 4)
    at_event = events.sample(k, random_state=seed + 1)
    week_on = events.sample(k, random_state=seed + 2)
    daily = snapshots(events).sample(2 * k, random_state=seed + 3)
    boundary = pd.DataFrame(
        {
            "customer_id": np.concatenate(
                [at_event["customer_id"], week_on["customer_id"], daily["customer_id"]]
            ),
            "merchant_id": np.concatenate(
                [at_event["merchant_id"], week_on["merchant_id"], np.ones(2 * k, dtype=np.int64)]
            ),
            "event_timestamp": np.concatenate(
                [
                    at_event["event_timestamp"].to_numpy(),
                    (week_on["event_timestamp"] + pd.Timedelta(days=7)).to_numpy(),
                    (daily["event_timestamp"].iloc[:k] + pd.Timedelta(days=2)).to_numpy(),
                    (
                        daily["event_timestamp"].iloc[k:] + pd.Timedelta(days=2, seconds=1)
                    ).to_numpy(),
                ]
            ),
            "label": np.zeros(4 * k, dtype=np.int64),
        }
    )
    out = pd.concat([rows, edges, boundary], ignore_index=True)
    out["event_timestamp"] = pd.to_datetime(out["event_timestamp"], utc=True)
    return out


DEFINITIONS = """
from shipyard.features import Aggregation, Entity, FeatureView, FileSource

customer = Entity("customer", join_keys=["customer_id"])
merchant = Entity("merchant", join_keys=["merchant_id"])

customer_daily = FeatureView(
    name="customer_daily",
    entities=[customer],
    source=FileSource("{data}/snapshots.parquet"),
    features=["daily_spend", "daily_count"],
    ttl="2d",
    owner="fraud-team",
)
customer_activity = FeatureView(
    name="customer_activity",
    entities=[customer],
    source=FileSource("{data}/transactions.parquet"),
    aggregations=[
        Aggregation("amount", "mean", "30d", name="customer_avg_transaction_amount_30d"),
        Aggregation("amount", "sum", "7d", name="customer_total_7d"),
        Aggregation("amount", "count", "7d", name="customer_count_7d"),
        Aggregation("amount", "min", "7d", name="customer_min_7d"),
        Aggregation("amount", "max", "7d", name="customer_max_7d"),
        Aggregation("amount", "stddev", "30d", name="customer_std_30d"),
        Aggregation("amount", "last", "30d", name="customer_last_amount"),
        Aggregation("merchant_id", "distinct_count", "30d", name="customer_merchants_30d"),
    ],
)
merchant_risk = FeatureView(
    name="merchant_risk",
    entities=[merchant],
    source=FileSource("{data}/transactions.parquet"),
    aggregations=[Aggregation("is_fraud", "mean", "7d", name="merchant_fraud_rate_7d")],
)
"""


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    events = transactions()
    events.to_parquet(folder / "transactions.parquet")
    snapshots(events).to_parquet(folder / "snapshots.parquet")
    return folder


@pytest.fixture
def definitions_file(tmp_path: Path, data_dir: Path) -> Path:
    path = tmp_path / "features.py"
    path.write_text(textwrap.dedent(DEFINITIONS).replace("{data}", str(data_dir)))
    return path


@pytest.fixture
def store(settings: Settings, definitions_file: Path) -> Iterator[FeatureStore]:
    """The store with the three views applied (over each metadata backend)."""
    with Registry.from_settings(settings) as registry, FeatureStore(registry, settings) as features:
        features.apply(load_definitions(definitions_file))
        yield features


# -- brute force ----------------------------------------------------------------------------------


def latest_value(
    source: pd.DataFrame, key: str, value: Any, at: pd.Timestamp, ttl: timedelta | None,
    columns: list[str], created: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The newest row of `value` at or before `at` (ties: the newest `created`), if inside the TTL."""
    rows = source[(source[key] == value) & (source["event_timestamp"] <= at)]
    if rows.empty:
        return dict.fromkeys(columns)
    order = ["event_timestamp", created] if created else ["event_timestamp"]
    newest = rows.sort_values(order).iloc[-1]
    if ttl is not None and newest["event_timestamp"] < at - ttl:
        return dict.fromkeys(columns)
    return {c: newest[c] for c in columns}


def aggregate(rows: pd.DataFrame, column: str, function: str) -> Any:
    values = rows[column]
    if function == "count":
        return len(values)
    if function == "distinct_count":
        return values.nunique()
    if values.empty:
        return None
    if function == "mean":
        return float(values.mean())
    if function == "sum":
        return float(values.sum())
    if function == "min":
        return float(values.min())
    if function == "max":
        return float(values.max())
    if function == "stddev":
        return float(values.std(ddof=1)) if len(values) > 1 else None
    if function == "last":
        return float(rows.sort_values("event_timestamp")[column].iloc[-1])
    raise AssertionError(function)


def window_rows(
    source: pd.DataFrame, key: str, value: Any, at: pd.Timestamp, window: timedelta
) -> pd.DataFrame:
    return source[
        (source[key] == value)
        & (source["event_timestamp"] <= at)
        & (source["event_timestamp"] > at - window)
    ]


def same(a: Any, b: Any) -> bool:
    """Cell equality: both missing, or equal to 1e-9 relative."""
    missing_a = a is None or (isinstance(a, float) and np.isnan(a))
    missing_b = b is None or (isinstance(b, float) and np.isnan(b))
    if missing_a or missing_b:
        return missing_a and missing_b
    if isinstance(a, float | np.floating) or isinstance(b, float | np.floating):
        return bool(np.isclose(float(a), float(b), rtol=1e-9, atol=1e-9))
    return bool(a == b)

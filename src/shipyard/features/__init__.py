"""The feature store: features defined once (entities, sources, views, time-window
aggregations), point-in-time correct training sets that never drop a row, an online store
(SQLite, or Redis at scale) that honours each view's TTL, and features looked up for
predictions by entity keys.

    from shipyard.features import Entity, FeatureView, FileSource, Aggregation
    customer = Entity("customer", join_keys=["customer_id"])
    customer_stats = FeatureView(
        name="customer_stats", entities=[customer],
        source=FileSource("data/transactions.parquet"), timestamp_field="event_timestamp",
        aggregations=[Aggregation("amount", "mean", "30d",
                                  name="customer_avg_transaction_amount_30d")],
    )
"""

from __future__ import annotations

from shipyard.features._definitions import (
    FUNCTIONS,
    Aggregation,
    Definitions,
    Entity,
    Feature,
    FeatureView,
    FileSource,
    LogSource,
    Source,
    SqlSource,
    load_definitions,
)
from shipyard.features._offline import Selection, TrainingSet
from shipyard.features._online import Layout, OnlineStore, RedisStore, SqliteStore
from shipyard.features._repository import MaterializationRun, StoredView
from shipyard.features._store import Change, FeatureStore, OnlineResult, open_online_store

__all__ = [
    "FUNCTIONS",
    "Aggregation",
    "Change",
    "Definitions",
    "Entity",
    "Feature",
    "FeatureStore",
    "FeatureView",
    "FileSource",
    "Layout",
    "LogSource",
    "MaterializationRun",
    "OnlineResult",
    "OnlineStore",
    "RedisStore",
    "Selection",
    "Source",
    "SqlSource",
    "SqliteStore",
    "StoredView",
    "TrainingSet",
    "load_definitions",
    "open_online_store",
]

"""A model's prediction log as a feature source: what the model saw, aggregated per entity,
point in time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from shipyard.core import Settings
from shipyard.features import FeatureStore, load_definitions
from shipyard.logstore import LogWriter
from shipyard.registry import Registry
from shipyard.serving import PredictionService
from tests.monitoring._logdata import log_scored

START = datetime(2026, 9, 1, tzinfo=UTC)


def test_a_view_over_the_prediction_log(sqlite_settings: Settings, tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    frame = pd.DataFrame(
        {
            "customer_id": rng.integers(1, 20, 600).astype(np.int64),
            "amount": rng.lognormal(3, 1, 600),
        }
    )
    y = (frame["amount"] > 25).astype(int).to_numpy()
    with Registry.from_settings(sqlite_settings) as registry:
        registry.register(
            LogisticRegression().fit(frame, y), name="scorer", sample=frame.iloc[:100]
        )
        writer = LogWriter(
            tmp_path / "spool", registry.artifacts, fsync_seconds=0
        )  # flushed by hand
        log_scored(PredictionService(registry, sqlite_settings), writer, "scorer", frame, y,
                   START.timestamp(), hours=12)  # fmt: skip
        writer.flush()
        module = tmp_path / "logged.py"
        module.write_text(
            "from shipyard.features import Aggregation, Entity, FeatureView, LogSource\n"
            "c = Entity('customer', join_keys=['customer_id'])\n"
            "seen = FeatureView(name='seen', entities=[c], source=LogSource('scorer'), timestamp_field='ts',\n"
            "    aggregations=[Aggregation('amount', 'count', '6h', name='requests_6h'),\n"
            "                  Aggregation('amount', 'sum', '1d', name='amount_1d')])\n"
        )
        store = FeatureStore(registry, sqlite_settings)
        store.apply(load_definitions(module))
        at = START + timedelta(hours=8, minutes=30)
        got = store.training_set(
            pd.DataFrame({"customer_id": range(1, 20)}).assign(event_timestamp=at), ["seen:*"]
        ).to_pandas()
    # the brute force: rows logged hour by hour from START (12 chunks of 50)
    times = np.repeat([START + timedelta(hours=h) for h in range(12)], 50)
    logged = frame.assign(ts=times)
    for _, row in got.iterrows():
        mine = logged[(logged["customer_id"] == row["customer_id"]) & (logged["ts"] <= at)]
        assert row["requests_6h"] == (mine["ts"] > at - timedelta(hours=6)).sum()
        assert np.isclose(
            row["amount_1d"] if not pd.isna(row["amount_1d"]) else 0.0, mine["amount"].sum()
        )

"""Retraining from the feature store: a spec's `data: {source: features, ...}` builds the
training set point in time, and the new version records the views it was built from, so it
is served by entity keys."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from shipyard.core import Settings
from shipyard.features import FeatureStore, load_definitions
from shipyard.logstore import LogReader
from shipyard.registry import Registry
from shipyard.registry import served_feature_refs as feature_refs
from shipyard.retraining import RetrainSpec
from shipyard.retraining._pipeline import Pipeline
from shipyard.tracking import Tracker
from tests.features.conftest import entity_rows, transactions

TRAINER = """
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

COLUMNS = ["customer_avg_transaction_amount_30d", "customer_count_7d", "merchant_fraud_rate_7d", "amount"]


def train(frame, params):
    # entities without events have no average: imputed, as serving will see them
    model = make_pipeline(SimpleImputer(), LogisticRegression(max_iter=500))
    return model.fit(frame[COLUMNS], frame["label"])
"""
FEATURES = [
    "customer_activity:customer_avg_transaction_amount_30d",
    "customer_activity:customer_count_7d",
    "merchant_risk:merchant_fraud_rate_7d",
    "amount",
]


def test_a_spec_trains_on_point_in_time_features(
    sqlite_settings: Settings, definitions_file: Path, tmp_path: Path
) -> None:
    (tmp_path / "store_trainer.py").write_text(textwrap.dedent(TRAINER))
    rows = entity_rows(transactions(), n=400).assign(amount=lambda f: f["label"] * 25.0 + 5.0)
    rows.to_parquet(tmp_path / "labels.parquet")
    spec = RetrainSpec(
        name="fraud-from-store", train="store_trainer:train", gates=["accuracy >= 0.6"],
        data={"source": "features", "entities": "labels.parquet", "features": FEATURES,
              "label": "label", "time_column": "event_timestamp"},
    )  # fmt: skip
    with Registry.from_settings(sqlite_settings) as registry:
        FeatureStore(registry, sqlite_settings).apply(load_definitions(definitions_file))
        pipeline = Pipeline(
            registry, Tracker(registry.database, registry.artifacts), LogReader(registry.artifacts),
            spec, code_dir=tmp_path, clock=lambda: datetime(2026, 7, 1, tzinfo=UTC),
        )  # fmt: skip
        record = pipeline.train_and_canary({"kind": "manual"}, canary=False)
        assert record["status"] == "registered", record["steps"][-1]
        data_step = next(s for s in record["steps"] if s["step"] == "data")["evidence"]
        assert data_step["source"] == "features"
        assert data_step["rows"] == len(rows)
        version = registry.get_version("fraud-from-store", 1)
        assert version.lineage is not None
        assert version.lineage["feature_store"]["views"] == {
            "customer_activity": 1,
            "merchant_risk": 1,
        }
        # served by entity keys: the three store features, not the request's amount
        assert feature_refs(version.lineage) == tuple(
            f.replace(":", "@1:", 1) for f in FEATURES if ":" in f
        )
        assert version.signature.names == [f.split(":")[-1] for f in FEATURES]
        assert np.isfinite(version.metrics.get("accuracy", np.nan))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"source": "features", "features": FEATURES}, "needs data.entities"),
        (
            {"source": "features", "entities": "x.parquet", "features": ["amount"]},
            "at least one view:feature",
        ),
    ],
)
def test_a_features_spec_says_what_it_lacks(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetrainSpec(name="m", train="t:f", data=data)

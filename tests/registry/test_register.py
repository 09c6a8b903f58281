"""Registering versions: numbering, the bundle on disk, metadata, failures that leave nothing."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sklearn
from tests.conftest import records

import shipyard
from shipyard.core import Settings
from shipyard.core import errors as e
from shipyard.demo import FEATURES, LABEL
from shipyard.registry import Registry


def _bundle_folder(registry: Registry, name: str, version: int) -> Path:
    return registry.artifacts.local_path(f"models/{name}/{version}")


def test_versions_count_up_per_name(
    registry: Registry, fraud_model: Any, fraud_sample: pd.DataFrame
) -> None:
    first = registry.register(fraud_model, name="fraud-detector", sample=fraud_sample)
    second = registry.register(fraud_model, name="fraud-detector", sample=fraud_sample)
    other = registry.register(fraud_model, name="churn", sample=fraud_sample)
    assert (first.version, second.version, other.version) == (1, 2, 1)
    model = registry.get_model("fraud-detector")
    assert model.latest_version == 2
    assert model.version_count == 2
    assert [m.name for m in registry.list_models()] == ["churn", "fraud-detector"]


def test_bundle_has_the_design_layout_and_every_hash(
    registry: Registry, fraud_model: Any, fraud_data: pd.DataFrame, fraud_sample: pd.DataFrame
) -> None:
    version = registry.register(
        fraud_model,
        name="fraud-detector",
        sample=fraud_sample,
        training_data=fraud_data[[*FEATURES, LABEL]],
        metrics={"auc": 0.91},
        params={"C": 1.0},
        tags={"team": "risk"},
        description="logistic regression",
        purpose="flag card transactions for review",
        threshold=0.2,
    )
    folder = _bundle_folder(registry, "fraud-detector", version.version)
    names = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert {
        "model/model.joblib",
        "model.onnx",
        "config.json",
        "requirements.txt",
        "metadata.json",
        "reference/profile.json",
    } <= names

    metadata = json.loads((folder / "metadata.json").read_text())
    assert set(metadata["files"]) == names - {"metadata.json"}
    for rel, digest in metadata["files"].items():
        assert hashlib.sha256((folder / rel).read_bytes()).hexdigest() == digest
    assert metadata["name"] == "fraud-detector"
    assert metadata["version"] == 1
    assert metadata["creator"] == "tester"
    assert metadata["purpose"] == "flag card transactions for review"
    assert metadata["metrics"] == {"auc": 0.91}
    assert metadata["features"] == FEATURES
    assert metadata["signature"] == version.signature.to_dict()
    assert json.loads((folder / "config.json").read_text()) == {"C": 1.0}
    assert (
        f"scikit-learn=={sklearn.__version__}" in (folder / "requirements.txt").read_text().split()
    )

    # the training data is fingerprinted and profiled, not just the sample
    assert version.data_fingerprint is not None
    assert version.data_fingerprint["rows"] == len(fraud_data)
    profile = json.loads((folder / "reference" / "profile.json").read_text())
    assert profile["rows"] == len(fraud_data)
    amount = profile["columns"]["transaction_amount"]
    assert amount["quantiles"]["0.5"] == pytest.approx(fraud_data["transaction_amount"].median())
    distance = profile["columns"]["distance_from_home_km"]
    assert distance["missing_rate"] == pytest.approx(
        fraud_data["distance_from_home_km"].isna().mean()
    )
    categories = profile["columns"]["merchant_category"]["frequencies"]
    assert sum(categories.values()) == pytest.approx(1.0)


def test_version_record_carries_what_was_registered(
    registry: Registry, fraud_model: Any, fraud_sample: pd.DataFrame
) -> None:
    version = registry.register(
        fraud_model,
        name="fraud-detector",
        sample=fraud_sample,
        metrics={"auc": 0.93},
        threshold=0.25,
        features=["transaction_amount", "merchant_category"],
    )
    again = registry.get_version("fraud-detector", 1)
    assert again == version
    assert again.flavour == "sklearn"
    assert again.runtime == "onnxruntime"
    assert again.task == "binary"
    assert again.threshold == 0.25
    assert again.metrics == {"auc": 0.93}
    assert again.features == ["transaction_amount", "merchant_category"]
    assert again.created_by == "tester"
    nullable = {c.name for c in again.signature.columns if c.nullable}
    assert nullable == {"distance_from_home_km"}


def test_open_loads_a_predictor_that_matches_the_model(
    registry: Registry, fraud_model: Any, fraud_sample: pd.DataFrame
) -> None:
    registry.register(fraud_model, name="fraud-detector", sample=fraud_sample)
    bundle = registry.open("fraud-detector", 1)
    columns = bundle.metadata and registry.get_version(
        "fraud-detector", 1
    ).signature.validate_records(records(fraud_sample.iloc[:50]))
    scores = bundle.predictor.predict(columns)[:, 1]
    expected = fraud_model.predict_proba(fraud_sample.iloc[:50])[:, 1]
    np.testing.assert_allclose(scores, expected, atol=1e-5)


def test_a_tampered_bundle_is_refused_naming_the_file(
    registry: Registry, fraud_model: Any, fraud_sample: pd.DataFrame
) -> None:
    registry.register(fraud_model, name="fraud-detector", sample=fraud_sample)
    model_file = _bundle_folder(registry, "fraud-detector", 1) / "model" / "model.joblib"
    model_file.write_bytes(model_file.read_bytes() + b"\x00")
    with pytest.raises(e.ArtifactCorrupted, match=r"model/model\.joblib"):
        registry.open("fraud-detector", 1)


def test_a_rewritten_manifest_is_refused(
    registry: Registry, fraud_model: Any, fraud_sample: pd.DataFrame
) -> None:
    registry.register(fraud_model, name="fraud-detector", sample=fraud_sample)
    manifest = _bundle_folder(registry, "fraud-detector", 1) / "metadata.json"
    data = json.loads(manifest.read_text())
    data["threshold"] = 0.99
    manifest.write_text(json.dumps(data))
    with pytest.raises(e.ArtifactCorrupted, match=r"metadata\.json"):
        registry.open("fraud-detector", 1)


def test_a_failed_registration_leaves_no_version_and_no_files(
    registry: Registry, fraud_model: Any, fraud_sample: pd.DataFrame
) -> None:
    registry.register(
        fraud_model, name="fraud-detector", sample=fraud_sample, aliases=["production"]
    )
    with pytest.raises(e.UnsupportedModel, match="'hour_of_day' that the sample lacks"):
        # the sample lacks a column the model needs: nothing may be half-written
        registry.register(
            fraud_model, name="fraud-detector", sample=fraud_sample.drop(columns=["hour_of_day"])
        )
    with pytest.raises(e.UnsupportedModel):
        registry.register(object(), name="fraud-detector", sample=fraud_sample)
    assert [v.version for v in registry.list_versions("fraud-detector")] == [1]
    assert registry.get_model("fraud-detector").latest_version == 1
    assert registry.resolve("fraud-detector:production").version == 1
    models_dir = registry.artifacts.local_path("models/fraud-detector")
    assert sorted(p.name for p in models_dir.iterdir()) == ["1"]
    # a failed registration burns no number (nobody could see it: pending versions are hidden)
    assert registry.register(fraud_model, name="fraud-detector", sample=fraud_sample).version == 2


def test_register_without_a_sample_says_why_it_is_needed(
    registry: Registry, fraud_model: Any
) -> None:
    with pytest.raises(e.InvalidInput, match="sample="):
        registry.register(fraud_model, name="fraud-detector")


@pytest.mark.parametrize("bad", ["has space", "", "../escape", "a" * 200])
def test_bad_model_names_are_refused(
    registry: Registry, fraud_model: Any, fraud_sample: pd.DataFrame, bad: str
) -> None:
    with pytest.raises(e.InvalidName, match="not allowed"):
        registry.register(fraud_model, name=bad, sample=fraud_sample)


def test_threshold_outside_zero_one_is_refused(
    registry: Registry, fraud_model: Any, fraud_sample: pd.DataFrame
) -> None:
    with pytest.raises(e.InvalidInput, match="between 0 and 1"):
        registry.register(fraud_model, name="fraud-detector", sample=fraud_sample, threshold=1.5)


def test_concurrent_registrations_get_distinct_versions(
    settings: Settings, fraud_model: Any, fraud_sample: pd.DataFrame
) -> None:
    Registry.from_settings(settings).database.open().close()  # migrate once, up front
    results: list[int] = []
    failures: list[BaseException] = []

    def register() -> None:
        try:
            with Registry.from_settings(settings) as registry:
                results.append(
                    registry.register(
                        fraud_model, name="fraud-detector", sample=fraud_sample
                    ).version
                )
        except BaseException as error:  # collected and asserted on below
            failures.append(error)

    threads = [threading.Thread(target=register) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert sorted(results) == [1, 2, 3, 4]


def test_module_level_register_uses_the_environment_settings(
    sqlite_settings: Settings, fraud_model: Any, fraud_sample: pd.DataFrame
) -> None:
    version = shipyard.register(
        fraud_model, name="fraud-detector", sample=fraud_sample, settings=sqlite_settings
    )
    assert version.ref == "fraud-detector:1"
    with Registry.from_settings(sqlite_settings) as registry:
        assert registry.get_version("fraud-detector", 1).runtime == version.runtime


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_a_threshold_for_a_model_that_has_none_is_refused_not_dropped(
    sqlite_settings: Settings, task: str
) -> None:
    from sklearn.linear_model import LinearRegression, LogisticRegression

    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300)})
    target = frame["a"] + frame["b"]
    model = (
        LogisticRegression().fit(frame, np.digitize(target, [-0.5, 0.5]))
        if task == "multiclass"
        else LinearRegression().fit(frame, target)
    )
    with Registry.from_settings(sqlite_settings) as registry:
        with pytest.raises(e.InvalidInput, match=f"m is a {task} model.*without threshold"):
            registry.register(model, name="m", sample=frame, threshold=0.3)
        version = registry.register(model, name="m", sample=frame)
        assert version.version == 1  # the refused registration burned no number
        assert version.threshold is None


def test_a_binary_classifier_without_a_threshold_gets_one_half(
    sqlite_settings: Settings, fraud_model: Any, fraud_sample: pd.DataFrame
) -> None:
    with Registry.from_settings(sqlite_settings) as registry:
        version = registry.register(fraud_model, name="f", sample=fraud_sample)
        assert version.threshold == 0.5
        assert registry.metadata("f", 1)["threshold"] == 0.5

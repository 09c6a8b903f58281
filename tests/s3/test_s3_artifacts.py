"""shipyard on S3 (SeaweedFS on loopback): bundles, prediction logs, monitoring and a retrain
from the logs all in one bucket; a bundle changed behind shipyard's back is refused; and the
artifact store's contract suite, run over S3 as it runs over a folder and memory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from shipyard.access import KeyStore
from shipyard.app import create_app
from shipyard.core import Settings
from shipyard.core.errors import ArtifactCorrupted
from shipyard.demo import FEATURES, LABEL
from shipyard.logstore import LogReader
from shipyard.monitoring import Monitor
from shipyard.registry import Registry
from shipyard.retraining import DataSpec, Pipeline, RetrainSpec
from shipyard.store import ArtifactStore
from shipyard.tracking import Tracker
from tests.conftest import records
from tests.s3.conftest import S3Endpoint
from tests.store.test_artifacts import (  # the contract every artifact store passes
    test_a_changed_file_is_refused_naming_the_file,
    test_delete_tree_removes_everything_under_a_prefix,
    test_materialise_verifies_every_file,
    test_missing_file_is_reported,
    test_write_records_sha256_and_read_verifies,
)

__all__ = [
    "test_a_changed_file_is_refused_naming_the_file",
    "test_delete_tree_removes_everything_under_a_prefix",
    "test_materialise_verifies_every_file",
    "test_missing_file_is_reported",
    "test_write_records_sha256_and_read_verifies",
]

MODEL = "fraud-detector"


@pytest.fixture
def store(s3: S3Endpoint, tmp_path: Path) -> ArtifactStore:
    """The contract suite's store, on S3."""
    return ArtifactStore(s3.root, cache_dir=tmp_path / "cache")


def _objects(s3: S3Endpoint, prefix: str) -> list[str]:
    """Keys under the artifact root's `prefix`, as anyone listing the bucket sees them."""
    base = f"{s3.bucket}/shipyard/"
    return sorted(p.removeprefix(base) for p in s3.fs.find(base + prefix))


def test_register_serve_log_monitor_and_retrain_with_every_artifact_in_s3(
    settings: Settings,
    s3: S3Endpoint,
    tmp_path: Path,
    fraud_model: Any,
    fraud_data: pd.DataFrame,
) -> None:
    on_s3 = settings.model_copy(update={"artifact_root": s3.root, "log_flush_seconds": 0.5})
    rows = fraud_data.iloc[:1200]
    with Registry.from_settings(on_s3) as registry:
        registry.register(
            fraud_model, name=MODEL, sample=fraud_data[FEATURES].iloc[:300],
            training_data=fraud_data[[*FEATURES, LABEL]].iloc[:2000], aliases=["production"],
        )  # fmt: skip
        token = KeyStore(registry.database).create("admin", name="s3")[1]
    bundle = _objects(s3, f"models/{MODEL}/1/")
    assert {f"models/{MODEL}/1/metadata.json", f"models/{MODEL}/1/model.onnx"} <= set(bundle)

    ids: list[str] = []
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(on_s3), headers=headers) as client:
        for start in range(0, len(rows), 200):
            answer = client.post(
                f"/v1/models/{MODEL}/predict",
                json={"instances": records(rows[FEATURES].iloc[start : start + 200])},
            )
            assert answer.status_code == 200, answer.text
            ids += answer.json()["prediction_ids"]
        truth = [int(y) for y in rows[LABEL]]
        labels = [{"prediction_id": i, "label": y} for i, y in zip(ids, truth, strict=True)]
        sent = client.post("/v1/feedback", json={"feedback": labels})
        assert sent.status_code == 200, sent.text
        assert sent.json()["accepted"] == len(ids)
    # the server stopped: everything it answered is Parquet in the bucket, nothing in the spool
    assert not [p for p in on_s3.resolved_spool_dir.glob("*.spool") if p.stat().st_size]
    assert _objects(s3, f"logs/predictions/model={MODEL}/")
    assert _objects(s3, "logs/labels/")

    with Registry.from_settings(on_s3) as registry:
        reader = LogReader(registry.artifacts)
        logged = reader.predictions(MODEL).column("prediction_id").to_pylist()
        assert sorted(logged) == sorted(ids)
        assert reader.labels_of(ids) == {i: str(y) for i, y in zip(ids, truth, strict=True)}

        report = Monitor.from_settings(on_s3, registry).run(MODEL, window="1d", periods=1)
        window = report.to_dict()["versions"]["1"]["windows"][-1]
        assert (window["volume"], window["labelled"]) == (len(ids), len(ids))
        table = reader.predictions(MODEL)
        answered = dict(
            zip(table["prediction_id"].to_pylist(), table["label"].to_pylist(), strict=True)
        )
        right = sum(answered[i] == str(y) for i, y in zip(ids, truth, strict=True))
        assert window["accuracy"] == pytest.approx(right / len(ids))

        spec = RetrainSpec(
            name=MODEL, train="shipyard.demo.training:train", params={"C": 0.5},
            data=DataSpec(source="logs", label=LABEL), gates=["auc >= 0.5"],
        )  # fmt: skip
        tracker = Tracker(registry.database, registry.artifacts)
        pipeline = Pipeline(registry, tracker, reader, spec, code_dir=tmp_path)
        record = pipeline.train_and_canary({"kind": "manual"}, canary=False)
        assert record["status"] == "registered", record["steps"][-1]
        data_step = next(s for s in record["steps"] if s["step"] == "data")["evidence"]
        assert data_step["rows"] == len(ids)
        assert [v.version for v in registry.list_versions(MODEL)] == [1, 2]
    assert f"models/{MODEL}/2/model.onnx" in _objects(s3, f"models/{MODEL}/2/")
    assert _objects(s3, "datasets/")  # the training and holdout sets the run logged

    # another machine (no local cache) loads the new version from the bucket and scores
    elsewhere = on_s3.model_copy(update={"home": tmp_path / "elsewhere"})
    with Registry.from_settings(elsewhere) as registry:
        served = registry.load(MODEL, 2)
        scores = served.predictor.predict(served.signature.validate_frame(rows[FEATURES][:5]))
    assert len(scores) == 5


@pytest.mark.parametrize("changed", ["model.onnx", "metadata.json"])
def test_a_bundle_file_changed_in_s3_behind_shipyards_back_is_refused_never_served(
    sqlite_settings: Settings,
    s3: S3Endpoint,
    tmp_path: Path,
    fraud_model: Any,
    fraud_sample: pd.DataFrame,
    changed: str,
) -> None:
    on_s3 = sqlite_settings.model_copy(update={"artifact_root": s3.root, "auth": "off"})
    with Registry.from_settings(on_s3) as registry:
        registry.register(fraud_model, name=MODEL, sample=fraud_sample, aliases=["production"])
    key = f"{s3.bucket}/shipyard/models/{MODEL}/1/{changed}"
    original = s3.fs.cat_file(key)
    # same size, one byte different: only the digest can tell
    s3.fs.pipe_file(key, original[:-1] + bytes([original[-1] ^ 1]))

    # a machine that has not cached the bundle yet (a new replica, a restarted pod)
    elsewhere = on_s3.model_copy(
        update={"home": tmp_path / "elsewhere", "database_url": on_s3.resolved_database_url}
    )
    with (
        Registry.from_settings(elsewhere) as registry,
        pytest.raises(ArtifactCorrupted, match=rf"models/{MODEL}/1/{changed}.*integrity"),
    ):
        registry.load(MODEL, 1)
    with TestClient(create_app(elsewhere)) as client:
        answer = client.post(
            f"/v1/models/{MODEL}/predict", json={"instances": records(fraud_sample.iloc[:1])}
        )
        ready = client.get("/v2/health/ready")
    assert answer.status_code == 503, answer.text
    assert f"{MODEL}/1/{changed}" in answer.text
    assert ready.status_code == 503
    assert not list((tmp_path / "elsewhere" / "cache").rglob(changed))  # not even cached

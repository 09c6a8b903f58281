"""`POST /v1/logs/upload`: predictions devices made offline are logged like the server's own
(`source = edge`, the device as `job_id`, each at its own time, in its day's folder), each
exactly once across retries, overlaps and failed writes; labels join them and the monitor
counts them. On SQLite and PostgreSQL (the `settings` fixture)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pytest
from fastapi.testclient import TestClient
from sklearn.linear_model import LinearRegression, LogisticRegression
from tests.conftest import records
from tests.serving.conftest import make_key

from shipyard.app import create_app
from shipyard.core import Settings
from shipyard.core import errors as e
from shipyard.logstore import LogReader
from shipyard.registry import Registry
from shipyard.serving import EdgeUploads, PredictionUpload
from shipyard.store import ArtifactStore

MODEL = "fraud-detector"
DEVICE = "till-17"
UPLOAD = "/v1/logs/upload"


def _rows(
    sample: pd.DataFrame, n: int, *, at: datetime | None = None, score: float = 0.2
) -> list[dict[str, Any]]:
    """`n` predictions a device made a minute ago (or `at`), with ids of its own (UUIDs)."""
    moment = at or datetime.now(UTC) - timedelta(minutes=1)
    inputs = records(sample.iloc[:n])
    return [
        {"prediction_id": str(uuid.uuid4()), "ts": (moment + timedelta(seconds=i)).isoformat(),
         "inputs": inputs[i], "score": score}
        for i in range(n)
    ]  # fmt: skip


def _body(rows: list[dict[str, Any]], *, device: str = DEVICE, version: int = 1) -> dict[str, Any]:
    return {"model": MODEL, "version": version, "device_id": device, "predictions": rows}


def _edge(client: TestClient) -> pd.DataFrame:
    """The logged predictions from devices, one row each."""
    store = client.app.state.services.registry.artifacts  # type: ignore[attr-defined]
    table = LogReader(store).predictions(MODEL)
    if table.num_rows == 0:
        return pd.DataFrame(columns=["prediction_id", "source"])
    edge = table.filter(pc.equal(table.column("source"), "edge"))
    return edge.to_pandas()


def test_uploaded_predictions_are_logged_as_edge_with_the_device_and_their_own_times(
    client: TestClient, fraud_sample: pd.DataFrame, admin_token: str
) -> None:
    yesterday = datetime.now(UTC) - timedelta(days=1)
    rows = _rows(fraud_sample, 3, at=yesterday) + _rows(fraud_sample.iloc[3:], 2, score=0.9)
    answer = client.post(UPLOAD, json=_body(rows))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "accepted": 5, "duplicates": 0, "conflicts": [], "model": MODEL, "version": 1,
    }  # fmt: skip
    logged = _edge(client).set_index("prediction_id").loc[[r["prediction_id"] for r in rows]]
    assert set(logged["job_id"]) == {DEVICE}
    assert set(logged["variant"]) == {"edge"}
    assert set(logged["key_id"]) == {admin_token.split("_")[1]}
    sent = [datetime.fromisoformat(r["ts"]) for r in rows]
    assert [t.to_pydatetime() for t in logged["ts"]] == sent
    assert logged["score"].tolist() == [0.2, 0.2, 0.2, 0.9, 0.9]
    assert logged["label"].tolist() == ["0", "0", "0", "1", "1"]  # production's threshold: 0.3
    amounts = [f["transaction_amount"] for f in logged["features"]]
    assert amounts == pytest.approx(fraud_sample["transaction_amount"].iloc[:5].tolist())
    # each row in the folder of its own day: the monitor reads a period's days only
    store = client.app.state.services.registry.artifacts  # type: ignore[attr-defined]
    days = {
        p.split("date=")[1][:10] for p in store.glob(f"logs/predictions/model={MODEL}/*/edge-*")
    }
    assert days == {t.astimezone(UTC).strftime("%Y-%m-%d") for t in sent}


def test_an_upload_sent_again_is_all_duplicates_and_logs_nothing_more(
    client: TestClient, fraud_sample: pd.DataFrame
) -> None:
    rows = _rows(fraud_sample, 4)
    assert client.post(UPLOAD, json=_body(rows)).json()["accepted"] == 4
    again = client.post(UPLOAD, json=_body(rows))
    assert again.status_code == 200
    assert again.json()["accepted"] == 0
    assert again.json()["duplicates"] == 4
    assert len(_edge(client)) == 4


def test_an_overlapping_upload_logs_only_the_new_predictions(
    client: TestClient, fraud_sample: pd.DataFrame
) -> None:
    rows = _rows(fraud_sample, 6)
    client.post(UPLOAD, json=_body(rows[:4]))
    answer = client.post(UPLOAD, json=_body(rows[2:])).json()
    assert (answer["accepted"], answer["duplicates"]) == (2, 2)
    logged = _edge(client)["prediction_id"].tolist()
    assert sorted(logged) == sorted(r["prediction_id"] for r in rows)


def test_an_id_another_device_uploaded_first_is_reported_as_a_conflict_not_logged(
    client: TestClient, fraud_sample: pd.DataFrame
) -> None:
    mine = _rows(fraud_sample, 2)
    client.post(UPLOAD, json=_body(mine, device="till-1"))
    theirs = [{**mine[0], "score": 0.8}, *_rows(fraud_sample, 1)]
    answer = client.post(UPLOAD, json=_body(theirs, device="till-2")).json()
    assert answer["accepted"] == 1
    assert answer["duplicates"] == 0
    assert answer["conflicts"] == [mine[0]["prediction_id"]]
    logged = _edge(client).set_index("prediction_id")
    assert logged.loc[mine[0]["prediction_id"], "job_id"] == "till-1"
    assert len(logged) == 3


def test_an_id_twice_in_one_upload_is_422_naming_it_and_nothing_is_logged(
    client: TestClient, fraud_sample: pd.DataFrame
) -> None:
    rows = _rows(fraud_sample, 3)
    rows[2]["prediction_id"] = rows[0]["prediction_id"]
    answer = client.post(UPLOAD, json=_body(rows))
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert f"{rows[0]['prediction_id']!r} appears 2 times in this upload" in error["message"]
    assert error["details"][0]["loc"] == ["predictions", 2, "prediction_id"]
    assert _edge(client).empty


@pytest.mark.parametrize(
    ("change", "loc", "fragment"),
    [
        ({"transaction_amount": "lots"}, "transaction_amount", "must be a number"),
        ({"merchant_category": 7}, "merchant_category", "must be a string"),
        (None, "transaction_amount", "is missing"),
    ],
)
def test_inputs_that_do_not_fit_the_signature_are_422_naming_the_column(
    client: TestClient,
    fraud_sample: pd.DataFrame,
    change: dict[str, Any] | None,
    loc: str,
    fragment: str,
) -> None:
    rows = _rows(fraud_sample, 2)
    if change is None:
        rows[1]["inputs"].pop(loc)
    else:
        rows[1]["inputs"].update(change)
    answer = client.post(UPLOAD, json=_body(rows))
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["type"] == "SchemaViolation"
    assert f"predictions[1].inputs.{loc}: {fragment}" in error["message"]
    assert error["details"][0]["loc"] == ["predictions", 1, "inputs", loc]
    assert _edge(client).empty


@pytest.mark.parametrize(
    ("change", "status", "fragment"),
    [
        ({"score": None, "value": 3.0}, 422, "is a binary model: send 'score'"),
        ({"score": None}, 422, "predictions[0].score: missing"),
        ({"label": "maybe"}, 422, "'maybe' is not one of the model's classes"),
        ({"score": 1.5}, 400, "less than or equal to 1"),
        ({"ts": "2026-11-30T10:00:00"}, 400, "timezone"),
        ({"ts": "1970-01-01T00:00:00Z"}, 422, "more than 365 days ago"),
        ({"prediction_id": "a\nb"}, 400, "prediction_id"),
    ],
)
def test_outputs_times_and_ids_that_cannot_be_a_prediction_are_refused_saying_why(
    client: TestClient,
    fraud_sample: pd.DataFrame,
    change: dict[str, Any],
    status: int,
    fragment: str,
) -> None:
    rows = _rows(fraud_sample, 1)
    rows[0].update(change)
    rows[0] = {k: v for k, v in rows[0].items() if v is not None}
    answer = client.post(UPLOAD, json=_body(rows))
    assert answer.status_code == status, answer.text
    assert fragment in answer.json()["error"]["message"]
    assert _edge(client).empty


def test_a_time_ahead_of_the_server_s_clock_is_422_saying_to_set_the_device_s_clock(
    client: TestClient, fraud_sample: pd.DataFrame
) -> None:
    rows = _rows(fraud_sample, 2, at=datetime.now(UTC) + timedelta(hours=2))
    answer = client.post(UPLOAD, json=_body(rows))
    assert answer.status_code == 422
    assert "ahead of the server's clock" in answer.json()["error"]["message"]
    assert "set the device's clock" in answer.json()["error"]["message"]


def test_an_unknown_model_or_version_is_404_naming_what_exists(
    client: TestClient, fraud_sample: pd.DataFrame
) -> None:
    rows = _rows(fraud_sample, 1)
    version = client.post(UPLOAD, json=_body(rows, version=7))
    assert version.status_code == 404
    assert "has no version 7; versions are 1-2" in version.json()["error"]["message"]
    model = client.post(UPLOAD, json={**_body(rows), "model": "nope"})
    assert model.status_code == 404
    assert f"registered models: {MODEL}" in model.json()["error"]["message"]


def test_only_predict_keys_upload_and_a_bound_key_only_for_its_model(
    client: TestClient, served_settings: Settings, fraud_sample: pd.DataFrame
) -> None:
    rows = _rows(fraud_sample, 1)

    def post(token: str) -> Any:
        return client.post(UPLOAD, json=_body(rows), headers={"Authorization": f"Bearer {token}"})

    read = post(make_key(served_settings, "read", name="reader"))
    assert read.status_code == 403
    assert "this call needs predict" in read.json()["error"]["message"]
    other = post(make_key(served_settings, "predict", model="other-model", name="other"))
    assert other.status_code == 403
    assert "bound to model 'other-model'" in other.json()["error"]["message"]
    assert client.post(UPLOAD, json=_body(rows), headers={"Authorization": ""}).status_code == 401
    assert _edge(client).empty
    mine = post(make_key(served_settings, "predict", model=MODEL, name="till"))
    assert mine.status_code == 200
    assert mine.json()["accepted"] == 1


def test_more_than_10000_predictions_in_one_upload_is_413_saying_to_split_them(
    client: TestClient, fraud_sample: pd.DataFrame
) -> None:
    row = _rows(fraud_sample, 1)[0]
    answer = client.post(UPLOAD, json=_body([row] * 10_001))
    assert answer.status_code == 413
    assert "over the limit of 10,000; split them" in answer.json()["error"]["message"]


def test_a_log_that_cannot_be_written_is_503_records_no_id_and_the_retry_logs_every_row(
    client: TestClient, fraud_sample: pd.DataFrame
) -> None:
    rows = _rows(fraud_sample, 5)
    store = client.app.state.services.registry.artifacts  # type: ignore[attr-defined]
    day = datetime.fromisoformat(rows[0]["ts"]).strftime("%Y-%m-%d")
    # a file where the day's folder must go: the store cannot write there, whoever runs this
    blocker = store.local_path(f"logs/predictions/model={MODEL}/date={day}")
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("not a folder")
    refused = client.post(UPLOAD, json=_body(rows))
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "5"
    assert (
        "nothing of this upload was recorded: send it again" in refused.json()["error"]["message"]
    )
    blocker.unlink()
    assert _edge(client).empty
    retried = client.post(UPLOAD, json=_body(rows))
    assert retried.status_code == 200
    assert (retried.json()["accepted"], retried.json()["duplicates"]) == (5, 0)
    assert sorted(_edge(client)["prediction_id"]) == sorted(r["prediction_id"] for r in rows)


class _WritesThenFails(ArtifactStore):
    """A store whose writes land and then report failure: what a server killed after writing
    an upload's segment and before committing its claims leaves behind."""

    def put_bytes(self, path: str, data: bytes) -> None:
        super().put_bytes(path, data)
        raise OSError("connection reset after the write")


def _upload(rows: list[dict[str, Any]], device: str = DEVICE) -> PredictionUpload:
    return PredictionUpload.model_validate(_body(rows, device=device))


def test_a_segment_written_before_a_failed_commit_is_replaced_by_the_retry_not_repeated(
    served_settings: Settings, fraud_sample: pd.DataFrame
) -> None:
    rows = _rows(fraud_sample, 4)
    with Registry.from_settings(served_settings) as registry:
        broken = Registry(
            registry.database, _WritesThenFails(registry.artifacts.root), actor="tester"
        )
        with pytest.raises(e.LogUnavailable):
            EdgeUploads(broken).upload(_upload(rows))
        reader = LogReader(registry.artifacts)
        assert reader.predictions(MODEL).num_rows == 4  # written, never claimed
        result = EdgeUploads(registry).upload(_upload(rows))
        assert (result.accepted, result.duplicates) == (4, 0)
        logged = reader.predictions(MODEL).column("prediction_id").to_pylist()
    assert sorted(logged) == sorted(r["prediction_id"] for r in rows)


def test_overlapping_uploads_at_once_log_each_prediction_once(
    served_settings: Settings, fraud_sample: pd.DataFrame
) -> None:
    rows = _rows(fraud_sample, 300)
    batches = [rows[:200], rows[100:], rows[50:250], rows]
    start = threading.Barrier(len(batches))
    results: list[Any] = [None] * len(batches)
    with Registry.from_settings(served_settings) as registry:
        uploads = EdgeUploads(registry)

        def send(i: int) -> None:
            start.wait(timeout=30)
            try:
                results[i] = uploads.upload(_upload(batches[i]))
            except Exception as error:  # reported below, not lost in the thread
                results[i] = error

        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(batches))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not any(t.is_alive() for t in threads)
        logged = LogReader(registry.artifacts).predictions(MODEL).column("prediction_id")
    assert not [r for r in results if isinstance(r, Exception)], results
    assert sum(r.accepted for r in results) == 300
    assert sum(r.accepted + r.duplicates for r in results) == sum(len(b) for b in batches)
    assert len(logged) == 300
    assert sorted(logged.to_pylist()) == sorted(r["prediction_id"] for r in rows)


def test_labels_for_uploaded_predictions_join_them_and_the_monitor_counts_them(
    client: TestClient, fraud_sample: pd.DataFrame
) -> None:
    rows = _rows(fraud_sample, 4)
    rows[0]["prediction_id"] = "till-17/000001"  # any text a device makes
    rows[1]["prediction_id"] = uuid.uuid4().hex  # 32 hex digits, but not a shipyard id's time
    client.post(UPLOAD, json=_body(rows))
    labels = [{"prediction_id": r["prediction_id"], "label": i % 2} for i, r in enumerate(rows)]
    answer = client.post("/v1/feedback", json=labels)
    assert answer.json() == {"accepted": 4, "pending": [], "unknown": []}
    services = client.app.state.services  # type: ignore[attr-defined]
    services.writer.flush()
    report = services.monitor.run(MODEL, window="1h", periods=3, record=False)
    edge = [w for w in report.versions[1]["by_variant"] if w["variant"] == "edge"]
    assert sum(w["volume"] for w in edge) == 4
    assert sum(w["labelled"] for w in edge) == 4
    # a label that replaces a different one is audited, as for the server's predictions
    client.post("/v1/feedback", json={"prediction_id": rows[0]["prediction_id"], "label": 1})
    history = client.get(f"/v1/models/{MODEL}/history").json()
    changed = [h for h in history["events"] if h["action"] == "label.changed"]
    assert changed[0]["details"]["labels"] == [
        {"prediction_id": "till-17/000001", "before": "0", "after": "1"}
    ]


def test_a_label_for_an_id_no_device_uploaded_is_refused_with_the_reason(
    client: TestClient,
) -> None:
    answer = client.post("/v1/feedback", json={"prediction_id": "till-17/000404", "label": 1})
    assert answer.json()["unknown"] == [
        {
            "prediction_id": "till-17/000404",
            "reason": "not a shipyard prediction id (32 hex digits), nor one a device uploaded",
        }
    ]


@pytest.fixture
def tasks(settings: Settings) -> Iterator[TestClient]:
    """A three-class model (classes 0, 1, 2) and a regressor, auth off."""
    rng = np.random.default_rng(0)
    x = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300)})
    settings = settings.model_copy(update={"auth": "off"})
    with Registry.from_settings(settings) as registry:
        tiers = LogisticRegression(max_iter=500).fit(x, np.digitize(x["a"], [-0.5, 0.5]))
        registry.register(tiers, name="tiers", sample=x)
        registry.register(LinearRegression().fit(x, 3 * x["a"]), name="spend", sample=x)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def _one(model: str, **output: Any) -> dict[str, Any]:
    row = {"prediction_id": str(uuid.uuid4()), "ts": datetime.now(UTC).isoformat(),
           "inputs": {"a": 0.1, "b": -0.2}, **output}  # fmt: skip
    return {"model": model, "version": 1, "device_id": DEVICE, "predictions": [row]}


def test_multiclass_and_regression_uploads_take_their_task_s_outputs(tasks: TestClient) -> None:
    by_list = tasks.post(UPLOAD, json=_one("tiers", probabilities=[0.1, 0.7, 0.2]))
    assert by_list.json()["accepted"] == 1
    # an answer as /predict (and an edge export) gives it: label, score and probabilities by class
    answer = {"label": 0, "score": 0.6, "probabilities": {"0": 0.6, "1": 0.3, "2": 0.1}}
    assert tasks.post(UPLOAD, json=_one("tiers", **answer)).json()["accepted"] == 1
    assert tasks.post(UPLOAD, json=_one("spend", value=12.5)).json()["accepted"] == 1
    store = tasks.app.state.services.registry.artifacts  # type: ignore[attr-defined]
    tiers = LogReader(store).predictions("tiers").sort_by("label").to_pylist()
    assert [(t["label"], t["score"]) for t in tiers] == [("0", 0.6), ("1", 0.7)]
    assert tiers[1]["probabilities"] == [0.1, 0.7, 0.2]
    assert LogReader(store).predictions("spend").column("value").to_pylist() == [12.5]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (_one("tiers", probabilities=[0.5, 0.5]), "has 2 values; the model has 3 classes"),
        (_one("tiers", probabilities=[0.5, 0.5, 0.5]), "sum to 1.5"),
        (_one("tiers", probabilities={"0": 0.5, "7": 0.5}), "one probability for each class"),
        (_one("tiers", score=0.4), "send 'probabilities'"),
        (_one("tiers", probabilities=[0.1, 0.7, 0.2], score=0.1), "not the highest probability"),
        (_one("spend", value=1.0, label=1), "is a regression model: send 'value', not 'label'"),
    ],
)
def test_outputs_that_do_not_fit_the_task_are_422_naming_them(
    tasks: TestClient, body: dict[str, Any], fragment: str
) -> None:
    answer = tasks.post(UPLOAD, json=body)
    assert answer.status_code == 422, answer.text
    assert fragment in answer.json()["error"]["message"]


def test_the_published_api_says_who_may_upload_and_what_an_upload_holds() -> None:
    document = create_app(Settings(home="/nonexistent-not-opened")).openapi()
    operation = document["paths"][UPLOAD]["post"]
    assert operation["x-scopes"] == ["predict"]
    assert {"404", "413", "422", "503"} <= set(operation["responses"])
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    schema = document["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]
    assert schema["required"] == ["model", "version", "device_id", "predictions"]
    assert schema["properties"]["predictions"]["maxItems"] == 10_000


def test_a_deleted_model_forgets_its_uploads_with_its_logs(
    served_settings: Settings, fraud_model: Any, fraud_sample: pd.DataFrame
) -> None:
    rows = _rows(fraud_sample, 3)
    batch = PredictionUpload.model_validate({**_body(rows), "model": "kiosk"})
    with Registry.from_settings(served_settings) as registry:
        uploads = EdgeUploads(registry)
        registry.register(fraud_model, name="kiosk", sample=fraud_sample)
        assert uploads.upload(batch).accepted == 3
        registry.delete("kiosk")
        assert uploads.find([r["prediction_id"] for r in rows]) == {}
        registry.register(fraud_model, name="kiosk", sample=fraud_sample)
        # its logs went with it: the same predictions uploaded again are logged again
        assert uploads.upload(batch).accepted == 3
        assert LogReader(registry.artifacts).predictions("kiosk").num_rows == 3

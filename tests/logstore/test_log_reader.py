"""`LogReader`: reading the segments back, and `known_ids`, which looks only in the day
folders an id can have been logged in."""

from __future__ import annotations

import pyarrow as pa

from shipyard.core import new_id
from shipyard.logstore import LogReader, LogWriter, id_time
from shipyard.store import ArtifactStore
from tests.logstore._logs import DAY, NOON, log_scores, logged_ids, made_at

MIDNIGHT = NOON + DAY / 2  # 2024-05-02 00:00 UTC


def test_id_time_reads_the_millisecond_clock_of_an_id_and_refuses_other_strings() -> None:
    pid = made_at(NOON + 0.25)
    made = id_time(pid)
    assert made is not None
    assert made.timestamp() == NOON + 0.25
    assert id_time("x" * 32) is None
    assert id_time(pid[:-1]) is None


def test_known_ids_finds_flushed_predictions_and_ignores_the_rest(
    writer: LogWriter, any_store: ArtifactStore
) -> None:
    logged = [new_id(), new_id()]
    log_scores(writer, logged)
    writer.flush()
    reader = LogReader(any_store)
    assert reader.known_ids([*logged, new_id(), "nope"]) == set(logged)
    assert reader.known_ids(["nope"]) == set()
    assert reader.known_ids([]) == set()


def test_known_ids_is_empty_before_anything_is_logged(any_store: ArtifactStore) -> None:
    assert LogReader(any_store).known_ids([new_id()]) == set()


def test_a_prediction_made_before_midnight_and_logged_after_it_is_found(
    writer: LogWriter, any_store: ArtifactStore
) -> None:
    pid = made_at(MIDNIGHT - 0.1)
    log_scores(writer, [pid], at=MIDNIGHT + 0.2)
    writer.flush()
    assert any_store.glob("logs/predictions/*/date=2024-05-02/*.parquet")
    assert LogReader(any_store).known_ids([pid]) == {pid}


def test_known_ids_only_searches_the_days_an_id_can_have_been_logged_on(
    writer: LogWriter, any_store: ArtifactStore
) -> None:
    on_time, late = made_at(NOON), made_at(NOON + 1)
    log_scores(writer, [on_time], at=NOON + 0.05)
    log_scores(writer, [late], at=NOON + 3 * DAY)  # in a day folder no lookup of it opens
    writer.flush()
    reader = LogReader(any_store)
    assert logged_ids(reader) == sorted([on_time, late])
    assert reader.known_ids([on_time, late]) == {on_time}


def test_predictions_of_one_model_and_all_models(
    writer: LogWriter, any_store: ArtifactStore
) -> None:
    fraud, churn = [new_id(), new_id()], [new_id()]
    log_scores(writer, fraud, model="fraud")
    log_scores(writer, churn, model="churn", tenure=[12])
    writer.flush()
    reader = LogReader(any_store)
    assert logged_ids(reader, "fraud") == sorted(fraud)
    assert logged_ids(reader, "churn") == sorted(churn)
    everything = reader.predictions()
    assert everything.num_rows == 3
    features = dict(
        zip(
            everything["prediction_id"].to_pylist(), everything["features"].to_pylist(), strict=True
        )
    )
    assert features[churn[0]]["tenure"] == 12  # fields of every segment survive the union
    assert features[fraud[1]]["amount"] == 1.0


def test_nothing_logged_reads_as_empty_tables(any_store: ArtifactStore) -> None:
    reader = LogReader(any_store)
    assert reader.predictions() == pa.table({})
    assert reader.labels() == pa.table({})
    assert reader.prediction_files() == []

"""Flushing the spool: Parquet segments per model, version and day, with typed columns."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shipyard.core import new_id
from shipyard.logstore import LogReader, LogWriter, write_block
from shipyard.store import ArtifactStore
from tests.logstore._logs import DAY, NOON, log_scores

TYPES = {"amount": "float64", "count": "int64", "category": "string", "weekend": "bool"}


def types_of(model: str, version: int) -> dict[str, str] | None:
    return TYPES if (model, version) == ("fraud", 3) else None


def read_segment(store: ArtifactStore, pattern: str) -> pa.Table:
    (path,) = store.glob(pattern)
    return pq.read_table(store.local_path(path))


def test_flush_writes_segments_under_model_and_date_named_after_the_spool_file(
    writer: LogWriter, spool_dir: Path, any_store: ArtifactStore
) -> None:
    ids = [new_id() for _ in range(3)]
    log_scores(writer, ids, version=3, at=NOON)
    writer.log_labels(ids[:2], [1, 0], at=NOON + DAY)
    (spool,) = spool_dir.glob("*.spool")
    assert writer.flush() == 5
    assert any_store.glob("logs/*/*/*.parquet") == [
        f"logs/labels/date=2024-05-02/{spool.stem}.parquet"
    ]
    assert any_store.glob("logs/*/*/*/*.parquet") == [
        f"logs/predictions/model=fraud/date=2024-05-01/{spool.stem}-v3.parquet"
    ]
    assert not spool.exists()
    assert writer.rows_written == 5


def test_versions_and_days_get_their_own_segments(
    writer: LogWriter, any_store: ArtifactStore
) -> None:
    log_scores(writer, [new_id()], version=1, at=NOON)
    log_scores(writer, [new_id()], version=2, at=NOON)
    log_scores(writer, [new_id(), new_id()], version=1, at=NOON + DAY)
    log_scores(writer, [new_id()], model="churn", version=1, at=NOON)
    writer.flush()
    folders = [p.rsplit("/", 1)[0] for p in any_store.glob("logs/predictions/*/*/*.parquet")]
    versions = [p.rsplit("-", 1)[1] for p in any_store.glob("logs/predictions/*/*/*.parquet")]
    assert list(zip(folders, versions, strict=True)) == [
        ("logs/predictions/model=churn/date=2024-05-01", "v1.parquet"),
        ("logs/predictions/model=fraud/date=2024-05-01", "v1.parquet"),
        ("logs/predictions/model=fraud/date=2024-05-01", "v2.parquet"),
        ("logs/predictions/model=fraud/date=2024-05-02", "v1.parquet"),
    ]
    assert LogReader(any_store).predictions("fraud").num_rows == 4


def test_prediction_columns_are_typed_by_the_signature_and_missing_values_are_null(
    spool_dir: Path, store: ArtifactStore
) -> None:
    ids = [new_id() for _ in range(3)]
    with LogWriter(spool_dir, store, types_of=types_of, flush_seconds=3600) as writer:
        writer.log_predictions(
            model="fraud",
            version=3,
            variant="candidate",
            ids=ids,
            inputs={
                "amount": np.array([12.5, np.nan, 3.0]),
                "count": np.array([1, 2, 3]),
                "category": np.array(["grocery", None, "travel"], dtype=object),
                "weekend": [True, False, None],
            },
            outputs={
                "score": np.array([0.9, np.nan, 0.1]),
                "label": [1, 0, 1],
                "probabilities": np.array([[0.1, 0.9], [0.5, 0.5], [0.9, 0.1]]),
            },
            latency_ms=2.5,
            key_id="key-1",
            request_id="req-1",
            at=NOON,
        )
    table = read_segment(store, "logs/predictions/*/*/*.parquet")
    assert table.schema == pa.schema(
        [
            ("prediction_id", pa.string()),
            ("ts", pa.timestamp("us", tz="UTC")),
            ("model", pa.string()),
            ("version", pa.int32()),
            ("variant", pa.string()),
            ("key_id", pa.string()),
            ("request_id", pa.string()),
            ("latency_ms", pa.float64()),
            ("routing_key", pa.string()),  # null: the request had no routing key
            ("source", pa.string()),
            ("job_id", pa.string()),  # null: not a batch job's or a stream's
            (
                "features",
                pa.struct(
                    [
                        ("amount", pa.float64()),
                        ("count", pa.int64()),
                        ("category", pa.string()),
                        ("weekend", pa.bool_()),
                    ]
                ),
            ),
            ("score", pa.float64()),
            ("label", pa.string()),
            ("value", pa.float64()),
            ("probabilities", pa.list_(pa.float64())),
        ]
    )
    rows = table.to_pylist()
    assert [r["prediction_id"] for r in rows] == ids
    assert rows[0] | {"prediction_id": None} == {
        "prediction_id": None,
        "ts": datetime.fromtimestamp(NOON, UTC),
        "model": "fraud",
        "version": 3,
        "variant": "candidate",
        "key_id": "key-1",
        "request_id": "req-1",
        "latency_ms": 2.5,
        "routing_key": None,
        "source": "online",
        "job_id": None,
        "features": {"amount": 12.5, "count": 1, "category": "grocery", "weekend": True},
        "score": 0.9,
        "label": "1",
        "value": None,
        "probabilities": [0.1, 0.9],
    }
    assert rows[1]["features"] == {"amount": None, "count": 2, "category": None, "weekend": False}
    assert rows[1]["score"] is None
    assert rows[2]["features"]["weekend"] is None


def test_large_entries_spool_numbers_as_raw_bytes_and_read_back_exactly_with_small_ones(
    spool_dir: Path, store: ArtifactStore
) -> None:
    rng = np.random.default_rng(7)
    big = 40  # over the size from which numeric columns are spooled as raw bytes
    amounts = rng.normal(size=big)
    amounts[[3, 17]] = np.nan  # JSON nulls in a nullable column, as validation leaves them
    counts = rng.integers(-(2**62), 2**62, size=big)
    weekend = rng.random(big) < 0.5
    scores = rng.random(big)
    small_ids, big_ids = [new_id(), new_id()], [new_id() for _ in range(big)]
    with LogWriter(spool_dir, store, types_of=types_of, flush_seconds=3600) as writer:
        for ids, amount, count, flags, score in (
            (small_ids, np.array([1.5, 2.5]), np.array([7, 8]), np.array([True, False]),
             np.array([0.25, 0.75])),
            (big_ids, amounts, counts, weekend, scores),
        ):  # fmt: skip
            writer.log_predictions(
                model="fraud",
                version=3,
                variant="primary",
                ids=ids,
                inputs={"amount": amount, "count": count, "weekend": flags,
                        "category": np.array(["a"] * len(ids), dtype=object)},
                outputs={"score": score, "label": [int(s >= 0.5) for s in score]},
                latency_ms=1.0,
                at=NOON,
            )  # fmt: skip
        (spool,) = spool_dir.glob("*.spool")
        small_line, rest = spool.read_bytes().split(b"\n", 1)
        big_line, raw = rest.split(b"\n", 1)
        assert b'"raw"' not in small_line
        assert big_line.count(b'{"raw":') == 4  # amount, count, weekend; score
        assert len(raw) == big * (8 + 8 + 1 + 8)  # their bytes, after the line
    table = read_segment(store, "logs/predictions/*/*/*.parquet")
    features = table.column("features").combine_chunks()
    assert table.column("prediction_id").to_pylist() == small_ids + big_ids
    expected_amounts = [1.5, 2.5] + [None if np.isnan(a) else a for a in amounts]
    assert features.field("amount").to_pylist() == expected_amounts
    assert features.field("count").to_pylist() == [7, 8, *counts.tolist()]
    assert features.field("weekend").to_pylist() == [True, False, *weekend.tolist()]
    assert features.field("category").to_pylist() == ["a"] * (big + 2)
    assert table.column("score").to_pylist() == [0.25, 0.75, *scores.tolist()]
    assert table.column("label").to_pylist()[2:] == [str(int(s >= 0.5)) for s in scores]


def test_an_untyped_column_spooled_as_a_list_and_as_raw_bytes_reads_as_one_column(
    writer: LogWriter, any_store: ArtifactStore
) -> None:
    log_scores(writer, [new_id()], rooms=[3])  # one int from JSON
    writer.log_predictions(
        model="fraud",
        version=1,
        variant="primary",
        ids=[new_id() for _ in range(20)],
        inputs={"rooms": np.arange(20, dtype=np.float64) + 0.5},
        outputs={"score": np.full(20, 0.5), "label": [1] * 20},
        latency_ms=1.0,
    )
    writer.flush()
    rooms = LogReader(any_store).predictions().column("features").combine_chunks().field("rooms")
    assert rooms.to_pylist() == [3, *(np.arange(20) + 0.5).tolist()]


def test_regression_values_fill_value_and_leave_the_classifier_columns_null(
    writer: LogWriter, any_store: ArtifactStore
) -> None:
    writer.log_predictions(
        model="price",
        version=1,
        variant="primary",
        ids=[new_id(), new_id()],
        inputs={"rooms": [3, 4]},
        outputs={"value": np.array([250_000.0, np.nan])},
        latency_ms=1.0,
    )
    writer.flush()
    table = LogReader(any_store).predictions("price")
    assert table.column("value").to_pylist() == [250_000.0, None]
    assert table.column("score").to_pylist() == [None, None]
    assert table.column("label").to_pylist() == [None, None]
    assert table.column("features").to_pylist() == [{"rooms": 3}, {"rooms": 4}]


def test_feature_struct_keeps_the_order_the_inputs_came_in(
    spool_dir: Path, store: ArtifactStore
) -> None:
    names = ["zeta", "beta", "omega", "alpha", "kappa", "delta", "gamma", "sigma"]
    with LogWriter(spool_dir, store, flush_seconds=3600) as writer:
        log_scores(writer, [new_id()], **{name: [1.0] for name in names})
    table = read_segment(store, "logs/predictions/*/*/*.parquet")
    assert [field.name for field in table.schema.field("features").type] == names


def test_features_absent_from_some_entries_are_null_for_those_rows(
    writer: LogWriter, any_store: ArtifactStore
) -> None:
    log_scores(writer, [new_id()], a=[1.0], b=[2.0])
    log_scores(writer, [new_id(), new_id()], b=[3.0, 4.0], c=["x", "y"])
    writer.flush()
    assert LogReader(any_store).predictions().column("features").to_pylist() == [
        {"a": 1.0, "b": 2.0, "c": None},
        {"a": None, "b": 3.0, "c": "x"},
        {"a": None, "b": 4.0, "c": "y"},
    ]


def test_labels_are_stored_as_text_so_every_class_type_compares_alike(
    writer: LogWriter, any_store: ArtifactStore
) -> None:
    ids = [new_id() for _ in range(6)]
    writer.log_labels(ids, [True, False, 0, 1.0, "fraud", 2.5], key_id="key-7", at=NOON)
    writer.flush()
    table = LogReader(any_store).labels()
    assert table.schema.field("label").type == pa.string()
    assert table.column("prediction_id").to_pylist() == ids
    assert table.column("label").to_pylist() == ["true", "false", "0", "1", "fraud", "2.5"]
    assert set(table.column("key_id").to_pylist()) == {"key-7"}
    assert set(table.column("received_at").to_pylist()) == {datetime.fromtimestamp(NOON, UTC)}


def test_pending_ids_are_the_logged_ids_until_the_flush(writer: LogWriter) -> None:
    first, second = [new_id(), new_id()], [new_id()]
    assert writer.pending_ids() == set()
    log_scores(writer, first)
    log_scores(writer, second)
    writer.log_labels(first, [1, 0])
    assert writer.pending_ids() == {*first, *second}
    writer.flush()
    assert writer.pending_ids() == set()


class Clock:
    """The writer's monotonic clock, moved by the test. It counts the reads of threads other
    than the test's (the flusher's: one per round), so a test can wait until the flusher has
    looked at the spool instead of sleeping and hoping it has."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self._reads = 0
        self._read = threading.Condition()

    def __call__(self) -> float:
        if threading.current_thread() is not threading.main_thread():
            with self._read:
                self._reads += 1
                self._read.notify_all()
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def wait_for_rounds(self, rounds: int) -> None:
        """Wait until the flusher has finished `rounds` rounds that began after this call (its
        start reads the clock too, and the round under way may have read it already)."""
        with self._read:
            target = self._reads + rounds + 2
            assert self._read.wait_for(lambda: self._reads >= target, timeout=10), (
                "the flusher did not run for 10 s"
            )


def test_lag_is_the_age_of_the_oldest_row_not_in_parquet_and_zero_after(
    spool_dir: Path, any_store: ArtifactStore
) -> None:
    clock = Clock()
    away = [True]  # what types the logs does not answer: segments cannot be written

    def types_of(model: str, version: int) -> dict[str, str] | None:
        if away[0]:
            raise ConnectionError("the registry does not answer")
        return None

    writer = LogWriter(spool_dir, any_store, types_of=types_of, fsync_seconds=0, clock=clock)
    try:
        assert writer.lag_seconds == 0.0
        log_scores(writer, [new_id()])
        clock.advance(2.0)
        assert writer.lag_seconds == 2.0
        assert writer.flush() == 0  # not written: the file waits for the next try
        log_scores(writer, [new_id()])  # into a new spool file, 2 s younger
        clock.advance(1.5)
        assert writer.lag_seconds == 3.5  # the waiting file's age, not the new one's
        away[0] = False
        assert writer.flush() == 2
        assert writer.lag_seconds == 0.0
        clock.advance(10.0)
        log_scores(writer, [new_id()])
        clock.advance(0.25)
        assert writer.lag_seconds == 0.25  # counted from the first row after the flush
    finally:
        writer.close()


def test_segment_rows_cut_the_spool_long_before_flush_seconds(
    spool_dir: Path, any_store: ArtifactStore
) -> None:
    ids = [new_id() for _ in range(5)]
    clock = Clock()  # never moves: flush_seconds never comes
    # fsync_seconds only sets the flusher's round to 50 ms; on this clock it never fsyncs
    with LogWriter(
        spool_dir, any_store, flush_seconds=3600, segment_rows=5, fsync_seconds=0.05, clock=clock
    ) as writer:
        log_scores(writer, ids[:4])
        clock.wait_for_rounds(1)  # the flusher saw the four rows: below segment_rows, no cut
        assert any_store.glob("logs/predictions/*/*/*.parquet") == []
        assert writer.pending_ids() == set(ids[:4])
        log_scores(writer, ids[4:])
        clock.wait_for_rounds(1)
        assert writer.pending_ids() == set()
        assert len(any_store.glob("logs/predictions/*/*/*.parquet")) == 1


def test_the_background_flusher_writes_every_flush_seconds(
    spool_dir: Path, any_store: ArtifactStore
) -> None:
    clock = Clock()
    with LogWriter(
        spool_dir, any_store, flush_seconds=60, fsync_seconds=0.05, clock=clock
    ) as writer:
        log_scores(writer, [new_id()])
        clock.advance(59.9)
        clock.wait_for_rounds(1)
        assert len(writer.pending_ids()) == 1  # not yet
        clock.advance(0.1)
        clock.wait_for_rounds(1)
        assert writer.pending_ids() == set()
        assert LogReader(any_store).predictions().num_rows == 1


def test_segments_dictionary_encode_repeating_text_and_store_numbers_and_ids_plain(
    spool_dir: Path, store: ArtifactStore
) -> None:
    with LogWriter(spool_dir, store, types_of=types_of, flush_seconds=3600) as writer:
        log_scores(writer, [new_id() for _ in range(30)], version=3, amount=list(range(30)),
                   category=["grocery", "travel"] * 15)  # fmt: skip
    (path,) = store.glob("logs/predictions/*/*/*.parquet")
    metadata = pq.ParquetFile(store.local_path(path)).metadata.row_group(0)
    encodings = {
        metadata.column(j).path_in_schema: metadata.column(j).encodings
        for j in range(metadata.num_columns)
    }
    dictionary = {path for path, used in encodings.items() if "RLE_DICTIONARY" in used}
    assert {"model", "variant", "label", "features.category"} <= dictionary
    assert not dictionary & {"prediction_id", "features.amount", "score", "latency_ms"}
    # floats byte-stream-split (zstd finds what repeats in each byte), ids delta-encoded
    assert all("BYTE_STREAM_SPLIT" in encodings[c] for c in ("features.amount", "score"))
    assert "DELTA_BYTE_ARRAY" in encodings["prediction_id"]


def test_a_block_of_half_single_and_double_floats_reads_back_exactly(store: ArtifactStore) -> None:
    """Every float width a feature may have reads back as written, by pyarrow and by DuckDB
    (which reads the log, and cannot read a byte-stream-split float16)."""
    n = 1_000
    values = np.linspace(-5, 5, n)
    features = {
        "half": pa.array(values.astype(np.float16)),
        "single": pa.array(values.astype(np.float32)),
        "double": pa.array(values),
    }
    ids = pa.array([f"block-{i:06d}" for i in range(n)])
    path = write_block(
        store, name="block", model="fraud", version=1, ids=ids, at=datetime.fromtimestamp(NOON, UTC), source="batch",
        job_id="job", variant="batch", features=features, outputs={"score": pa.array(values / 10)},
    )  # fmt: skip
    table = pq.read_table(store.local_path(path))
    assert table.column("prediction_id").to_pylist() == ids.to_pylist()
    for name, array in features.items():
        assert table.column("features").combine_chunks().field(name).equals(array)
    assert np.array_equal(table.column("score").to_numpy(), values / 10)
    read = (
        duckdb.connect()
        .execute(
            "SELECT features.half, features.single, features.double FROM read_parquet(?) "
            "ORDER BY prediction_id",
            [str(store.local_path(path))],
        )
        .fetchnumpy()
    )
    for name, array in features.items():
        assert np.array_equal(
            np.asarray(read[name], np.float64), array.to_numpy().astype(np.float64)
        )

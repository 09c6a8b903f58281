"""The routing key in the prediction log: a hash of it (never the key) on every prediction it
routed; segments written before the column read beside new ones; and the canary's outcomes
summed per key, older rows each a cluster of their own."""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq

from shipyard.core import new_id
from shipyard.logstore import LogReader, LogWriter, routing_key_hash
from shipyard.monitoring import LogQueries, Period
from shipyard.store import ArtifactStore
from tests.logstore._logs import NOON

START = datetime.fromtimestamp(NOON - 3600, UTC)
PERIOD = Period(START, START + timedelta(days=3), timedelta(days=3))


def _log(
    writer: LogWriter,
    ids: list[str],
    *,
    routing_key: str | None,
    labels: list[object],
    values: list[float] | None = None,
    variant: str = "primary",
) -> None:
    outputs: dict[str, list[object]] = (
        {"value": values} if values is not None else {"score": [0.5] * len(ids), "label": labels}
    )
    writer.log_predictions(
        model="fraud",
        version=1,
        variant=variant,
        ids=ids,
        inputs={"amount": [1.0] * len(ids)},
        outputs=outputs,
        latency_ms=1.0,
        routing_key=routing_key,
        at=NOON,
    )


def _as_before_the_column(store: ArtifactStore) -> None:
    """Rewrite the logged predictions as one segment written before `routing_key` existed."""
    table = LogReader(store).predictions().drop_columns(["routing_key"])
    ts = table.schema.get_field_index("ts")
    table = table.set_column(ts, "ts", table.column(ts).cast(pa.timestamp("us", tz="UTC")))
    store.delete_tree("logs/predictions")
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    store.write_bytes(
        "logs/predictions/model=fraud/date=2024-05-01/old-v1.parquet", buffer.getvalue()
    )


def test_a_routing_key_is_logged_as_its_blake2b_digest_and_never_as_itself(
    writer: LogWriter, any_store: ArtifactStore
) -> None:
    keyed, unkeyed = [new_id(), new_id()], [new_id()]
    _log(writer, keyed, routing_key="customer-42", labels=[1, 0])
    _log(writer, unkeyed, routing_key=None, labels=[1])
    spooled = b"".join(p.read_bytes() for p in writer.spool_dir.glob("*.spool"))
    assert b"customer-42" not in spooled  # not even in the local spool
    writer.flush()
    logged = {
        r["prediction_id"]: r["routing_key"] for r in LogReader(any_store).predictions().to_pylist()
    }
    digest = hashlib.blake2b(b"customer-42", digest_size=8).hexdigest()
    assert routing_key_hash("customer-42") == digest
    assert logged == {keyed[0]: digest, keyed[1]: digest, unkeyed[0]: None}


def test_segments_without_the_column_read_beside_new_ones(
    writer: LogWriter, any_store: ArtifactStore
) -> None:
    old, new = [new_id(), new_id()], [new_id()]
    _log(writer, old, routing_key="a", labels=[1, 1])
    writer.flush()
    _as_before_the_column(any_store)
    _log(writer, new, routing_key="b", labels=[0])
    writer.flush()
    rows = LogReader(any_store).predictions("fraud").to_pylist()
    assert {r["prediction_id"]: r["routing_key"] for r in rows} == {
        old[0]: None,
        old[1]: None,
        new[0]: routing_key_hash("b"),
    }


def _ids(n: int) -> list[str]:
    return [new_id() for _ in range(n)]


def test_the_canary_outcomes_are_summed_per_routing_key_and_older_rows_are_their_own(
    writer: LogWriter, any_store: ArtifactStore
) -> None:
    old = _ids(2)
    _log(writer, old, routing_key="a", labels=[1, 1])  # logged before the column existed
    writer.flush()
    _as_before_the_column(any_store)
    a, b, unkeyed, unlabelled = _ids(3), _ids(2), _ids(2), _ids(1)
    _log(writer, a, routing_key="a", labels=[1, 1, 1])
    _log(writer, b, routing_key="b", labels=[0, 0])
    _log(writer, unkeyed, routing_key=None, labels=[1, 0])
    _log(writer, unlabelled, routing_key="a", labels=[1])
    shadow, pinned = _ids(1), _ids(1)
    _log(writer, shadow, routing_key="a", labels=[1], variant="shadow")
    _log(writer, pinned, routing_key="a", labels=[1], variant="pinned")
    truth = {
        **dict(zip(old, ["1", "0"], strict=True)),
        **dict(zip(a, ["1", "1", "0"], strict=True)),  # customer a: 2 of 3 right
        **dict(zip(b, ["0", "0"], strict=True)),  # customer b: 2 of 2 right
        **dict(zip(unkeyed, ["1", "1"], strict=True)),  # 1 of 2 right, a cluster each
        shadow[0]: "1",
        pinned[0]: "1",
    }
    writer.log_labels(list(truth), list(truth.values()), at=NOON + 60)
    writer.flush()
    sums = LogQueries(LogReader(any_store), "fraud", PERIOD).outcome_sums(1, regression=False)
    # clusters (n, s): old (1, 1), (1, 0); a (3, 2); b (2, 2); unkeyed (1, 1), (1, 0)
    assert sums == {
        "clusters": 6,
        "count": 9,
        "total": 6.0,
        "total_sq": 6.0,
        "cluster_total_sq": 1 + 4 + 4 + 1.0,
        "cluster_cross": 1 + 3 * 2 + 2 * 2 + 1.0,
        "cluster_size_sq": 1 + 1 + 9 + 4 + 1 + 1.0,
        "unparsed": 0,
    }


def test_a_regressors_outcome_is_its_absolute_error_and_unreadable_labels_are_counted(
    writer: LogWriter, any_store: ArtifactStore
) -> None:
    ids = _ids(3)
    _log(writer, ids, routing_key="a", labels=[], values=[10.0, 20.0, 30.0])
    writer.log_labels(ids, [12.5, "n/a", 29.0], at=NOON + 60)
    writer.flush()
    sums = LogQueries(LogReader(any_store), "fraud", PERIOD).outcome_sums(1, regression=True)
    assert (sums["clusters"], sums["count"], sums["unparsed"]) == (1, 2, 1)
    assert (sums["total"], sums["total_sq"]) == (2.5 + 1.0, 2.5**2 + 1.0)


def test_outcome_sums_read_logs_that_all_predate_the_column(
    writer: LogWriter, any_store: ArtifactStore
) -> None:
    ids = _ids(2)
    _log(writer, ids, routing_key="a", labels=[1, 0])
    writer.log_labels(ids, [1, 1], at=NOON + 60)
    writer.flush()
    _as_before_the_column(any_store)
    sums = LogQueries(LogReader(any_store), "fraud", PERIOD).outcome_sums(1, regression=False)
    assert (sums["clusters"], sums["count"], sums["total"]) == (2, 2, 1.0)

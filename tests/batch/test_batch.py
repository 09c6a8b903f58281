"""`shipyard.batch.score`: every row scored once, as the serving path scores it, written
whole, logged in blocks that `monitor` reads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

import shipyard.batch as batch
from shipyard.core import Settings
from shipyard.core.errors import Conflict, InvalidInput, SchemaViolation, ServiceUnavailable
from shipyard.demo import FEATURES
from shipyard.logstore import LogReader, id_time
from shipyard.registry import Registry


@pytest.fixture
def scored_input(tmp_path: Path, fraud_data: pd.DataFrame) -> Path:
    frame = fraud_data[FEATURES].copy()
    frame.insert(0, "transaction_id", [f"tx-{i}" for i in range(len(frame))])
    path = tmp_path / "transactions.parquet"
    # row groups smaller than a chunk and not a divisor of it: chunks cross them
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=700)
    return path


@pytest.fixture
def fraud(registry: Registry, fraud_model: Any, fraud_sample: pd.DataFrame) -> Registry:
    registry.register(
        fraud_model, name="fraud-detector", sample=fraud_sample, threshold=0.3,
        aliases=["production"],
    )  # fmt: skip
    return registry


def expected_scores(registry: Registry, frame: pd.DataFrame) -> np.ndarray:
    served = registry.load("fraud-detector", 1)
    columns = served.signature.validate_frame(frame[FEATURES])
    return np.asarray(served.predictor.predict(columns))[:, 1]


def test_every_row_scored_once_as_the_serving_path_scores_it(
    fraud: Registry, settings: Settings, scored_input: Path, tmp_path: Path
) -> None:
    out = tmp_path / "scores.parquet"
    seen: list[tuple[int, int | None]] = []
    result = batch.score(
        "fraud-detector", str(scored_input), str(out), chunk_rows=1_000,
        registry=fraud, settings=settings, progress=lambda rows, total: seen.append((rows, total)),
    )  # fmt: skip
    frame = pd.read_parquet(scored_input)
    table = pq.read_table(out)
    assert result.rows == result.scored == table.num_rows == len(frame)
    assert (result.chunks, result.version, result.invalid) == (6, 1, 0)
    assert table.column_names == [
        "transaction_id", "prediction_id", "model", "version", "score", "label",
    ]  # fmt: skip
    assert table.column("transaction_id").to_pylist() == frame["transaction_id"].tolist()
    np.testing.assert_array_equal(table.column("score").to_numpy(), expected_scores(fraud, frame))
    labels = table.column("label").to_numpy()
    np.testing.assert_array_equal(labels, (table.column("score").to_numpy() >= 0.3).astype(int))
    ids = table.column("prediction_id").to_pylist()
    assert len(set(ids)) == len(ids)
    assert all(id_time(i) is not None for i in ids)  # real prediction ids: feedback finds them
    assert seen[-1] == (len(frame), len(frame))
    assert [r for r, _ in seen] == sorted(r for r, _ in seen)
    assert not Path(f"{out}.partial").exists()

    logs = LogReader(fraud.artifacts)
    segments = logs.prediction_files(model="fraud-detector")
    assert len(segments) == 6  # one block per chunk, not one entry per row
    logged = logs.predictions("fraud-detector")
    assert sorted(logged.column("prediction_id").to_pylist()) == sorted(ids)
    assert set(logged.column("source").to_pylist()) == {"batch"}
    assert set(logged.column("job_id").to_pylist()) == {result.job_id}
    assert set(logged.column("features").type.names) >= set(FEATURES)
    by_id = dict(zip(ids, table.column("score").to_pylist(), strict=True))
    assert all(
        by_id[i] == s
        for i, s in zip(
            logged.column("prediction_id").to_pylist(),
            logged.column("score").to_pylist(),
            strict=True,
        )
    )


def test_labels_sent_for_batch_predictions_are_matched(
    fraud: Registry, settings: Settings, scored_input: Path, tmp_path: Path
) -> None:
    out = tmp_path / "scores.parquet"
    batch.score("fraud-detector", str(scored_input), str(out), registry=fraud, settings=settings)
    ids = pq.read_table(out).column("prediction_id").to_pylist()[:50]
    assert LogReader(fraud.artifacts).predictions_of(ids) == dict.fromkeys(
        ids, ("fraud-detector", 1)
    )


def test_csv_in_csv_out_and_a_folder_of_files(
    fraud: Registry, settings: Settings, fraud_data: pd.DataFrame, tmp_path: Path
) -> None:
    folder = tmp_path / "daily"
    folder.mkdir()
    frame = fraud_data[FEATURES].iloc[:900].reset_index(drop=True)
    for day in range(3):
        frame.iloc[day * 300 : (day + 1) * 300].to_csv(folder / f"day-{day}.csv", index=False)
    (folder / "_SUCCESS").write_text("")  # a writer's marker is not data
    out = tmp_path / "scores.csv"
    result = batch.score(
        "fraud-detector", str(folder), str(out), keep=["*"], chunk_rows=250,
        registry=fraud, settings=settings,
    )  # fmt: skip
    written = pd.read_csv(out)
    assert result.rows == len(written) == 900
    assert list(written.columns[: len(FEATURES)]) == FEATURES
    np.testing.assert_allclose(written["transaction_amount"], frame["transaction_amount"])
    np.testing.assert_allclose(written["score"], expected_scores(fraud, frame), rtol=1e-12)


def test_multiclass_and_regression_outputs(
    registry: Registry, settings: Settings, tmp_path: Path
) -> None:
    from sklearn.linear_model import LinearRegression, LogisticRegression

    rng = np.random.default_rng(3)
    X = pd.DataFrame(rng.normal(size=(600, 3)), columns=["a", "b", "c"])
    kinds = np.array(["low", "mid", "high"])[np.digitize(X.a, [-0.5, 0.5])]
    registry.register(LogisticRegression().fit(X, kinds), name="tiers", sample=X)
    registry.register(LinearRegression().fit(X, X.a * 2 + 1), name="spend", sample=X)
    source = tmp_path / "rows.parquet"
    X.to_parquet(source)
    tiers = tmp_path / "tiers.parquet"
    batch.score("tiers:1", str(source), str(tiers), registry=registry, settings=settings)
    table = pq.read_table(tiers).to_pandas()
    probabilities = table[[f"probability_{c}" for c in ("high", "low", "mid")]].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    assert (table["label"] == np.array(["high", "low", "mid"])[probabilities.argmax(axis=1)]).all()
    assert table["score"].tolist() == probabilities.max(axis=1).tolist()
    spend = tmp_path / "spend.parquet"
    batch.score("spend:1", str(source), str(spend), registry=registry, settings=settings)
    values = pq.read_table(spend).column("value").to_numpy()
    np.testing.assert_allclose(values, X.a * 2 + 1, atol=1e-5)
    logged = LogReader(registry.artifacts).predictions("tiers")
    assert len(logged.column("probabilities")[0].as_py()) == 3


def test_rows_the_model_cannot_score_are_left_empty_and_counted(
    registry: Registry, settings: Settings, tmp_path: Path
) -> None:
    from sklearn.linear_model import LinearRegression

    X = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0]})
    registry.register(LinearRegression().fit(X, [0, 1, 2, 3]), name="lin", sample=X)
    source = tmp_path / "rows.parquet"
    pd.DataFrame({"id": [1, 2, 3], "a": [1.0, 1e308, 2.0]}).to_parquet(source)
    out = tmp_path / "out.parquet"
    result = batch.score("lin:1", str(source), str(out), registry=registry, settings=settings)
    values = pq.read_table(out).column("value").to_pylist()
    assert result.invalid == 1
    assert values[1] is None
    assert values[0] is not None
    logged = LogReader(registry.artifacts).predictions("lin")
    assert logged.num_rows == 2  # an output that is no prediction is not logged as one


def test_an_empty_input_gives_an_empty_output_with_its_columns(
    fraud: Registry, settings: Settings, fraud_data: pd.DataFrame, tmp_path: Path
) -> None:
    source = tmp_path / "none.parquet"
    fraud_data[FEATURES].iloc[:0].to_parquet(source)
    out = tmp_path / "out.parquet"
    result = batch.score("fraud-detector", str(source), str(out), registry=fraud, settings=settings)
    table = pq.read_table(out)
    assert result.rows == table.num_rows == 0
    assert table.column_names == ["prediction_id", "model", "version", "score", "label"]


def test_sql_table_in_table_out_on_each_database(
    fraud: Registry, settings: Settings, fraud_data: pd.DataFrame, database_url: str
) -> None:
    engine = sa.create_engine(database_url)
    frame = fraud_data[FEATURES].iloc[:1_500].copy()
    frame.insert(0, "id", np.arange(len(frame))[::-1])  # key order differs from insert order
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS tx_scores"))
        conn.execute(sa.text("DROP TABLE IF EXISTS tx"))
    frame.iloc[:0].to_sql("tx", engine, index=False)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE UNIQUE INDEX tx_id ON tx (id)"))
    frame.to_sql("tx", engine, index=False, if_exists="append")
    result = batch.score(
        "fraud-detector", None, "tx_scores", query="SELECT * FROM tx", key="id",
        db=database_url, chunk_rows=400, registry=fraud, settings=settings,
    )  # fmt: skip
    written = pd.read_sql("SELECT * FROM tx_scores", engine)
    assert result.rows == len(written) == 1_500
    assert written["id"].tolist() == list(range(1_500))  # in the key's order
    assert not sa.inspect(engine).has_table("tx_scores__partial")
    ordered = frame.sort_values("id")
    np.testing.assert_allclose(written["score"], expected_scores(fraud, ordered), rtol=1e-12)
    with pytest.raises(Conflict, match="already exists"):
        batch.score(
            "fraud-detector", "tx", "tx_scores", db=database_url, registry=fraud,
            settings=settings,
        )  # fmt: skip
    engine.dispose()


def test_bad_input_is_refused_before_anything_is_written(
    fraud: Registry, settings: Settings, scored_input: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.parquet"
    with pytest.raises(InvalidInput, match="does not exist"):
        batch.score("fraud-detector", str(tmp_path / "nope.parquet"), str(out), registry=fraud)
    lacking = tmp_path / "lacking.parquet"
    pd.read_parquet(scored_input).drop(columns=["transaction_amount"]).to_parquet(lacking)
    with pytest.raises(SchemaViolation, match=r"lacks column.*'transaction_amount'"):
        batch.score("fraud-detector", str(lacking), str(out), registry=fraud, settings=settings)
    with pytest.raises(InvalidInput, match=r"name the output \.parquet or \.csv"):
        batch.score("fraud-detector", str(scored_input), str(tmp_path / "out.txt"), registry=fraud)
    with pytest.raises(InvalidInput, match="does not have: nope"):
        batch.score(
            "fraud-detector", str(scored_input), str(out), keep=["nope"], registry=fraud,
            settings=settings,
        )  # fmt: skip
    with pytest.raises(ServiceUnavailable, match="cannot reach"):
        batch.score(
            "fraud-detector", "tx", str(out), db="postgresql+psycopg://me:secret@127.0.0.1:1/x",
            registry=fraud, settings=settings,
        )  # fmt: skip
    assert not out.exists()
    assert not Path(f"{out}.partial").exists()


def test_a_bad_value_names_its_row_and_leaves_no_output(
    fraud: Registry, settings: Settings, scored_input: Path, tmp_path: Path
) -> None:
    frame = pd.read_parquet(scored_input)
    frame.loc[2_345, "transaction_amount"] = None  # the model takes no missing amount
    bad = tmp_path / "bad.parquet"
    frame.to_parquet(bad)
    out = tmp_path / "out.parquet"
    with pytest.raises(SchemaViolation, match="input rows 2,000 to 2,999") as caught:
        batch.score(
            "fraud-detector", str(bad), str(out), chunk_rows=1_000, registry=fraud,
            settings=settings,
        )  # fmt: skip
    assert any(d["loc"][-1] == 2_345 for d in caught.value.details())
    assert not out.exists()


@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_reading_resumes_at_any_row_across_files_and_row_groups(tmp_path: Path, kind: str) -> None:
    frame = pd.DataFrame({"id": np.arange(5_000), "x": np.linspace(0, 1, 5_000)})
    folder = tmp_path / "parts"
    folder.mkdir()
    for i, (start, stop) in enumerate([(0, 1_500), (1_500, 3_000), (3_000, 5_000)]):
        part = frame.iloc[start:stop]
        if kind == "parquet":  # row groups that neither chunks nor files line up with
            part.to_parquet(folder / f"p{i}.parquet", row_group_size=617)
        else:
            part.to_csv(folder / f"p{i}.csv", index=False)
    source = batch.FileInput(str(folder))
    assert source.total_rows == (5_000 if kind == "parquet" else None)
    for skip in range(0, 5_001, 123):
        chunks = list(source.chunks(400, skip))
        assert all(c.num_rows == 400 for c in chunks[:-1])
        got = [i for c in chunks for i in c.column("id").to_pylist()]
        assert got == list(range(skip, 5_000)), skip


SLOW_REMOTE = """
import io, sys, time
from fsspec.implementations.memory import MemoryFileSystem
import shipyard.batch as batch

class Slow(io.BytesIO):  # a remote file: each read waits on the network
    def read(self, size=-1):
        time.sleep(0.1)
        return super().read(size)

    def readinto(self, buffer):
        time.sleep(0.1)
        return super().readinto(buffer)

opened = MemoryFileSystem._open

def slow_open(self, path, mode="rb", **kwargs):
    return Slow(self.cat_file(path)) if "r" in mode else opened(self, path, mode, **kwargs)

MemoryFileSystem._open = slow_open
MemoryFileSystem().pipe("/in/rows.csv", b"id,x0\\n" + b"1,0.5\\n" * 4_000_000)  # 28 MB: several blocks
source = batch.FileInput("memory:///in/rows.csv")
print(source.schema.names, file=sys.stderr)
sys.exit(2)  # as the CLI does on a column the model lacks, with the reader let go of
"""


def test_a_csv_reader_let_go_of_early_never_aborts_the_process() -> None:
    """Arrow reads a CSV ahead in a thread of its own. Reading a remote file, that thread
    calls into Python; one still reading when the interpreter shuts down (after the schema
    was taken from the first block, or after an error) aborted the process: `shipyard batch`
    exited -6 instead of 2 when a column was missing."""
    ran = subprocess.run(
        [sys.executable, "-c", SLOW_REMOTE], capture_output=True, text=True, timeout=120
    )
    assert ran.returncode == 2, ran.stderr
    assert "['id', 'x0']" in ran.stderr


def test_a_remote_csv_reads_as_a_local_one_and_leaves_no_copy_behind(tmp_path: Path) -> None:
    import fsspec

    frame = pd.DataFrame({"id": np.arange(3_000), "x": np.linspace(0, 1, 3_000)})
    memory = fsspec.filesystem("memory")
    for i, (start, stop) in enumerate([(0, 1_000), (1_000, 3_000)]):
        memory.pipe(f"/remote-csv/p{i}.csv", frame.iloc[start:stop].to_csv(index=False).encode())
    source = batch.FileInput("memory://remote-csv")
    assert source.schema.names == ["id", "x"]
    got = [i for c in source.chunks(700, 123) for i in c.column("id").to_pylist()]
    assert got == list(range(123, 3_000))
    assert source._spool is not None
    spool = Path(source._spool.name)
    assert len(list(spool.iterdir())) == 2  # each file copied once, in the reading thread
    source.close()
    assert not spool.exists()


def test_monitor_covers_batch_predictions(
    fraud: Registry, settings: Settings, scored_input: Path, tmp_path: Path
) -> None:
    from shipyard.monitoring import Monitor

    result = batch.score(
        "fraud-detector", str(scored_input), str(tmp_path / "out.parquet"), registry=fraud,
        settings=settings,
    )  # fmt: skip
    report = Monitor.from_settings(settings, fraud).run("fraud-detector", record=False).to_dict()
    summary = report["versions"]["1"]
    assert summary["variants"] == ["batch"]
    assert sum(w["volume"] for w in summary["windows"]) == result.rows
    assert summary["drift"]["rows_current"] > 0
    assert set(summary["drift"]["columns"]) == set(FEATURES)


def test_a_parquet_output_is_the_same_whether_written_as_it_came_or_joined_at_commit(
    tmp_path: Path,
) -> None:
    """A job run from its first chunk writes the output as its chunks are staged (the commit is
    a rename); a resumed job, or chunks staged out of order or with a column that is null in
    one chunk and typed in the next, are joined from the staged chunks at commit instead. The
    file is the same either way, and nothing is left beside it."""
    from shipyard.batch._outputs import FileOutput

    schema = pa.schema(
        [("id", pa.int64()), ("prediction_id", pa.string()), ("score", pa.float64())]
    )
    chunks = [
        pa.table(
            {
                "id": np.arange(i * 5, i * 5 + 5),
                "prediction_id": [f"p{j}" for j in range(i * 5, i * 5 + 5)],
                "score": np.linspace(0, 1, 5) + i,
            },
            schema=schema,
        )
        for i in range(3)
    ]

    def run(name: str, order: list[int], resumed: bool = False) -> tuple[pa.Table, bool]:
        target = FileOutput(str(tmp_path / name))
        target.stage({"job_id": name})
        if resumed:  # a later process finds the job staged and goes on
            target.write(order[0], chunks[order[0]])
            target.close()
            target = FileOutput(str(tmp_path / name))
            assert target.staged() == {"job_id": name}
            assert target.done() == 1
            order = order[1:]
        for index in order:
            target.write(index, chunks[index])
        growing = any(p.name.startswith(".shipyard-") for p in tmp_path.iterdir())
        target.commit(overwrite=False)
        assert sorted(
            p.name for p in tmp_path.iterdir() if p.name.startswith((name, ".shipyard"))
        ) == [name]
        return pq.read_table(tmp_path / name), growing

    expected = pa.concat_tables(chunks)
    assert run("a.parquet", [0, 1, 2]) == (expected, True)
    assert run("b.parquet", [1, 0, 2]) == (expected, False)
    assert run("c.parquet", [0, 1, 2], resumed=True) == (expected, False)

    nulls = pa.table({"id": [0], "extra": pa.nulls(1)})
    typed = pa.table({"id": [1], "extra": pa.array(["x"])})
    target = FileOutput(str(tmp_path / "d.parquet"))
    target.stage({"job_id": "d"})
    target.write(0, nulls)
    target.write(1, typed)
    target.commit(overwrite=False)
    assert pq.read_table(tmp_path / "d.parquet").to_pylist() == [
        {"id": 0, "extra": None}, {"id": 1, "extra": "x"},
    ]  # fmt: skip

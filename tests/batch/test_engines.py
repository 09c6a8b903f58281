"""`--engine spark` and `--engine ray`: the same job on Spark's and Ray's workers gives the local
engine's output to the last bit (the prediction ids differ only in their job prefix)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import shipyard.batch as batch
from shipyard.core import Settings
from shipyard.core.errors import InvalidInput
from shipyard.demo import FEATURES
from shipyard.logstore import LogReader
from shipyard.registry import Registry

ROWS = 5_000


class Stopped(Exception):
    """The job is stopped from its progress callback."""


CHUNK = 1_000


@pytest.fixture(scope="module")
def home(
    tmp_path_factory: pytest.TempPathFactory, fraud_model: Any, fraud_data: pd.DataFrame
) -> Path:
    home = tmp_path_factory.mktemp("engines")
    with Registry.from_settings(Settings(home=home, auto_migrate=True, actor="t")) as registry:
        registry.register(
            fraud_model, name="fraud", sample=fraud_data[FEATURES].iloc[:500], threshold=0.3
        )
    frame = fraud_data[FEATURES].iloc[:ROWS].copy()
    frame.insert(0, "tx", [f"tx-{i}" for i in range(ROWS)])
    pq.write_table(
        pa.Table.from_pandas(frame, preserve_index=False), home / "in.parquet", row_group_size=700
    )
    return home


@pytest.fixture(scope="module")
def local(home: Path) -> pa.Table:
    out = home / "local.parquet"
    with Registry.from_settings(Settings(home=home)) as registry:
        batch.score(
            "fraud:1",
            str(home / "in.parquet"),
            str(out),
            chunk_rows=CHUNK,
            registry=registry,
            settings=Settings(home=home),
        )
    return pq.read_table(out)


def same_as_local(table: pa.Table, local: pa.Table) -> None:
    assert table.num_rows == local.num_rows == ROWS
    others = [c for c in local.column_names if c != "prediction_id"]
    assert table.select(others).equals(local.select(others))  # scores to the last bit
    suffix = lambda t: pc.utf8_slice_codeunits(t.column("prediction_id"), 20)  # noqa: E731
    assert suffix(table).equals(suffix(local))  # the same row numbers, after the job prefix


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    sql = pytest.importorskip("pyspark.sql", reason="--engine spark needs pyspark")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # executors import shipyard
    session = (
        sql.SparkSession.builder.master("local[2]")
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    yield session
    session.stop()


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    ray = pytest.importorskip("ray", reason="--engine ray needs Ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_spark_gives_the_local_engine_s_output(home: Path, local: pa.Table, spark: Any) -> None:
    out = home / "spark.parquet"
    settings = Settings(home=home)
    result = batch.score(
        "fraud:1", str(home / "in.parquet"), str(out), chunk_rows=CHUNK, engine="spark",
        settings=settings,
    )  # fmt: skip
    assert (result.engine, result.rows, result.scored, result.chunks) == ("spark", ROWS, ROWS, 5)
    same_as_local(pq.read_table(out), local)
    logged = LogReader(Registry.from_settings(settings).artifacts).predictions("fraud")
    mine = pc.equal(logged.column("job_id"), result.job_id)
    assert pc.sum(mine).as_py() == ROWS  # each row logged once, by the executors


def test_ray_gives_the_local_engine_s_output(home: Path, local: pa.Table, ray_cluster: Any) -> None:
    out = home / "ray.parquet"
    result = batch.score(
        "fraud:1", str(home / "in.parquet"), str(out), chunk_rows=CHUNK, engine="ray",
        workers=2, cpus_per_worker=0.5, settings=Settings(home=home),
    )  # fmt: skip
    assert (result.engine, result.rows, result.chunks) == ("ray", ROWS, 5)
    same_as_local(pq.read_table(out), local)


def test_an_engine_resumes_a_job_the_local_engine_began(
    home: Path, local: pa.Table, ray_cluster: Any
) -> None:
    """Two chunks staged by a local run that stopped; Ray finishes the other three."""
    out = home / "resumed.parquet"
    settings = Settings(home=home)
    with Registry.from_settings(settings) as registry:
        stopped: list[int] = []

        def stop_after_two(rows: int, total: int | None) -> None:
            if rows >= 2 * CHUNK:
                stopped.append(rows)
                raise Stopped

        with pytest.raises(Stopped):
            batch.score("fraud:1", str(home / "in.parquet"), str(out), chunk_rows=CHUNK,
                        registry=registry, settings=settings, progress=stop_after_two)  # fmt: skip
    assert not out.exists()
    result = batch.score(
        "fraud:1", str(home / "in.parquet"), str(out), chunk_rows=CHUNK, engine="ray",
        workers=2, cpus_per_worker=0.5, settings=settings,
    )  # fmt: skip
    assert result.resumed_rows >= 2 * CHUNK
    assert result.scored == ROWS - result.resumed_rows
    table = pq.read_table(out)
    assert table.column("tx").to_pylist() == local.column("tx").to_pylist()
    assert table.column("score").equals(local.column("score"))


def test_engines_take_parquet_only(home: Path, tmp_path: Path) -> None:
    csv = tmp_path / "in.csv"
    pq.read_table(home / "in.parquet").to_pandas().to_csv(csv, index=False)
    with pytest.raises(InvalidInput, match="reads Parquet"):
        batch.score(
            "fraud:1",
            str(csv),
            str(tmp_path / "o.parquet"),
            engine="spark",
            settings=Settings(home=home),
        )
    with pytest.raises(InvalidInput, match="one of local, spark, ray"):
        batch.score(
            "fraud:1",
            str(home / "in.parquet"),
            str(tmp_path / "o.parquet"),
            engine="dask",
            settings=Settings(home=home),
        )

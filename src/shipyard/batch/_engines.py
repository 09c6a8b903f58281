"""Scale-out engines for batch jobs: Spark and Ray run the job's chunks on their workers.

The job stays shipyard's: the driver plans the chunks (the same `chunk_rows` cut of the input
as the local engine), the engine runs a task per chunk, and each task does exactly what the
local engine does for it (read its rows, score them with the version's bundle, log them,
stage them) with the bundle loaded once per worker process. So the output is the local
engine's to the last bit (the same scores, labels, row order and prediction ids but for the
job's own prefix), a stopped job resumes from its staged chunks whichever engine ran it, and
the output still appears in one step.

    spark  a DataFrame of chunk numbers, one partition each -> `mapInArrow` -> collect
    ray    a Dataset of chunk numbers -> `map_batches` with an actor class (the bundle loaded
           in its constructor), fractional CPUs per actor

Both read Parquet (each task skips straight to its row groups) and write a file output, on a
filesystem every worker reaches (a local one for local mode, S3 or a shared one on a cluster).
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from shipyard.batch._inputs import FileInput
from shipyard.batch._outputs import FileOutput
from shipyard.core.errors import MissingDependency
from shipyard.registry import BundleRef, ServedModel
from shipyard.store import ArtifactStore

__all__ = ["ENGINES", "ChunkPlan", "run_ray", "run_spark", "score_chunk"]

ENGINES = ("local", "spark", "ray")
RESULT_SCHEMA = "chunk long, rows long, invalid long"


@dataclass(frozen=True)
class ChunkPlan:
    """What a worker needs to score chunks of a job on its own; picklable."""

    bundle: BundleRef
    job: dict[str, Any]
    source: str  # a Parquet file or folder
    target: str  # the output file
    kept: list[str]
    schema: pa.Schema
    chunk_rows: int
    log_root: str | None  # the artifact store the predictions are logged to (None: not logged)


_LOADED: dict[str, ServedModel] = {}  # in each worker process: a bundle is loaded once


def _served(bundle: BundleRef) -> ServedModel:
    served = _LOADED.get(bundle.metadata_sha256)
    if served is None:
        served = _LOADED[bundle.metadata_sha256] = bundle.load()
    return served


def score_chunk(plan: ChunkPlan, index: int) -> tuple[int, int]:
    """Read, score, log and stage chunk `index` of the plan's job; returns its rows and how
    many the model answered NaN or infinity for."""
    from shipyard.batch._job import _Chunk

    served = _served(plan.bundle)
    source = FileInput(plan.source)
    try:
        table = next(source.chunks(plan.chunk_rows, skip=index * plan.chunk_rows), None)
    finally:
        source.close()
    target = FileOutput(plan.target)
    if table is None:  # an empty input still gets its columns
        target.write(index, plan.schema.empty_table())
        return 0, 0
    store = ArtifactStore(plan.log_root) if plan.log_root is not None else None
    chunk = _Chunk(served, plan.job, plan.kept, plan.schema, store)
    out, block, invalid = chunk.score(index, index * plan.chunk_rows, table)
    if block is not None:
        chunk.log(index, block)
    target.write(index, out)
    return table.num_rows, invalid


def _results(rows: list[tuple[int, int, int]]) -> dict[int, tuple[int, int]]:
    return {int(chunk): (int(n), int(bad)) for chunk, n, bad in rows}


def run_spark(
    plan: ChunkPlan, chunks: list[int], *, workers: int | None = None
) -> dict[int, tuple[int, int]]:
    """Run `chunks` on Spark: the active session, or a local one with `workers` cores
    (`SHIPYARD_SPARK_MASTER` names another master)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise MissingDependency(
            "--engine spark needs pyspark (and Java 17+): pip install 'shipyard[spark]'"
        ) from None
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = SparkSession.getActiveSession()
    if spark is None:
        master = os.environ.get("SHIPYARD_SPARK_MASTER") or f"local[{workers or '*'}]"
        spark = (
            SparkSession.builder.master(master)
            .appName(f"shipyard-batch-{plan.job['job_id']}")
            .config("spark.ui.enabled", "false")
            .config("spark.python.worker.reuse", "true")
            .getOrCreate()
        )

    def work(batches: Any) -> Any:
        for batch in batches:
            done = [(i, *score_chunk(plan, i)) for i in batch.column(0).to_pylist()]
            yield pa.RecordBatch.from_pylist(
                [{"chunk": i, "rows": n, "invalid": bad} for i, n, bad in done],
                schema=pa.schema(
                    [("chunk", pa.int64()), ("rows", pa.int64()), ("invalid", pa.int64())]
                ),
            )

    with warnings.catch_warnings():
        # PySpark warns about pandas 3 for its pandas features; this path is Arrow only
        warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")
        frame = spark.createDataFrame([(i,) for i in chunks], "chunk long").repartition(
            max(1, len(chunks)), "chunk"
        )
        rows = frame.mapInArrow(work, RESULT_SCHEMA).collect()
    return _results([(r["chunk"], r["rows"], r["invalid"]) for r in rows])


class _RayScorer:
    """A Ray Data actor: the bundle is loaded in its constructor, once per actor."""

    def __init__(self, plan: ChunkPlan) -> None:
        self.plan = plan
        _served(plan.bundle)

    def __call__(self, batch: pa.Table) -> pa.Table:
        done = [(i, *score_chunk(self.plan, i)) for i in batch.column("chunk").to_pylist()]
        return pa.table(
            {
                "chunk": pa.array([d[0] for d in done], pa.int64()),
                "rows": pa.array([d[1] for d in done], pa.int64()),
                "invalid": pa.array([d[2] for d in done], pa.int64()),
            }
        )


def run_ray(
    plan: ChunkPlan,
    chunks: list[int],
    *,
    workers: int | None = None,
    cpus_per_worker: float | None = None,
) -> dict[int, tuple[int, int]]:
    """Run `chunks` on Ray Data: the connected cluster, or a local one (`RAY_ADDRESS` names
    another), with `workers` actors of `cpus_per_worker` CPUs each (fractions allowed)."""
    try:
        import ray
    except ImportError:
        raise MissingDependency(
            "--engine ray needs Ray Data: pip install 'shipyard[ray]'"
        ) from None
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    cpus = ray.available_resources().get("CPU", 1)  # type: ignore[no-untyped-call]
    workers = workers or max(1, int(cpus))
    dataset = ray.data.from_items(
        [{"chunk": i} for i in chunks], override_num_blocks=max(1, len(chunks))
    )
    scored = dataset.map_batches(
        _RayScorer,
        fn_constructor_args=(plan,),
        batch_size=1,
        batch_format="pyarrow",
        concurrency=max(1, min(workers, len(chunks) or 1)),
        num_cpus=cpus_per_worker or 1.0,
    )
    return _results([(r["chunk"], r["rows"], r["invalid"]) for r in scored.take_all()])

"""A batch job: score every row of an input with one registered version and write the scores.

    resolve the version  ->  open input and output  ->  resume or stage the job
    read chunk k (thread)  ->  score chunks k, k+1 .. (threads)  ->  log chunk k, stage chunk k
    every chunk staged     ->  commit the output in one step                   (thread, in order)

The bundle is loaded once; memory holds a few chunks, whatever the input's size. Reading,
scoring and writing overlap (pyarrow's I/O and compression and onnxruntime leave the GIL);
chunks are scored by one thread per CPU where the runtime allows calls from several threads
at once (onnxruntime), else by one; and a chunk is
staged only after its predictions are logged, so the output never holds a row the log has
not. Each row's prediction id is made from the job and the row's place in the input: a chunk
scored again after a crash gets the same ids and replaces its log segment, so after any
number of restarts every input row is scored, logged and written exactly once.
"""

from __future__ import annotations

import os
import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from shipyard.batch._engines import ENGINES
from shipyard.batch._inputs import FileInput, Input, open_input
from shipyard.batch._outputs import FileOutput, Output, column_kind, open_output
from shipyard.core import ModelRef, Settings
from shipyard.core.errors import Conflict, InvalidInput, SchemaViolation, ServiceUnavailable
from shipyard.core.values import category_text
from shipyard.logstore import write_block
from shipyard.registry import Registry, ServedModel
from shipyard.store import ArtifactStore, record_audit

__all__ = ["BatchResult", "Progress", "score"]

Progress = Callable[[int, int | None], None]
"""Called with the rows written so far (this run's and an earlier run's) and the total, when
the input says it."""

DEFAULT_CHUNK_ROWS = 50_000
OUTPUT_COLUMNS = ("prediction_id", "model", "version")
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_ROW_SHIFTS = np.arange(44, -1, -4, dtype=np.uint64)  # 12 hex digits of the row number


@dataclass(frozen=True)
class BatchResult:
    """What a job did."""

    job_id: str
    model: str
    version: int
    runtime: str
    input: str
    output: str
    rows: int  # rows in the output
    scored: int  # rows this run scored (the rest an earlier run had staged)
    resumed_rows: int
    chunks: int
    seconds: float
    invalid: int  # rows whose model output was NaN or infinite: written with null scores
    logged: bool
    engine: str = "local"

    @property
    def rows_per_second(self) -> float:
        return self.scored / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rows_per_second": round(self.rows_per_second, 1)}


def score(
    model: str,
    input: str | None = None,
    output: str | None = None,
    *,
    query: str | None = None,
    db: str | None = None,
    output_db: str | None = None,
    key: str | None = None,
    keep: Sequence[str] | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    overwrite: bool = False,
    log: bool = True,
    settings: Settings | None = None,
    registry: Registry | None = None,
    progress: Progress | None = None,
    engine: str = "local",
    workers: int | None = None,
    cpus_per_worker: float | None = None,
) -> BatchResult:
    """Score every row of `input` (a Parquet/CSV file or folder, any fsspec URL; a table in
    `db`; or `query` on `db`) with `model` (NAME, NAME:VERSION or NAME:ALIAS) and write the
    kept input columns (`keep`; default: every column the model does not take) with each
    row's prediction_id, model, version and prediction to `output` (a .parquet/.csv path or
    URL; a table in `output_db`, default `db`).

    `engine` "spark" or "ray" runs the chunks on those engines' workers (`workers` of them;
    Ray actors take `cpus_per_worker`), with the same results as the local engine.

    Running the same call again after a crash or a kill finishes the job from its last staged
    chunk. Raises `Conflict` when the output exists (unless `overwrite`) or when another job
    is staged there, and `SchemaViolation` when the input lacks a column the model needs.
    """
    if output is None:
        raise InvalidInput("say where the scores go: --output PATH|URL|TABLE")
    if chunk_rows < 1:
        raise InvalidInput(f"--chunk-rows must be at least 1, not {chunk_rows}")
    settings = settings or Settings()
    owns = registry is None
    registry = registry or Registry.from_settings(settings)
    source: Input | None = None
    target: Output | None = None
    try:
        source = open_input(input, query=query, db=db, key=key)
        target = open_output(output, db=output_db or db)
        return _Job(registry, settings).run(
            ModelRef.parse(model),
            source,
            target,
            keep=keep,
            chunk_rows=chunk_rows,
            overwrite=overwrite,
            log=log,
            progress=progress,
            engine=engine,
            workers=workers,
            cpus_per_worker=cpus_per_worker,
        )
    finally:
        for opened in (source, target):
            if opened is not None:
                opened.close()
        if owns:
            registry.close()


class _Job:
    def __init__(self, registry: Registry, settings: Settings) -> None:
        self.registry = registry
        self.settings = settings

    def _on_engine(
        self,
        engine: str,
        served: ServedModel,
        job: dict[str, Any],
        source: Input,
        target: Output,
        kept: list[str],
        schema: pa.Schema,
        chunk_rows: int,
        done: int,
        log: bool,
        *,
        workers: int | None,
        cpus_per_worker: float | None,
    ) -> tuple[int, int, int, int]:
        """Run the chunks not staged yet on Spark or Ray; returns rows scored, invalid rows,
        chunks in all and rows in the output."""
        from shipyard.batch._engines import ChunkPlan, run_ray, run_spark

        assert isinstance(source, FileInput)
        assert isinstance(target, FileOutput)
        total = source.total_rows or 0
        count = max(1, -(-total // chunk_rows))
        plan = ChunkPlan(
            bundle=self.registry.bundle_ref(served.name, served.version),
            job=job, source=source.source, target=target.target, kept=kept, schema=schema,
            chunk_rows=chunk_rows, log_root=self.registry.artifacts.root if log else None,
        )  # fmt: skip
        todo = list(range(done, count))
        if engine == "spark":
            ran = run_spark(plan, todo, workers=workers) if todo else {}
        else:
            ran = (
                run_ray(plan, todo, workers=workers, cpus_per_worker=cpus_per_worker)
                if todo
                else {}
            )
        missing = sorted(set(todo) - set(ran))
        if missing:
            raise ServiceUnavailable(
                f"the {engine} engine did not finish chunk(s) {missing[:10]}; run the same "
                "command again to finish the job"
            )
        return (
            sum(n for n, _ in ran.values()),
            sum(bad for _, bad in ran.values()),
            count,
            total,
        )

    def run(
        self,
        ref: ModelRef,
        source: Input,
        target: Output,
        *,
        keep: Sequence[str] | None,
        chunk_rows: int,
        overwrite: bool,
        log: bool,
        progress: Progress | None,
        engine: str = "local",
        workers: int | None = None,
        cpus_per_worker: float | None = None,
    ) -> BatchResult:
        started = time.perf_counter()
        if engine not in ENGINES:
            raise InvalidInput(f"--engine is one of {', '.join(ENGINES)}, not {engine!r}")
        if engine != "local" and not (
            isinstance(source, FileInput)
            and source.kind == "parquet"
            and isinstance(target, FileOutput)
        ):
            raise InvalidInput(
                f"--engine {engine} reads Parquet (a file or a folder) and writes a file: its "
                "tasks each read their own row groups; score CSV or SQL input with the local engine"
            )
        if target.exists() and not overwrite:
            raise Conflict(
                f"{target.description} already exists; choose another output, or --overwrite "
                "to replace it once the job is done"
            )
        identity = {
            "model": str(ref),
            "input": source.identity(),
            "output": target.description,
            "chunk_rows": chunk_rows,
            "keep": list(keep) if keep is not None else None,
            "log": log,
        }
        job = target.staged()
        if job is not None and job.get("identity") != identity:
            if not overwrite:
                raise Conflict(
                    f"an unfinished job ({job.get('identity', {}).get('model')} on "
                    f"{job.get('identity', {}).get('input', {}).get('input')}) is staged at "
                    f"{target.description}; run that job's command again to finish it, or add "
                    "--overwrite to discard it and start this one"
                )
            job = None
        if job is not None:
            version = int(job["version"])  # the alias may have moved since: finish as begun
        else:
            version = self.registry.resolve(ref, default_alias=self.settings.serving_alias).version
        served = self.registry.load(ref.name, version)
        kept = _kept(served, source.schema, keep)
        schema = _output_schema(served, source.schema, kept)
        if job is None:
            job = {
                "job_id": f"{int(time.time() * 1000):012x}{secrets.token_hex(4)}",
                "identity": identity,
                "version": version,
                "started_at": time.time(),
                "columns": schema.names,
                "column_types": [[f.name, column_kind(f.type)] for f in schema],
            }
            target.stage(job)
        done = target.done()
        chunk = _Chunk(served, job, kept, schema, self.registry.artifacts if log else None)
        total = source.total_rows
        written = done * chunk_rows
        if progress is not None:
            progress(min(written, total) if total is not None else written, total)
        scored = invalid = 0
        index = done

        def stage(index: int, table: pa.Table, rows: int) -> None:
            """Stage a scored chunk (its log block is written already), in input order."""
            nonlocal written
            target.write(index, table)
            written = index * chunk_rows + rows
            if progress is not None:
                progress(written, total)

        if engine != "local":
            scored, invalid, index, written = self._on_engine(
                engine, served, job, source, target, kept, schema, chunk_rows, done, log,
                workers=workers, cpus_per_worker=cpus_per_worker,
            )  # fmt: skip
            if progress is not None:
                progress(written, total)
        else:
            threads = _scoring_threads(served, workers)
            with (
                ThreadPoolExecutor(1, thread_name_prefix="shipyard-batch-read") as reads,
                ThreadPoolExecutor(threads, thread_name_prefix="shipyard-batch-score") as scores,
                ThreadPoolExecutor(1, thread_name_prefix="shipyard-batch-write") as writes,
            ):
                chunks = source.chunks(chunk_rows, skip=done * chunk_rows)
                ahead: Future[pa.Table | None] = reads.submit(next, chunks, None)
                scoring: deque[tuple[int, int, Future[tuple[pa.Table, int]]]] = deque()
                pending: deque[Future[None]] = deque()

                def staged_next() -> None:
                    """Hand the oldest chunk being scored to the writer, in input order."""
                    nonlocal scored, invalid
                    at, rows, future = scoring.popleft()
                    out, bad = future.result()
                    pending.append(writes.submit(stage, at, out, rows))
                    scored += rows
                    invalid += bad
                    while len(pending) > 2:  # at most a few chunks held, whatever the input's size
                        pending.popleft().result()

                while (table := ahead.result()) is not None:
                    ahead = reads.submit(next, chunks, None)
                    work = scores.submit(chunk.score_and_log, index, index * chunk_rows, table)
                    scoring.append((index, table.num_rows, work))
                    index += 1
                    while len(scoring) >= threads:
                        staged_next()
                while scoring:
                    staged_next()
                for future in pending:
                    future.result()
                if index == 0:  # an empty input still gets an output, with its columns
                    writes.submit(stage, 0, schema.empty_table(), 0).result()
                    index = 1
        target.commit(overwrite=overwrite)
        result = BatchResult(
            job_id=job["job_id"],
            model=served.name,
            version=served.version,
            runtime=served.predictor.runtime,
            input=source.description,
            output=target.description,
            rows=written,
            scored=scored,
            resumed_rows=done * chunk_rows,
            chunks=index,
            seconds=time.perf_counter() - started,
            invalid=invalid,
            logged=log,
            engine=engine,
        )
        with self.registry.database.transaction() as conn:  # `shipyard history NAME` shows it
            record_audit(
                conn, self.settings.actor, "batch.scored", served.name, served.version,
                {k: v for k, v in result.to_dict().items() if k not in ("model", "version")},
            )  # fmt: skip
        return result


_SHARED_CALLS = {"onnxruntime"}
"""Runtimes whose `predict` several threads may call at once (an onnxruntime session may; a
user's own Python model need not be safe to)."""


def _scoring_threads(served: ServedModel, workers: int | None) -> int:
    """Chunks scored at once by the local engine: `workers`, or one per CPU (at most 4), where
    the runtime allows it; else one."""
    if served.predictor.runtime not in _SHARED_CALLS:
        return 1
    return workers if workers is not None else max(1, min(4, os.cpu_count() or 1))


def _kept(served: ServedModel, schema: pa.Schema, keep: Sequence[str] | None) -> list[str]:
    """The input columns written beside the scores; checks the input has what the model needs."""
    names = schema.names
    missing = [s.name for s in served.signature.columns if s.name not in names and not s.nullable]
    if missing:
        raise SchemaViolation(
            f"the input lacks column(s) {', '.join(map(repr, missing))} that "
            f"{served.name}:{served.version} takes; it has {', '.join(names[:40])}"
            f"{' ...' if len(names) > 40 else ''}",
            [{"loc": ["columns", m], "msg": "missing"} for m in missing],
        )
    if keep is None:
        features = set(served.signature.names)
        kept = [n for n in names if n not in features]
    elif list(keep) == ["*"]:
        kept = list(names)
    else:
        unknown = [k for k in keep if k not in names]
        if unknown:
            raise InvalidInput(
                f"--keep names column(s) the input does not have: {', '.join(unknown)}; it has "
                f"{', '.join(names[:40])}"
            )
        kept = list(dict.fromkeys(keep))
    clash = [n for n in kept if n in OUTPUT_COLUMNS or n in _prediction_names(served)]
    if clash:
        raise InvalidInput(
            f"the input's column(s) {', '.join(clash)} would clash with the scores' columns; "
            "leave them out with --keep COLUMNS (or rename them)"
        )
    return kept


def _prediction_names(served: ServedModel) -> list[str]:
    if served.task == "regression":
        return ["value"]
    if served.task == "binary":
        return ["score", "label"]
    return ["label", "score", *(f"probability_{c}" for c in served.classes or [])]


def _classes(served: ServedModel) -> pa.Array:
    return pa.array(served.classes or [])


def _output_schema(served: ServedModel, schema: pa.Schema, kept: list[str]) -> pa.Schema:
    fields = [schema.field(n) for n in kept]
    fields += [
        pa.field("prediction_id", pa.string()),
        pa.field("model", pa.string()),
        pa.field("version", pa.int64()),
    ]
    if served.task == "regression":
        return pa.schema([*fields, pa.field("value", pa.float64())])
    label = pa.field("label", _classes(served).type)
    if served.task == "binary":
        return pa.schema([*fields, pa.field("score", pa.float64()), label])
    probabilities = [pa.field(f"probability_{c}", pa.float64()) for c in served.classes or []]
    return pa.schema([*fields, label, pa.field("score", pa.float64()), *probabilities])


def row_ids(prefix: str, start: int, n: int) -> pa.Array:
    """Prediction ids of rows `start` .. `start + n - 1` of a job: its 20-character prefix (the
    job's start in milliseconds and a random token) and the row number in 12 hex digits, so
    `shipyard.logstore.id_time` reads the job's start from them like any prediction id."""
    rows = np.arange(start, start + n, dtype=np.uint64)
    text = np.empty((n, 32), dtype=np.uint8)
    text[:, :20] = np.frombuffer(prefix.encode(), dtype=np.uint8)
    text[:, 20:] = _HEX[((rows[:, None] >> _ROW_SHIFTS) & np.uint64(15)).astype(np.uint8)]
    fixed = pa.FixedSizeBinaryArray.from_buffers(pa.binary(32), n, [None, pa.py_buffer(text)])
    return fixed.cast(pa.binary()).cast(pa.string())


class _Chunk:
    """Scores one chunk into its output rows and its log block."""

    def __init__(
        self,
        served: ServedModel,
        job: dict[str, Any],
        kept: list[str],
        schema: pa.Schema,
        store: ArtifactStore | None,
    ) -> None:
        self.served = served
        self.job = job
        self.kept = kept
        self.schema = schema
        self.store = store
        self.prefix = job["job_id"][:20]
        self.at = datetime.fromtimestamp(job["started_at"], UTC)
        self.classes = _classes(served)
        self.class_texts = pa.array([category_text(c) for c in served.classes or []], pa.string())
        threshold = served.record.threshold
        self.threshold = threshold if threshold is not None else 0.5

    def columns(self, start: int, table: pa.Table) -> dict[str, np.ndarray]:
        data: dict[str, Any] = {}
        for spec in self.served.signature.columns:
            if spec.name in table.column_names:
                data[spec.name] = table.column(spec.name).to_numpy(zero_copy_only=False)
        try:
            return self.served.signature.validate_columns(data, loc="rows")
        except SchemaViolation as error:
            details = [
                {**d, "loc": [*d["loc"][:2], *(i + start for i in d["loc"][2:3])]}
                for d in error.details()
            ]
            raise SchemaViolation(
                f"input rows {start:,} to {start + table.num_rows - 1:,}: {error.message}", details
            ) from None

    def score(
        self, index: int, start: int, table: pa.Table
    ) -> tuple[pa.Table, dict[str, Any] | None, int]:
        """The chunk's output table, its log block (None when not logging), and how many rows
        the model answered NaN or infinity for."""
        served = self.served
        n = table.num_rows
        columns = self.columns(start, table)
        with np.errstate(all="ignore"):
            raw = np.asarray(served.predictor.predict(columns))
        bad = ~np.isfinite(raw).reshape(n, -1).all(axis=1) if raw.dtype.kind == "f" else None
        mask = bad if bad is not None and bad.any() else None
        ids = row_ids(self.prefix, start, n)
        out: dict[str, pa.Array] = {name: table.column(name) for name in self.kept}
        out["prediction_id"] = ids
        out["model"] = pa.DictionaryArray.from_arrays(
            pa.array(np.zeros(n, np.int32)), [served.name]
        ).cast(pa.string())
        out["version"] = pa.array(np.full(n, served.version, np.int64))
        logged: dict[str, pa.Array] = {}
        if served.task == "regression":
            out["value"] = logged["value"] = pa.array(raw.astype(np.float64).reshape(-1), mask=mask)
        else:
            if served.task == "binary":
                scores = np.ascontiguousarray(raw[:, 1], dtype=np.float64)
                picked = (scores >= self.threshold).astype(np.int32)
            else:
                probabilities = raw.astype(np.float64)
                picked = probabilities.argmax(axis=1).astype(np.int32)
                scores = probabilities.max(axis=1)
            which = pa.array(picked, mask=mask)
            out["score"] = logged["score"] = pa.array(scores, mask=mask)
            out["label"] = self.classes.take(which)
            logged["label"] = self.class_texts.take(which)
            if served.task == "multiclass":
                for j, c in enumerate(served.classes or []):
                    out[f"probability_{c}"] = pa.array(probabilities[:, j], mask=mask)
                logged["probabilities"] = pa.FixedSizeListArray.from_arrays(
                    pa.array(probabilities.reshape(-1)), probabilities.shape[1]
                ).cast(pa.list_(pa.float64()))
        output = pa.Table.from_arrays([out[f.name] for f in self.schema], names=self.schema.names)
        block = None
        if self.store is not None:
            keep = np.flatnonzero(~mask) if mask is not None else None  # no prediction: not logged
            block = {
                "ids": ids,
                "features": {name: pa.array(values) for name, values in columns.items()},
                "outputs": logged,
                "keep": keep,
            }
        return output, block, int(mask.sum()) if mask is not None else 0

    def score_and_log(self, index: int, start: int, table: pa.Table) -> tuple[pa.Table, int]:
        """`score`, then the chunk's log block written (before the chunk can be staged)."""
        output, block, bad = self.score(index, start, table)
        if block is not None:
            self.log(index, block)
        return output, bad

    def log(self, index: int, block: dict[str, Any]) -> None:
        assert self.store is not None
        keep = block["keep"]

        def rows(array: pa.Array) -> pa.Array:
            return array if keep is None else array.take(pa.array(keep))

        write_block(
            self.store,
            name=f"batch-{self.job['job_id']}-{index:06d}",
            model=self.served.name,
            version=self.served.version,
            ids=rows(block["ids"]),
            at=self.at,
            source="batch",
            job_id=self.job["job_id"],
            variant="batch",
            features={k: rows(v) for k, v in block["features"].items()},
            outputs={k: rows(v) for k, v in block["outputs"].items()},
        )

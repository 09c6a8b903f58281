#!/usr/bin/env python3
"""The peers of the batch benchmark, one per process (run with the peers' venv).

    python peers.py pyarrow --model-file lgbm.joblib --input IN.parquet --output OUT.parquet --json J
    python peers.py spark   --model-file ... --input ... --output OUT_DIR --json J [--cores 2]
    python peers.py ray     --model-file ... --input ... --output OUT_DIR --json J [--cores 2]

Every peer scores each row with the joblib model's own `predict_proba` (scikit-learn or
LightGBM, no ONNX) and writes `id`, `score` (probability of class 1) and `label`
(score >= 0.5) as Parquet.

* pyarrow: one process, `ParquetFile.iter_batches(100,000)` -> `to_pandas()` ->
  `predict_proba` -> `ParquetWriter.write_table`. The model is loaded inside the timed span.
* spark: `SparkSession` `local[N]` (UI off) -> `spark.read.parquet` -> `mapInPandas` with the
  model loaded once per task from the local joblib file (as MLflow's `spark_udf` loads it once
  per Python worker) -> `write.parquet`. Spark's defaults otherwise (Arrow batches of
  `spark.sql.execution.arrow.maxRecordsPerBatch` = 10,000 rows, Python worker reuse on).
* ray: `ray.init(num_cpus=N)` -> `ray.data.read_parquet` -> `map_batches(Scorer,
  batch_format="pyarrow", batch_size=100,000, compute=ActorPoolStrategy(min_size=1,
  max_size=N))` with the model loaded once per actor in `__init__` -> `write_parquet`. (A fixed
  pool of N actors of 1 CPU each holds every CPU, and the read tasks then never run: Ray Data
  waits for ever. The autoscaling pool, Ray's default for a class, grows to N when it can.
  `batch_format="pandas"` gives ArrowDtype columns in Ray 2.60, which LightGBM refuses, so the
  batch comes as Arrow and goes to pandas with `to_pandas()`, as in the pyarrow loop.)

Spans in the JSON: `total_s` from before the session/cluster start (imports of the framework
excluded) to the output written; `startup_s` the session's or cluster's start; `span_s` =
`total_s` - `startup_s` (the job alone); `stop_s` the shutdown after it (not in either).
"""

from __future__ import annotations

import argparse
import json
import os
import time

FEATURES = [f"f{i:02d}" for i in range(30)]


def run_pyarrow(args: argparse.Namespace) -> dict:
    import joblib
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    t0 = time.perf_counter()
    model = joblib.load(args.model_file)
    pf = pq.ParquetFile(args.input)
    schema = pa.schema([("id", pa.int64()), ("score", pa.float64()), ("label", pa.int32())])
    rows = 0
    with pq.ParquetWriter(args.output, schema) as writer:
        for batch in pf.iter_batches(batch_size=args.batch_rows):
            X = batch.select(FEATURES).to_pandas()
            score = model.predict_proba(X)[:, 1]
            writer.write_table(
                pa.Table.from_arrays(
                    [
                        batch.column("id"),
                        pa.array(score),
                        pa.array((score >= 0.5).astype(np.int32)),
                    ],
                    schema=schema,
                )
            )
            rows += batch.num_rows
    total_s = time.perf_counter() - t0
    return {"rows": rows, "startup_s": 0.0, "total_s": total_s, "span_s": total_s, "stop_s": 0.0}


def run_spark(args: argparse.Namespace) -> dict:
    from pyspark.sql import SparkSession

    model_file = os.path.abspath(args.model_file)
    features = list(FEATURES)

    def score(batches):
        import joblib
        import numpy as np
        import pandas as pd

        model = joblib.load(model_file)  # once per task (partition)
        for pdf in batches:
            p = model.predict_proba(pdf[features])[:, 1]
            yield pd.DataFrame({"id": pdf["id"], "score": p, "label": (p >= 0.5).astype(np.int32)})

    t0 = time.perf_counter()
    spark = (
        SparkSession.builder.master(f"local[{args.cores}]")
        .appName("shipyard-bench-batch")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("WARN")
    t1 = time.perf_counter()
    df = spark.read.parquet(args.input)
    out = df.mapInPandas(score, schema="id long, score double, label int")
    out.write.mode("overwrite").parquet(args.output)
    t2 = time.perf_counter()
    conf = {
        k: _conf(spark, k)
        for k in (
            "spark.sql.execution.arrow.maxRecordsPerBatch",
            "spark.sql.files.maxPartitionBytes",
            "spark.driver.memory",
            "spark.python.worker.reuse",
        )
    }
    partitions = df.rdd.getNumPartitions()
    spark.stop()
    t3 = time.perf_counter()
    return {
        "startup_s": t1 - t0,
        "span_s": t2 - t1,
        "total_s": t2 - t0,
        "stop_s": t3 - t2,
        "partitions": partitions,
        "conf": conf,
    }


def _conf(spark, key: str) -> str | None:
    try:
        return spark.conf.get(key)
    except Exception:
        try:
            return spark.sparkContext.getConf().get(key)
        except Exception:
            return None


def run_ray(args: argparse.Namespace) -> dict:
    import ray

    model_file = os.path.abspath(args.model_file)

    class Scorer:
        def __init__(self) -> None:
            import joblib

            self.model = joblib.load(model_file)  # once per actor

        def __call__(self, batch):
            import numpy as np
            import pyarrow as pa

            p = self.model.predict_proba(batch.select(FEATURES).to_pandas())[:, 1]
            return pa.table(
                {"id": batch.column("id"), "score": p, "label": (p >= 0.5).astype(np.int32)}
            )

    t0 = time.perf_counter()
    ray.init(num_cpus=args.cores, include_dashboard=False, log_to_driver=False)
    t1 = time.perf_counter()
    ds = ray.data.read_parquet(args.input)
    ds = ds.map_batches(
        Scorer,
        batch_format="pyarrow",
        batch_size=args.batch_rows,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=args.actors or args.cores),
    )
    ds.write_parquet(args.output)
    t2 = time.perf_counter()
    stats = ds.stats() if args.stats else None
    ray.shutdown()
    t3 = time.perf_counter()
    result = {"startup_s": t1 - t0, "span_s": t2 - t1, "total_s": t2 - t0, "stop_s": t3 - t2}
    if stats:
        result["stats"] = stats
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("target", choices=["pyarrow", "spark", "ray"])
    ap.add_argument("--model-file", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--json")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--actors", type=int, default=0, help="ray: actors (default --cores)")
    ap.add_argument("--batch-rows", type=int, default=100_000)
    ap.add_argument("--stats", action="store_true", help="ray: keep Dataset.stats()")
    args = ap.parse_args()
    run = {"pyarrow": run_pyarrow, "spark": run_spark, "ray": run_ray}[args.target]
    result = {"target": args.target, "model_file": args.model_file, **run(args)}
    text = json.dumps(result, indent=1)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(text)
    print(text)


if __name__ == "__main__":
    main()

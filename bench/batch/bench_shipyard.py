#!/usr/bin/env python3
"""shipyard's side of the batch benchmark, one phase per process (run with shipyard's .venv).

    python bench_shipyard.py register --home H --models DIR --json OUT
    python bench_shipyard.py floor --home H --model NAME:VERSION --input IN.parquet --json OUT

`register` (never timed by the harness): registers models/lr.joblib and models/lgbm.joblib as
`batch-lr` and `batch-lgbm` (version 1 in a fresh home) with models/sample.parquet as the
sample, and says which runtime each loads with.

`floor`: the in-process floor. Loads the registered version with `registry.load`, reads the
whole input with `ParquetFile.iter_batches(batch_size)` into memory first (untimed: `read_s`),
then times only what scoring needs, for every batch: the model's columns to numpy (as the batch
job does), `signature.validate_columns`, `predictor.predict`, on as many threads as the batch
job scores with (onnxruntime: one per CPU, at most 4; `--threads`). No I/O in the timed span:
`span_s` (wall) and `span_cpu_s` (CPU of every thread of the process).
"""

from __future__ import annotations

import argparse
import json
import os
import time

MODELS = ("lr", "lgbm")


def settings(home: str):
    from shipyard.core import Settings

    return Settings(home=home, auto_migrate=True, actor="bench")


def register(args: argparse.Namespace) -> dict:
    import joblib
    import pandas as pd

    from shipyard.registry import Registry

    registry = Registry.from_settings(settings(args.home))
    sample = pd.read_parquet(os.path.join(args.models, "sample.parquet"))
    out = {}
    try:
        for m in MODELS:
            t0 = time.perf_counter()
            model = joblib.load(os.path.join(args.models, f"{m}.joblib"))
            version = registry.register(
                model, name=f"batch-{m}", sample=sample, description="batch benchmark"
            )
            served = registry.load(f"batch-{m}", version.version)
            out[m] = {
                "ref": f"batch-{m}:{version.version}",
                "runtime": served.predictor.runtime,
                "task": served.task,
                "inputs": len(served.signature.columns),
                "register_s": round(time.perf_counter() - t0, 3),
            }
            print(m, out[m], flush=True)
    finally:
        registry.close()
    return out


def floor(args: argparse.Namespace) -> dict:
    import numpy as np
    import pyarrow.parquet as pq

    from shipyard.core import ModelRef
    from shipyard.registry import Registry

    registry = Registry.from_settings(settings(args.home))
    ref = ModelRef.parse(args.model)
    t0 = time.perf_counter()
    served = registry.load(ref.name, registry.resolve(ref).version)
    load_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    pf = pq.ParquetFile(args.input)
    batches = list(pf.iter_batches(batch_size=args.batch_rows))
    read_s = time.perf_counter() - t0
    specs = served.signature.columns
    validate = served.signature.validate_columns
    predict = served.predictor.predict

    from concurrent.futures import ThreadPoolExecutor

    from shipyard.batch._job import _scoring_threads

    # as many threads as the batch job scores with (onnxruntime: one per CPU; else one)
    threads = args.threads or _scoring_threads(served, None)

    def score(batch):
        names = batch.schema.names
        data = {
            s.name: batch.column(s.name).to_numpy(zero_copy_only=False)
            for s in specs
            if s.name in names
        }
        return batch.num_rows, float(np.asarray(predict(validate(data, loc="rows")))[:, -1].sum())

    rows = 0
    checksum = 0.0
    c0, t0 = time.process_time(), time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for n, total in pool.map(score, batches):
            rows += n
            checksum += total
    span_s = time.perf_counter() - t0
    span_cpu_s = time.process_time() - c0
    registry.close()
    return {
        "target": "floor",
        "model": served.name,
        "version": served.version,
        "runtime": served.predictor.runtime,
        "rows": rows,
        "batches": len(batches),
        "batch_rows": args.batch_rows,
        "threads": threads,
        "load_s": load_s,
        "read_s": read_s,
        "span_s": span_s,
        "span_cpu_s": span_cpu_s,
        "rows_per_s": rows / span_s if span_s else None,
        "score_sum": checksum,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("register")
    r.add_argument("--home", required=True)
    r.add_argument("--models", required=True, help="the folder with lr.joblib, lgbm.joblib")
    f = sub.add_parser("floor")
    f.add_argument("--home", required=True)
    f.add_argument("--model", required=True, help="NAME:VERSION")
    f.add_argument("--input", required=True)
    f.add_argument("--batch-rows", type=int, default=50_000)  # the job's chunk
    f.add_argument("--threads", type=int, default=None, help="default: as the batch job")
    for p in (r, f):
        p.add_argument("--json", help="write the result here")
    args = ap.parse_args()
    result = register(args) if args.cmd == "register" else floor(args)
    text = json.dumps(result, indent=1)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(text)
    print(text)


if __name__ == "__main__":
    main()

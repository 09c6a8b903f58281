"""In-process floor for shipyard: the loaded predictor alone, with no HTTP.

    .venv/bin/python bench/serving/shipyard_floor.py --root bench/.peers --rounds 3 \
        --out bench/results/raw/shipyard_floor.json

For each model registered by `shipyard_setup.py`, the bundle is opened as the server opens
it (`Registry.open`: verified, ONNX fast path when packaging kept one) and timed with the
harness's `floor.time_calls` (median/p90/p99 wall time and CPU per call) on the harness's
single record and on its 100-record body:

    predictor           `predictor.predict(columns)`: the model call the server's batcher makes
    validate+predict    + `Signature.validate_records`: records -> typed columns
    json+validate+predict
                        + `orjson.loads` of the request body: all of a /v1 request's work that
                        is not HTTP, auth, routing, logging or the response

Each round repeats the set; the report is the median over rounds (the harness's floor.py
method). `rows_per_s` of a 100-row path = 100 / its median call time.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from harness import DEFAULT_ROOT, module

import shipyard
from shipyard import Registry, Settings

floor = module("floor")  # the harness's timing functions (and its warning filter)


def timings(
    root: Path, model: str, info: dict[str, Any], calls: int
) -> dict[str, dict[str, float]]:
    settings = Settings(home=Path(info["home"]))
    with Registry.from_settings(settings) as registry:
        bundle = registry.open(info["name"], info["version"])
        signature = registry.get_version(info["name"], info["version"]).signature
    predictor = bundle.predictor
    out: dict[str, dict[str, float]] = {}
    for label, body_file in (
        ("1row", "shipyard_single.json"),
        ("100rows", "shipyard_batch100.json"),
    ):
        raw = (root / "bodies" / body_file).read_bytes()
        records = orjson.loads(raw)["instances"]
        columns = signature.validate_records(records)
        paths: dict[str, Callable[[], object]] = {
            "predictor": lambda c=columns: predictor.predict(c),
            "validate+predict": lambda r=records: predictor.predict(signature.validate_records(r)),
            "json+validate+predict": lambda b=raw: predictor.predict(
                signature.validate_records(orjson.loads(b)["instances"])
            ),
        }
        for path, fn in paths.items():
            result = floor.time_calls(fn, calls)
            result["rows_per_s"] = len(records) / (result["p50_us"] / 1e6)
            out[f"{model}/shipyard-{path}/{label}"] = result
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    root = args.root.resolve()
    setup = json.loads((root / "shipyard" / "setup.json").read_text())
    with open("/proc/loadavg") as f:
        load_start = f.read().split()[:3]
    rounds = []
    for r in range(args.rounds):
        res: dict[str, dict[str, float]] = {}
        for model, info in setup.items():
            res.update(timings(root, model, info, args.calls))
        rounds.append(res)
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    summary = {
        key: {stat: statistics.median(rd[key][stat] for rd in rounds) for stat in rounds[0][key]}
        for key in rounds[0]
    }
    with open("/proc/loadavg") as f:
        load_end = f.read().split()[:3]
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "versions": {"python": platform.python_version(), "shipyard": shipyard.__version__},
        "runtimes": {m: info["runtime"] for m, info in setup.items()},
        "rounds": args.rounds,
        "calls": args.calls,
        "loadavg_start": load_start,
        "loadavg_end": load_end,
        "median_over_rounds": summary,
    }
    text = json.dumps(report, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    for key, value in summary.items():
        print(f"{key:45s} p50 {value['p50_us']:9.1f} us  {value['rows_per_s']:12,.0f} rows/s")


if __name__ == "__main__":
    main()

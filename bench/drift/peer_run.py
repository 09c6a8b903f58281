"""One Evidently or floor run in its own process: the harness's `bench_drift.py`, plus CPU time.

    venv-drift/bin/python bench/drift/peer_run.py --tool evidently --config default \
        --data DIR --out run.json

Imports the harness's `bench_drift.py` and runs its `main()` steps unchanged (the same
preloaded modules, `pd.read_parquet` of both files, the same tool function and config:
`run_evidently(ref, cur, num, cat, "default" | "ks_chi2" | "psi")`, `run_floor(...)`), and
adds `phases.compute_cpu`: `time.process_time()` around the tool call (all threads), which
load from other programs disturbs far less than wall seconds. The JSON has the harness's
shape. Needs no shipyard: it runs in the Evidently venv; `DRIFT_HARNESS` locates the harness.
"""

from __future__ import annotations

import time

T0 = time.perf_counter()

import argparse  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

HARNESS = Path(
    os.environ.get(
        "DRIFT_HARNESS", Path(__file__).resolve().parents[3] / "shared" / "bench" / "drift"
    )
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--tool", required=True, choices=["evidently", "floor"])
    ap.add_argument("--config", default="default")
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    a = ap.parse_args()
    if not (HARNESS / "bench_drift.py").is_file():
        sys.exit(f"the shared drift harness is not at {HARNESS}; set DRIFT_HARNESS")
    sys.path.insert(0, str(HARNESS))
    bench_drift = importlib.import_module("bench_drift")

    import pandas as pd

    for name in bench_drift.PRELOAD[a.tool]:
        importlib.import_module(name)
    t1 = time.perf_counter()
    meta = json.loads((a.data / "columns.json").read_text())
    ref = pd.read_parquet(a.data / "reference.parquet")
    cur = pd.read_parquet(a.data / "current.parquet")
    t2 = time.perf_counter()
    c2 = time.process_time()
    cols, extra = bench_drift.TOOLS[a.tool](
        ref, cur, meta["numerical"], meta["categorical"], a.config
    )
    c3 = time.process_time()
    t3 = time.perf_counter()
    res = {
        "tool": a.tool,
        "config": a.config,
        "data": str(a.data),
        "rows": meta["rows"],
        "phases": {
            "import": t1 - T0,
            "load": t2 - t1,
            "compute": t3 - t2,
            "compute_cpu": c3 - c2,
            "total_in_process": t3 - T0,
        },
        "columns": cols,
        "extra": extra,
        "n_drift": sum(1 for v in cols.values() if v.get("drift")),
        "drifted": sorted(k for k, v in cols.items() if v.get("drift")),
    }
    a.out.write_text(json.dumps(res, indent=1, default=str))
    print(json.dumps({k: res[k] for k in ("tool", "config", "rows", "phases", "drifted")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

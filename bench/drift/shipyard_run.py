"""One shipyard drift run in its own process: the harness's `bench_drift.py`, for shipyard.

    .venv/bin/python bench/drift/shipyard_run.py --config parquet --data DIR --out run.json

configs:
  parquet  `compare("DIR/reference.parquet", "DIR/current.parquet")`: shipyard reads the
           files itself, one column at a time, so "compute" includes reading the data
  frames   `pd.read_parquet` both files first (the "load" phase, as the harness does for
           the peers), then `compare(reference_df, current_df)`

Phases (seconds, `time.perf_counter`): import (interpreter start to `shipyard.monitoring`
imported), load, compute (the `compare` call only; `compute_cpu`: `time.process_time()`
around it, all threads), serialize (`report.to_dict()`). The JSON
has the harness's shape (`columns: {name: {test, stat, p_value, drift}}`, `drifted`), plus
every column's full `to_dict()` entry except the chart data, so the statistics can be
cross-checked against Evidently's.
"""

from __future__ import annotations

import time

T0 = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

CHART_FIELDS = ("histogram", "shares")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--config", choices=["parquet", "frames"], default="parquet")
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--workers", type=int, default=None, help="compare(workers=...)")
    a = ap.parse_args()

    from shipyard.monitoring import compare

    t1 = time.perf_counter()
    meta = json.loads((a.data / "columns.json").read_text())
    reference: Any = a.data / "reference.parquet"
    current: Any = a.data / "current.parquet"
    if a.config == "frames":
        import pandas as pd

        reference, current = pd.read_parquet(reference), pd.read_parquet(current)
    t2 = time.perf_counter()
    c2 = time.process_time()
    report = compare(reference, current, workers=a.workers)
    c3 = time.process_time()
    t3 = time.perf_counter()
    full = report.to_dict()
    t4 = time.perf_counter()

    columns: dict[str, dict[str, Any]] = {}
    for name, c in full["columns"].items():
        columns[name] = {
            "test": c["method"],
            "stat": c["statistic"],
            "p_value": c["p_value"],
            "drift": c["drift"],
            **{k: v for k, v in c.items() if k not in ("column", "stats", "statistic", "drift")},
            "stats": {k: v for k, v in c["stats"].items() if k not in CHART_FIELDS},
        }
    expected = set(meta["numerical"]) | set(meta["categorical"])
    kinds = {n: c["kind"] for n, c in full["columns"].items()}
    wrong_kind = sorted(
        n
        for n in expected
        if kinds.get(n) != ("numeric" if n in meta["numerical"] else "categorical")
    )
    res = {
        "tool": "shipyard",
        "config": a.config,
        "data": str(a.data),
        "rows": meta["rows"],
        "phases": {
            "import": t1 - T0,
            "load": t2 - t1,
            "compute": t3 - t2,
            "compute_cpu": c3 - c2,
            "serialize": t4 - t3,
            "total_in_process": t4 - T0,
        },
        "columns": columns,
        "extra": {
            "drift_share": full["drift_share"],
            "dataset_drift": full["dataset_drift"],
            "warnings": sorted(n for n, c in full["columns"].items() if c["status"] == "warning"),
            "columns_missing_or_wrong_kind": sorted(expected - set(columns)) + wrong_kind,
            "workers": a.workers,
        },
        "versions": {d: _version(d) for d in ("shipyard", "numpy", "scipy", "pyarrow", "pandas")},
        "n_drift": len(report.drifted),
        "drifted": sorted(report.drifted),
    }
    a.out.write_text(json.dumps(res, indent=1, default=str))
    print(json.dumps({k: res[k] for k in ("tool", "config", "rows", "phases", "drifted")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

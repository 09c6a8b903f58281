#!/usr/bin/env python3
"""Cross-check the targets' outputs for one model: every row once, the same scores.

    python check.py --rows N --ref pyarrow=OUT.parquet --out shipyard:nolog=OUT2.parquet \
        --out spark=DIR --out ray=DIR --json CHECK.json

Reads `id` and `score` (a file or a folder of Parquet files; Spark's and Ray's part files in any
order), orders by id and compares with the reference (the pyarrow loop: the joblib model's own
predict_proba). shipyard scores with its ONNX graph, so small differences are expected (ONNX
tree ensembles compute in float32): the report gives the largest absolute difference, how many
rows differ by more than 1e-4, and how many labels (score >= 0.5) differ.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pyarrow.dataset as ds


def load(path: str) -> tuple[np.ndarray, np.ndarray]:
    table = ds.dataset(path, format="parquet").to_table(columns=["id", "score"])
    ids = table.column("id").to_numpy()
    score = table.column("score").to_numpy(zero_copy_only=False).astype(np.float64)
    order = np.argsort(ids, kind="stable")
    return ids[order], score[order]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--ref", required=True, help="NAME=PATH")
    ap.add_argument("--out", action="append", default=[], help="NAME=PATH (repeat)")
    ap.add_argument("--json")
    args = ap.parse_args()
    ref_name, ref_path = args.ref.split("=", 1)
    ref_ids, ref_score = load(ref_path)
    expected = np.arange(args.rows, dtype=np.int64)
    result = {
        "reference": ref_name,
        "rows": args.rows,
        ref_name: {
            "rows": len(ref_ids),
            "ids_ok": bool(np.array_equal(ref_ids, expected)),
            "nan": int(np.isnan(ref_score).sum()),
        },
    }
    for spec in args.out:
        name, path = spec.split("=", 1)
        try:
            ids, score = load(path)
        except Exception as ex:  # a missing or unreadable output is a finding, not a crash
            result[name] = {"error": f"{type(ex).__name__}: {ex}"}
            continue
        entry: dict = {
            "rows": len(ids),
            "ids_ok": bool(np.array_equal(ids, expected)),
            "nan": int(np.isnan(score).sum()),
        }
        if entry["ids_ok"] and len(ref_ids) == len(ids):
            diff = np.abs(score - ref_score)
            entry["max_abs_diff"] = float(np.nanmax(diff)) if len(diff) else 0.0
            entry["mean_abs_diff"] = float(np.nanmean(diff)) if len(diff) else 0.0
            entry["rows_diff_gt_1e-4"] = int((diff > 1e-4).sum())
            entry["label_mismatches"] = int(((score >= 0.5) != (ref_score >= 0.5)).sum())
        result[name] = entry
    text = json.dumps(result, indent=1)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(text)
    print(text)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The batch benchmark's data and models.

    python gen_data.py --rows 10000000 --out /tmp/peers-batch/data [--force]

Writes, under --out:
    batch_<N>.parquet     N rows: `id` (int64, 0..N-1) and 30 float64 features f00..f29,
                          row groups of 1,000,000 rows, made one row group at a time (memory
                          holds one piece, whatever N); written to a temporary name first
    models/lr.joblib      StandardScaler + LogisticRegression pipeline
    models/lgbm.joblib    LGBMClassifier(n_estimators=100, num_leaves=31) (the serving bench's)
    models/sample.parquet 1,000 training rows (the registration sample for shipyard)
    models/meta.json      seed, training rows, positive rate, test AUC, versions

The models are trained once, on a 200,000-row sample drawn from the same generator with its
own seed (so they are the same whatever N is) and a binary label derived from the features.
Each piece of the data has its own seed: batch_<N> is the same rows for the same N, and a
smaller N is a prefix of a larger one. Run with a Python that has numpy, pandas, pyarrow,
scikit-learn, lightgbm and joblib (shipyard's .venv; the peers' venv has the same versions of
scikit-learn and lightgbm, so the joblib files load in both).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SEED = 20261128
N_FEATURES = 30
FEATURES = [f"f{i:02d}" for i in range(N_FEATURES)]
PIECE_ROWS = 1_000_000  # one row group per piece
TRAIN_ROWS = 200_000
TRAIN_PIECE = 10**9  # the training sample's seed, apart from every data piece's
SAMPLE_ROWS = 1_000


def features(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """30 float64 columns of assorted shapes: normals, skewed, bounded, counts, correlated."""
    d: dict[str, np.ndarray] = {}
    for i in range(10):  # f00-f09: normal
        d[f"f{i:02d}"] = rng.normal(0.0, 1.0 + 0.1 * i, n)
    for i in range(10, 15):  # f10-f14: log-normal (amounts)
        d[f"f{i:02d}"] = rng.lognormal(3.0 + 0.2 * (i - 10), 0.9, n)
    for i in range(15, 20):  # f15-f19: uniform [0, 1) (rates, scores)
        d[f"f{i:02d}"] = rng.random(n)
    for i in range(20, 25):  # f20-f24: counts as floats
        d[f"f{i:02d}"] = rng.poisson(0.5 + i - 20, n).astype(np.float64)
    for i in range(25, 30):  # f25-f29: mixtures of earlier columns plus noise
        j = i - 25
        d[f"f{i:02d}"] = (
            0.6 * d[f"f{j:02d}"] + 0.3 * np.log1p(d[f"f{10 + j:02d}"]) + rng.normal(0, 0.5, n)
        )
    return d


def label(rng: np.random.Generator, d: dict[str, np.ndarray]) -> np.ndarray:
    """A binary label from the features: linear terms, interactions and thresholds, noise."""
    n = len(d["f00"])
    z = (
        0.8 * d["f00"]
        - 0.6 * d["f01"]
        + 0.4 * d["f02"] * d["f03"]
        + 0.5 * np.log1p(d["f10"]) * (d["f15"] > 0.5)
        + 1.2 * (d["f16"] > 0.8)
        - 0.9 * (d["f17"] < 0.2)
        + 0.3 * d["f20"]
        - 0.2 * d["f22"]
        + 0.7 * np.sin(2.0 * d["f04"])
        + 0.5 * np.abs(d["f25"])
        - 0.4 * d["f27"]
        + 0.6 * (d["f21"] >= 3) * d["f18"]
        - 2.5
        + rng.normal(0, 0.7, n)
    )
    return (rng.random(n) < 1.0 / (1.0 + np.exp(-z))).astype(np.int8)


def write_data(path: str, rows: int) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    schema = pa.schema([("id", pa.int64()), *[(f, pa.float64()) for f in FEATURES]])
    t0 = time.perf_counter()
    with pq.ParquetWriter(tmp, schema, compression="snappy") as writer:
        for piece, start in enumerate(range(0, rows, PIECE_ROWS)):
            n = min(PIECE_ROWS, rows - start)
            rng = np.random.default_rng([SEED, piece])
            d = features(rng, n)
            cols = [pa.array(np.arange(start, start + n, dtype=np.int64))]
            cols += [pa.array(d[f]) for f in FEATURES]
            writer.write_table(pa.Table.from_arrays(cols, schema=schema), row_group_size=PIECE_ROWS)
            del d, cols
            print(f"  {start + n:,}/{rows:,} rows ({time.perf_counter() - t0:.1f} s)", flush=True)
    os.replace(tmp, path)


def train(models_dir: str) -> None:
    import joblib
    import lightgbm as lgb
    import pandas as pd
    import sklearn
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    os.makedirs(models_dir, exist_ok=True)
    rng = np.random.default_rng([SEED, TRAIN_PIECE])
    d = features(rng, TRAIN_ROWS)
    y = label(rng, d)
    X = pd.DataFrame({f: d[f] for f in FEATURES})
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.2, random_state=SEED, stratify=y)
    models = {
        "lr": Pipeline([("scaler", StandardScaler()), ("clf", LogisticRegression(max_iter=1000))]),
        "lgbm": lgb.LGBMClassifier(n_estimators=100, num_leaves=31, random_state=SEED, verbose=-1),
    }
    meta = {
        "seed": SEED,
        "train_rows": TRAIN_ROWS,
        "positive_rate": round(float(y.mean()), 4),
        "versions": {
            "scikit-learn": sklearn.__version__,
            "lightgbm": lgb.__version__,
            "numpy": np.__version__,
            "joblib": joblib.__version__,
        },
        "models": {},
    }
    for name, m in models.items():
        t0 = time.perf_counter()
        m.fit(X_tr, y_tr)
        fit_s = time.perf_counter() - t0
        auc = roc_auc_score(y_te, m.predict_proba(X_te)[:, 1])
        joblib.dump(m, os.path.join(models_dir, f"{name}.joblib"))
        meta["models"][name] = {"fit_s": round(fit_s, 2), "test_auc": round(float(auc), 4)}
        print(f"  {name}: {meta['models'][name]}", flush=True)
    X.head(SAMPLE_ROWS).to_parquet(os.path.join(models_dir, "sample.parquet"), index=False)
    with open(os.path.join(models_dir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument(
        "--out", default=os.path.join(os.environ.get("ROOT", "/tmp/peers-batch"), "data")
    )
    ap.add_argument("--force", action="store_true", help="remake what exists")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    models_dir = os.path.join(args.out, "models")
    if args.force or not os.path.exists(os.path.join(models_dir, "meta.json")):
        print(f"training the models on {TRAIN_ROWS:,} rows -> {models_dir}", flush=True)
        train(models_dir)
    path = os.path.join(args.out, f"batch_{args.rows}.parquet")
    if args.force or not os.path.exists(path):
        print(f"writing {args.rows:,} rows -> {path}", flush=True)
        write_data(path, args.rows)
    print(path)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Medians, cross-checks and goals of a run.py run -> bench/features/RESULTS.md, the
features section of bench/RESULTS.md, and bench/features/results/*.json.

  $ROOT/venv-feast/bin/python report.py [--out $ROOT/results/features-shipyard]

Cross-checks use the shared harness's crosscheck.py (imported by path): Feast's join vs
shipyard's (aligned on label_id), the DuckDB and polars floors vs shipyard's; the online
samples (shipyard's value per view where its status is ok, vs Feast's and the SQLite floor's);
the aggregation (shipyard vs both DuckDB floors, cell by cell).
"""

import argparse
import glob
import importlib.util
import json
import os
import re
import statistics as st
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
MAIN = os.path.abspath(os.path.join(HERE, "..", ".."))
SHARED = os.environ.get("SHARED_FEATURES", os.path.join(MAIN, "..", "shared", "bench", "features"))
ROOT = os.environ.get("ROOT", "/tmp/peers")
spec = importlib.util.spec_from_file_location("crosscheck", os.path.join(SHARED, "crosscheck.py"))
cc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cc)

FEATS = cc.FEATS
VIEW_OF = {f: ("customer_stats" if f.startswith("customer") else "merchant_stats") for f in FEATS}
AGG = "customer_avg_amount_30d"
BEGIN, END = "<!-- features:begin -->", "<!-- features:end -->"


# -- numbers ----------------------------------------------------------------------------------------


def med(xs):
    xs = [x for x in xs if x is not None]
    return st.median(xs) if xs else None


def mm(xs):
    xs = [x for x in xs if x is not None]
    return (min(xs), max(xs)) if xs else (None, None)


def num(x, unit=""):
    if x is None:
        return "-"
    if isinstance(x, int) or (isinstance(x, float) and x.is_integer() and abs(x) >= 1000):
        return f"{int(x):,}{unit}"
    a = abs(x)
    s = (
        f"{x:,.0f}"
        if a >= 1000
        else f"{x:.1f}"
        if a >= 100
        else f"{x:.2f}"
        if a >= 1
        else f"{x:.3f}"
    )
    return s + unit


def mmtxt(v, lo, hi):
    return f"{num(v)} ({num(lo)}-{num(hi)})"


def ratio(a, b):
    return None if not a or not b else a / b


def load_runs(out):
    runs = [
        json.loads(Path(p).read_text())
        for p in sorted(glob.glob(os.path.join(out, "raw", "*.json")))
    ]
    g = defaultdict(list)
    failed = []
    for r in runs:
        if "step" not in r:
            continue
        if r.get("rc") == 0:
            g[r["step"]].append(r)
        else:
            failed.append(
                {"tag": r["tag"], "rc": r["rc"], "stderr_tail": r.get("stderr_tail", "")[-800:]}
            )
    return g, failed, runs


def summarize(g):
    S = {}
    for step, rs in g.items():
        d = {
            "n": len(rs),
            "wall_s": med([r["time_v"]["wall_s"] for r in rs]),
            "cpu_s": med([r["time_v"]["user_s"] + r["time_v"]["sys_s"] for r in rs]),
            "cpu_s_min_max": mm([r["time_v"]["user_s"] + r["time_v"]["sys_s"] for r in rs]),
            "maxrss_mb": med([r["time_v"]["maxrss_mb"] for r in rs]),
            "maxrss_mb_min_max": mm([r["time_v"]["maxrss_mb"] for r in rs]),
            "import_s": med([r.get("import_s") for r in rs]),
            "loadavg_1m": [round(r["loadavg_before"][0], 2) for r in rs],
            "loadavg": [[round(x, 2) for x in r["loadavg_before"]] for r in rs],
            "code": sorted({r.get("code", "?") for r in rs}),
        }
        keys = set().union(*[r.keys() for r in rs])
        for k in sorted(keys):
            vals = [r.get(k) for r in rs]
            if (
                all(
                    isinstance(v, (int, float)) and not isinstance(v, bool)
                    for v in vals
                    if v is not None
                )
                and any(isinstance(v, (int, float)) for v in vals)
                and k not in ("rc", "repeat", "server_pid", "port")
            ):
                d[k] = med(vals)
                d[k + "_min_max"] = mm(vals)
        for be in ("dict", "sqlite", "redis"):
            if any(be in r for r in rs):
                d[be] = {
                    k: med([r[be][k] for r in rs if be in r])
                    for k in (
                        "single_p50_us",
                        "single_p99_us",
                        "batch_p50_us",
                        "batch_p99_us",
                        "build_s",
                    )
                }
                for k in ("single_p50_us", "single_p99_us", "batch_p50_us", "batch_p99_us"):
                    d[be][k + "_min_max"] = mm([r[be][k] for r in rs if be in r])
        first = rs[0]
        for k in (
            "nulls",
            "null_cells",
            "runs",
            "modes",
            "single_status",
            "digest",
            "clock",
            "new_file_rows",
        ):
            if k in first:
                d[k] = first[k]
        S[step] = d
    return S


# -- cross-checks -----------------------------------------------------------------------------------


def online_check(ship_path, ref_path, ref_key=None):
    """shipyard's sample (values + per-view status) against a reference sample: cells whose view
    is ok must equal the reference; stale / missing cells must be None."""
    A = json.loads(Path(ship_path).read_text())
    B = json.loads(Path(ref_path).read_text())
    if ref_key:
        B = B[ref_key]
    keys = sorted(set(A) & set(B))
    out = {
        "entities_compared": len(keys),
        "cells": len(keys) * len(FEATS),
        "ok_cells": 0,
        "ok_cell_mismatches": 0,
        "not_ok_cells": 0,
        "not_ok_cells_not_null": 0,
        "ref_nonnull_cells": 0,
    }
    for k in keys:
        for f in FEATS:
            x, y = A[k].get(f), B[k].get(f)
            out["ref_nonnull_cells"] += y is not None and y == y
            if A[k]["__status"][VIEW_OF[f]] == "ok":
                out["ok_cells"] += 1
                bad = (x is None) != (y is None or y != y) or (
                    x is not None
                    and y is not None
                    and abs(float(x) - float(y)) > 1e-9 * max(1.0, abs(float(y)))
                )
                out["ok_cell_mismatches"] += bool(bad)
            else:
                out["not_ok_cells"] += 1
                out["not_ok_cells_not_null"] += x is not None
    return out


def nonnull_cells(path, key=None):
    d = json.loads(Path(path).read_text())
    if key:
        d = d[key]
    return {
        "entities": len(d),
        "cells": len(d) * len(FEATS),
        "nonnull": sum(
            v.get(f) is not None and v.get(f) == v.get(f) for v in d.values() for f in FEATS
        ),
    }


def agg_check(ship, floor):
    a = pd.read_parquet(ship).set_index("label_id").sort_index()
    b = pd.read_parquet(floor).set_index("label_id").sort_index()
    common = a.index.intersection(b.index)
    x, y = a.loc[common, AGG].to_numpy(float), b.loc[common, AGG].to_numpy(float)
    n, mx = cc.cmp_cols(pd.Series(x), pd.Series(y))
    both = ~np.isnan(x) & ~np.isnan(y)
    return {
        "ship_rows": len(a),
        "floor_rows": len(b),
        "common_rows": len(common),
        "cells_compared": len(common),
        "mismatches_rel_1e-9": n,
        "max_abs_diff": mx,
        "bit_identical": int((x[both] == y[both]).sum()),
        "nulls_ship": int(np.isnan(x).sum()),
        "nulls_floor": int(np.isnan(y).sum()),
    }


def crosschecks(out):
    p = lambda n: os.path.join(out, n)  # noqa: E731
    X = {}
    if os.path.exists(p("shipyard_historical.parquet")):
        for ref in ("feast", "duckdb", "polars"):
            if os.path.exists(p(f"{ref}_historical.parquet")):
                X[f"historical_{ref}_vs_shipyard"] = cc.compare(
                    p(f"{ref}_historical.parquet"), p("shipyard_historical.parquet")
                )
    samples = {
        "online": "shipyard_online_sample.json",
        "online_clock": "shipyard_online_clock_sample.json",
        "http": "shipyard_http_sample.json",
    }
    for name, f in samples.items():
        if not os.path.exists(p(f)):
            continue
        if os.path.exists(p("feast_online_sample.json")):
            X[f"{name}_vs_feast"] = online_check(p(f), p("feast_online_sample.json"))
        if os.path.exists(p("floor_online_sample.json")):
            X[f"{name}_vs_floor_sqlite"] = online_check(
                p(f), p("floor_online_sample.json"), "sqlite"
            )
        X[f"{name}_nonnull"] = nonnull_cells(p(f))
    if os.path.exists(p("feast_online_sample.json")):
        X["feast_online_nonnull"] = nonnull_cells(p("feast_online_sample.json"))
    if os.path.exists(p("floor_online_sample.json")):
        X["floor_sqlite_online_nonnull"] = nonnull_cells(p("floor_online_sample.json"), "sqlite")
    for m in ("range", "cumsum"):
        if os.path.exists(p("shipyard_agg.parquet")) and os.path.exists(
            p(f"floor_agg_{m}.parquet")
        ):
            X[f"agg_shipyard_vs_floor_{m}"] = agg_check(
                p("shipyard_agg.parquet"), p(f"floor_agg_{m}.parquet")
            )
    if os.path.exists(p("floor_agg_range.parquet")) and os.path.exists(
        p("floor_agg_cumsum.parquet")
    ):
        X["agg_floor_range_vs_cumsum"] = agg_check(
            p("floor_agg_range.parquet"), p("floor_agg_cumsum.parquet")
        )
    return X


# -- markdown ---------------------------------------------------------------------------------------


def table(header, rows):
    L = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    L += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(L)


def loads(d):
    return ", ".join(num(x) for x in d["loadavg_1m"])


def dirty_text(code):
    src = [ln for ln in code.get("dirty_src", "").splitlines() if ln.strip()]
    other = [ln for ln in code.get("dirty_paths", "").splitlines() if ln.strip() and ln not in src]
    if src:
        return f"src/ differs from the commit in {len(src)} files (snapshot measured, diff in src.diff)"
    paths = [ln.split(None, 1)[1] for ln in other]
    where = sorted({"/".join(p.split("/")[:2]) for p in paths})
    return "src/ clean" + (
        f"; uncommitted files elsewhere only ({', '.join(where)[:120]})" if other else ""
    )


def build(S, X, env, code, failed, out, G=None):
    g = lambda step, k: (S.get(step) or {}).get(k)  # noqa: E731

    def paired(num_step, den_step, key):
        """num / den per repeat (the two ran next to each other), as text."""
        a = {r["repeat"]: r.get(key) for r in (G or {}).get(num_step, [])}
        b = {r["repeat"]: r.get(key) for r in (G or {}).get(den_step, [])}
        return (
            ", ".join(f"r{k}: {a[k] / b[k]:.1f}x" for k in sorted(set(a) & set(b)) if a[k] and b[k])
            or "-"
        )

    gm = lambda step, k: (S.get(step) or {}).get(k + "_min_max", (None, None))  # noqa: E731
    fv, sv = env.get("feast_venv", {}), env.get("shipyard_venv", {})
    machine = (
        f"{env.get('cpus')} vCPU ({env.get('cpu_model')}), {env.get('mem_gib')} GiB, {env.get('os')}, "
        f"Python {sv.get('python')}"
    )
    all_loads = [x for d in S.values() for x in d["loadavg_1m"]]
    load_txt = (
        f"{min(all_loads):.2f}-{max(all_loads):.2f} (median {st.median(all_loads):.2f})"
        if all_loads
        else "-"
    )
    versions = (
        f"shipyard {sv.get('shipyard')} at `{code.get('git_describe')}` (src sha256 {code.get('src_sha256', '')[:12]}, "
        f"{dirty_text(code)}); "
        f"shipyard venv: duckdb {sv.get('duckdb')}, pyarrow {sv.get('pyarrow')}, pandas {sv.get('pandas')}, "
        f"httpx {sv.get('httpx')}, fastapi {sv.get('fastapi')}, uvicorn {sv.get('uvicorn')}, SQLite {sv.get('sqlite')}; "
        f"Feast venv: feast {fv.get('feast')} (dask {fv.get('dask')}, pandas {fv.get('pandas')}, numpy {fv.get('numpy')}, "
        f"pyarrow {fv.get('pyarrow')}), duckdb {fv.get('duckdb')}, polars {fv.get('polars')}, SQLite {fv.get('sqlite')}"
    )
    reps = max((d["n"] for d in S.values()), default=0)

    # ---- goals
    H = lambda s: g(s, "historical_s")  # noqa: E731
    goals = []
    r_hist = ratio(H("feast:historical"), H("shipyard:historical"))
    r_mem = ratio(g("shipyard:historical", "maxrss_mb"), g("feast:historical", "maxrss_mb"))
    goals.append(
        (
            "training set >= 15x faster than Feast (join s, medians)",
            f"{num(r_hist)}x",
            r_hist is not None and r_hist >= 15,
        )
    )
    goals.append(
        (
            "training set peak RSS <= 1/4 of Feast's",
            f"{num(r_mem * 100 if r_mem else None)} % of Feast's",
            r_mem is not None and r_mem <= 0.25,
        )
    )
    for step, label in (
        ("shipyard:online_clock", "clock 2026-10-29"),
        ("shipyard:online", "clock = now, all stale"),
    ):
        v = g(step, "single_p99_us")
        goals.append(
            (f"online 1 entity p99 < 200 us ({label})", f"{num(v)} us", v is not None and v < 200)
        )
        v = g(step, "batch_p99_us")
        goals.append(
            (
                f"online 100 entities p99 < 3 ms ({label})",
                f"{num(v / 1000 if v else None)} ms",
                v is not None and v < 3000,
            )
        )
    r_mat = ratio(
        g("feast:materialize", "materialize_s"), g("shipyard:materialize", "materialize_s")
    )
    goals.append(
        ("materialize >= 7x faster than Feast", f"{num(r_mat)}x", r_mat is not None and r_mat >= 7)
    )
    r_inc = ratio(
        g("shipyard:materialize", "materialize_s"), g("shipyard:incremental", "materialize_s")
    )
    goals.append(
        (
            "incremental (1 % new rows) >= 20x faster than the full run",
            f"{num(r_inc)}x",
            r_inc is not None and r_inc >= 20,
        )
    )
    xf = X.get("historical_feast_vs_shipyard", {})
    ok_rows = (
        xf.get("feature_cell_mismatches") == 0
        and xf.get("key_cell_mismatches") == 0
        and xf.get("rows_only_in_ref") == 0
        and g("shipyard:historical", "result_rows") == 100000
    )
    goals.append(
        (
            "every row Feast returns identical in shipyard's; all 100,000 rows returned",
            f"{num(xf.get('common_rows'))} common rows, {xf.get('feature_cell_mismatches')} cell mismatches, "
            f"{num(g('shipyard:historical', 'result_rows'))} rows",
            bool(ok_rows),
        )
    )
    goal_rows = [(d, m, "**met**" if ok else "**not met**") for d, m, ok in goals]

    # ---- summary (bench/RESULTS.md section)
    def row(label, step, key, feast_step=None, unit="s", scale=1.0):
        v = g(step, key)
        lo, hi = gm(step, key)
        f = g(feast_step, key) if feast_step else None
        sc = lambda x: None if x is None else x * scale  # noqa: E731
        return [
            label,
            f"{num(sc(v))} ({num(sc(lo))}-{num(sc(hi))}) {unit}",
            f"{num(sc(f))} {unit}" if f else "-",
            f"{num(ratio(f, v))}x" if f else "-",
        ]

    summary_rows = [
        row(
            "training set, 100k rows x 2 views (join s)",
            "shipyard:historical",
            "historical_s",
            "feast:historical",
        ),
        [
            "training set: CPU s (whole process)",
            num(g("shipyard:historical", "cpu_s")),
            num(g("feast:historical", "cpu_s")),
            f"{num(ratio(g('feast:historical', 'cpu_s'), g('shipyard:historical', 'cpu_s')))}x",
        ],
        [
            "training set: peak RSS MB",
            num(g("shipyard:historical", "maxrss_mb")),
            num(g("feast:historical", "maxrss_mb")),
            f"{num(r_mem * 100 if r_mem else None)} % of Feast's",
        ],
        row(
            "materialize 49,472 entities into SQLite (s)",
            "shipyard:materialize",
            "materialize_s",
            "feast:materialize",
        ),
        [
            "incremental materialize, +1 % rows (s)",
            mmtxt(
                g("shipyard:incremental", "materialize_s"),
                *gm("shipyard:incremental", "materialize_s"),
            )
            + " s",
            f"full run {num(g('shipyard:materialize', 'materialize_s'))} s",
            f"{num(r_inc)}x vs full",
        ],
        row(
            "online 1 entity p99, clock 2026-10-29 (us)",
            "shipyard:online_clock",
            "single_p99_us",
            "feast:online",
            "us",
        ),
        row(
            "online 1 entity p50, clock 2026-10-29 (us)",
            "shipyard:online_clock",
            "single_p50_us",
            "feast:online",
            "us",
        ),
        row(
            "online 100 entities p99, clock 2026-10-29 (us)",
            "shipyard:online_clock",
            "batch_p99_us",
            "feast:online",
            "us",
        ),
        row(
            "online 1 entity p99, clock now (us)",
            "shipyard:online",
            "single_p99_us",
            "feast:online",
            "us",
        ),
        row(
            "HTTP POST /v1/features/online, 1 entity p50 (us; Feast: in-process)",
            "shipyard:http",
            "single_p50_us",
            "feast:online",
            "us",
        ),
        row(
            "HTTP, 1 entity p99 (us; Feast: in-process)",
            "shipyard:http",
            "single_p99_us",
            "feast:online",
            "us",
        ),
        row(
            "HTTP, 100 entities p99 (us; Feast: in-process)",
            "shipyard:http",
            "batch_p99_us",
            "feast:online",
            "us",
        ),
        [
            "30-day mean over 2M txns for 100k rows (s)",
            mmtxt(g("shipyard:agg", "historical_s"), *gm("shipyard:agg", "historical_s")) + " s",
            f"DuckDB range-join floor {num(g('floor:agg_range', 'historical_s'))} s",
            f"{num(ratio(g('shipyard:agg', 'historical_s'), g('floor:agg_range', 'historical_s')))}x the floor's time",
        ],
    ]
    sec = [
        BEGIN,
        "## Feature store (shipyard vs Feast)",
        "",
        f"Run {code.get('taken')}; {machine}; shared machine, 1-minute load average before the runs {load_txt}. "
        f"Code measured: {versions}. {reps} repeats, one process per measurement, repeats interleaved; "
        "medians (min-max). Harness, method and every number: `bench/features/README.md`, `bench/features/RESULTS.md`.",
        "",
        table(
            [
                "measure",
                "shipyard",
                "Feast 0.67 (file/Dask offline, SQLite online)",
                "Feast / shipyard",
            ],
            summary_rows,
        ),
        "",
        table(["goal", "measured", "met?"], goal_rows),
        "",
    ]
    xo = X.get("online_clock_vs_feast", {})
    sec.append(
        f"Correctness: {num(xf.get('common_rows'))} rows Feast returned, {xf.get('feature_cell_mismatches')} mismatching cells in "
        f"shipyard's output; Feast dropped {num(xf.get('rows_only_in_other'))} rows, which shipyard returns with nulls "
        f"({xf.get('missing_rows_customer_feats_null_in_other')} with null customer features, "
        f"{xf.get('missing_rows_merchant_feats_null_in_other')} with null merchant features). "
        f"Online (clock 2026-10-29): {xo.get('ok_cell_mismatches')} mismatches in {num(xo.get('ok_cells'))} in-TTL cells vs Feast. "
        f"Aggregation vs the DuckDB floor: {X.get('agg_shipyard_vs_floor_range', {}).get('mismatches_rel_1e-9')} mismatching cells of "
        f"{num(X.get('agg_shipyard_vs_floor_range', {}).get('cells_compared'))}."
    )
    sec.append(END)
    section = "\n".join(sec)

    # ---- full results
    F = [
        "# Feature-store benchmark: shipyard beside Feast and the floors",
        "",
        f"Run {code.get('taken')} with `bench/features/run.sh` (results of `run.py` in `{out}`).",
        "",
        f"Machine: {machine}. **Shared machine** (another agent editing and testing at the same time); "
        f"the 1-minute load average before each run is listed per row ({load_txt}). Wall times are upper bounds; CPU "
        "seconds (user+sys of the whole process from `/usr/bin/time -v`, import included) are less affected.",
        "",
        f"Code measured: {versions}. shipyard ran from a snapshot of `src/` taken at the start (`code.json`), so every "
        "repeat measured the same code.",
        "",
        f"{reps} repeats, each step a fresh process, repeats interleaved (the order of `run.py`'s STEPS); medians with min-max.",
        "Data: the shared harness's `gen_data.py` (seed 20261125): 2,000,000 transactions -> customer_daily 6,408,033 rows, "
        "merchant_daily 887,048 rows, entity_df 100,000 rows; TTL 2 days.",
        "",
    ]
    if failed:
        F += (
            ["**Failed runs:**", ""]
            + [f"* `{x['tag']}` rc={x['rc']}: `{x['stderr_tail'][-300:]!r}`" for x in failed]
            + [""]
        )

    F += ["## Goals", "", table(["goal", "measured", "met?"], goal_rows), ""]

    # training set
    def jrow(label, step, key="historical_s"):
        d = S.get(step)
        if not d:
            return [label] + ["-"] * 8
        return [
            label,
            mmtxt(d.get(key), *d.get(key + "_min_max", (None, None))),
            num(d.get("span_cpu_s")),
            num(d.get("result_rows")),
            num(d["wall_s"]),
            num(d["cpu_s"]),
            num(d["maxrss_mb"]),
            num(d.get("import_s")),
            loads(d),
        ]

    hdr = [
        "implementation",
        "join s (median, min-max)",
        "CPU s of the span",
        "rows returned",
        "process wall s",
        "process CPU s",
        "peak RSS MB",
        "import s",
        "load 1m before each run",
    ]
    F += [
        "## 1. Point-in-time training set (100k entity rows, 2 views, 5 features)",
        "",
        table(
            hdr,
            [
                jrow("**shipyard** `training_set(df, 5 refs)` -> Arrow", "shipyard:historical"),
                jrow("Feast `get_historical_features(df, 5 refs).to_df()`", "feast:historical"),
                jrow("floor: DuckDB ASOF LEFT JOIN x2 (reads the parquet)", "duckdb"),
                jrow("floor: polars join_asof x2 (reads the parquet)", "polars"),
            ],
        ),
        "",
        f"Ratios on medians: Feast / shipyard = **{num(r_hist)}x** (join s), "
        f"{num(ratio(g('feast:historical', 'cpu_s'), g('shipyard:historical', 'cpu_s')))}x (CPU s), "
        f"{num(ratio(g('feast:historical', 'wall_s'), g('shipyard:historical', 'wall_s')))}x (process wall s); "
        f"shipyard's peak RSS is {num(r_mem * 100 if r_mem else None)} % of Feast's. "
        f"shipyard / DuckDB floor = {num(ratio(H('shipyard:historical'), H('duckdb')))}x, shipyard / polars floor = "
        f"{num(ratio(H('shipyard:historical'), H('polars')))}x (join s). "
        f"shipyard's nulls per view: {g('shipyard:historical', 'nulls')}. Feast / shipyard per repeat (the two ran one after "
        f"the other): {paired('feast:historical', 'shipyard:historical', 'historical_s')}.",
        "",
        "Timed spans: shipyard and Feast get the entity frame in memory (pandas, the same 4 columns) and the time covers "
        "the call until the result is materialised (Arrow table / pandas frame); the floors' time includes reading all "
        "three parquet files. `import s` is the import of each tool before the timed span. `CPU s of the span` "
        "(`time.process_time()`, every thread) is recorded by shipyard's and the aggregation floors' scripts only; the "
        "harness's scripts record the process's CPU only.",
        "",
    ]
    xs = [(k, v) for k, v in X.items() if k.startswith("historical_")]
    if xs:
        F += [
            "### Correctness (shared `crosscheck.py`, aligned on label_id)",
            "",
            table(
                [
                    "reference vs shipyard",
                    "ref rows",
                    "shipyard rows",
                    "common rows",
                    "cells compared",
                    "mismatching cells",
                    "key mismatches",
                    "rows only in shipyard",
                    "of those: customer feats null / merchant feats null / all null",
                    "rows only in ref",
                ],
                [
                    [
                        k.replace("historical_", "").replace("_vs_shipyard", ""),
                        num(v["ref_rows"]),
                        num(v["other_rows"]),
                        num(v["common_rows"]),
                        num(v["feature_cells_compared"]),
                        v["feature_cell_mismatches"],
                        v["key_cell_mismatches"],
                        num(v["rows_only_in_other"]),
                        f"{v.get('missing_rows_customer_feats_null_in_other', '-')} / {v.get('missing_rows_merchant_feats_null_in_other', '-')} / "
                        f"{v.get('missing_rows_all_features_null_in_other', '-')}",
                        v["rows_only_in_ref"],
                    ]
                    for k, v in xs
                ],
            ),
            "",
        ]

    # materialize
    def mrow(label, step, key="materialize_s", note=""):
        d = S.get(step)
        if not d:
            return [label] + ["-"] * 8
        runs = d.get("runs")
        res = (
            "; ".join(
                f"{r['view']}: {r['mode']}, {num(r['rows_read'])} rows read, {num(r['entities_written'])} written"
                for r in runs
            )
            if runs
            else note
        )
        return [
            label,
            mmtxt(d.get(key), *d.get(key + "_min_max", (None, None))),
            num(d.get("span_cpu_s")),
            num(d["wall_s"]),
            num(d["cpu_s"]),
            num(d["maxrss_mb"]),
            res,
            loads(d),
            num(d.get("online_db_mb")),
        ]

    dig_full = (S.get("shipyard:materialize") or {}).get("digest")
    dig_inc = (S.get("shipyard:incremental") or {}).get("digest")
    M = [
        "## 4. Materialisation into SQLite (latest value per entity; 49,472 entities)",
        "",
        table(
            [
                "step",
                "s (median, min-max)",
                "CPU s of the span",
                "process wall s",
                "process CPU s",
                "peak RSS MB",
                "what",
                "load 1m before",
                "online DB MB",
            ],
            [
                mrow(
                    "**shipyard** full `materialize(end=2026-11-01)` into an empty store",
                    "shipyard:materialize",
                ),
                mrow(
                    "Feast `materialize(2026-04-30, 2026-11-01)` into an empty store",
                    "feast:materialize",
                    note="49,472 entities (Feast's own count not reported by the harness)",
                ),
                mrow(
                    "shipyard, untimed setup: full run over 99 % of customer_daily (folder source, part-1)",
                    "shipyard:incr_prepare",
                ),
                mrow(
                    "**shipyard incremental**: + part-2 (the newest 1 % of rows)",
                    "shipyard:incremental",
                ),
                mrow("shipyard incremental again, nothing new (fixed cost)", "shipyard:noop"),
                mrow(
                    "shipyard `materialize(full=True)` on the populated store (re-read everything)",
                    "shipyard:full_rerun",
                ),
            ],
        ),
        "",
        f"Feast / shipyard (full) = **{num(r_mat)}x**; CPU {num(ratio(g('feast:materialize', 'cpu_s'), g('shipyard:materialize', 'cpu_s')))}x. "
        f"Full / incremental = **{num(r_inc)}x**; full re-run / incremental = "
        f"{num(ratio(g('shipyard:full_rerun', 'materialize_s'), g('shipyard:incremental', 'materialize_s')))}x; "
        f"full / no-op = {num(ratio(g('shipyard:materialize', 'materialize_s'), g('shipyard:noop', 'materialize_s')))}x. "
        f"Per repeat: Feast / shipyard {paired('feast:materialize', 'shipyard:materialize', 'materialize_s')}; "
        f"full / incremental {paired('shipyard:materialize', 'shipyard:incremental', 'materialize_s')}.",
        "",
        f"Why: the newest 1 % of customer_daily's rows ({num((S.get('shipyard:incremental') or {}).get('new_file_rows'))} rows, "
        f"the newest daily snapshots) belong to {num(g('shipyard:incremental', 'entities_written'))} of the 44,472 "
        f"customers, so the incremental run still writes "
        f"{num(100 * (g('shipyard:incremental', 'entities_written') or 0) / 49472)} % of the entities the full run writes; and "
        f"a run with nothing new costs {num(g('shipyard:noop', 'materialize_s'))} s, which bounds full / incremental at "
        f"{num(ratio(g('shipyard:materialize', 'materialize_s'), g('shipyard:noop', 'materialize_s')))}x on this data.",
        "",
        f"The incremental run's end state equals the full run's: online tables identical row for row "
        f"(SHA-256 over every row): {'yes' if dig_full and dig_inc and dig_full == dig_inc else 'NO'} "
        f"({', '.join(v + ': ' + str(dig_inc[v]['rows']) + ' rows' for v in dig_inc) if dig_inc else '-'}).",
        "",
    ]

    # online
    def orow(label, step, be=None):
        d = S.get(step)
        if not d:
            return [label] + ["-"] * 6
        src = d[be] if be else d
        lo, hi = src.get("single_p50_us_min_max", (None, None))
        return [
            label,
            mmtxt(src.get("single_p50_us"), lo, hi),
            mmtxt(src.get("single_p99_us"), *src.get("single_p99_us_min_max", (None, None))),
            mmtxt(src.get("batch_p50_us"), *src.get("batch_p50_us_min_max", (None, None))),
            mmtxt(src.get("batch_p99_us"), *src.get("batch_p99_us_min_max", (None, None))),
            num(d.get("first_call_s")) if not be else "-",
            loads(d),
        ]

    def nn(name):
        v = X.get(name)
        return f"{num(v['nonnull'])} of {num(v['cells'])}" if v else "-"

    F += [
        "## 2. Online read in-process (1 entity = customer_id + merchant_id -> 5 features of 2 views)",
        "",
        "1 warm-up call, then 1000 single-entity calls and 200 calls of 100 entity rows (random rows of entity_df, seed 7: "
        "the same rows for every implementation); per-call `perf_counter_ns`; medians over the runs of each run's p50 / p99 (us).",
        "",
        table(
            [
                "implementation",
                "1 entity p50 us",
                "1 entity p99 us",
                "100 entities p50 us",
                "100 entities p99 us",
                "first call s",
                "load 1m before",
            ],
            [
                orow(
                    "**shipyard** `get_online`, clock 2026-10-29 (values inside the TTL)",
                    "shipyard:online_clock",
                ),
                orow(
                    "**shipyard** `get_online`, clock = now (every value stale -> None)",
                    "shipyard:online",
                ),
                orow("Feast `get_online_features(...).to_dict()`", "feast:online"),
                orow("floor: SQLite, 2 PK SELECTs (batch: 2 IN)", "floor:online", "sqlite"),
                orow("floor: Python dict, 2 gets", "floor:online", "dict"),
            ],
        ),
        "",
        "Non-null values returned (single calls, the saved sample of the first repeat, distinct entity pairs): "
        f"shipyard clock 2026-10-29 {nn('online_clock_nonnull')}; shipyard clock = now {nn('online_nonnull')}; "
        f"Feast {nn('feast_online_nonnull')}; SQLite floor {nn('floor_sqlite_online_nonnull')}. "
        f"In-process counts over all calls (median of runs): clock 2026-10-29: {num(g('shipyard:online_clock', 'single_nonnull_cells'))} of "
        f"{num(g('shipyard:online_clock', 'single_cells'))} single-call cells, {num(g('shipyard:online_clock', 'batch_nonnull_cells'))} of "
        f"{num(g('shipyard:online_clock', 'batch_cells'))} batch cells; clock = now: {num(g('shipyard:online', 'single_nonnull_cells'))} and "
        f"{num(g('shipyard:online', 'batch_nonnull_cells'))}. Status of the single calls (first run), clock 2026-10-29: "
        f"{(S.get('shipyard:online_clock') or {}).get('single_status')}; clock = now: {(S.get('shipyard:online') or {}).get('single_status')}.",
        "",
    ]
    oc = [(k, v) for k, v in X.items() if re.match(r"(online|online_clock|http)_vs_", k)]
    if oc:
        F += [
            "Online correctness: shipyard's cells whose view is `ok` vs the reference (must be equal); cells of a `stale` view "
            "(must be None):",
            "",
            table(
                [
                    "comparison",
                    "entities",
                    "cells",
                    "ok cells",
                    "ok cells mismatching",
                    "stale cells",
                    "stale cells not None",
                ],
                [
                    [
                        k,
                        num(v["entities_compared"]),
                        num(v["cells"]),
                        num(v["ok_cells"]),
                        v["ok_cell_mismatches"],
                        num(v["not_ok_cells"]),
                        v["not_ok_cells_not_null"],
                    ]
                    for k, v in oc
                ],
            ),
            "",
        ]

    d = S.get("shipyard:http") or {}
    F += [
        "## 3. Online read through HTTP (`shipyard server`, POST /v1/features/online)",
        "",
        "One `shipyard server` (1 worker, defaults: auth on, read key) per run on 127.0.0.1, started by the run and stopped "
        "by PID; httpx.Client with keep-alive, sequential; 1 + 20 warm-up requests, then 1000 single-entity requests and "
        "200 requests of 100 entities (the same rows as in-process). Latency = client-side request + JSON decode. The "
        "server's clock is the real one, so every value is stale (None) as in the clock = now row above.",
        "",
        table(
            [
                "implementation",
                "1 entity p50 us",
                "1 entity p99 us",
                "100 entities p50 us",
                "100 entities p99 us",
                "first call s",
                "load 1m before",
            ],
            [
                orow("**shipyard** HTTP POST /v1/features/online", "shipyard:http"),
                orow("Feast in-process `get_online_features` (for reference)", "feast:online"),
                orow("shipyard in-process, clock = now", "shipyard:online"),
            ],
        ),
        "",
        f"HTTP details (medians): {num(d.get('single_req_per_s'))} req/s sequential; server CPU {num(d.get('server_cpu_ms_per_single_req'))} ms per "
        f"single request, {num(d.get('server_cpu_ms_per_batch_req'))} ms per 100-entity request; server peak RSS "
        f"{num(d.get('server_maxrss_mb'))} MB; server ready after {num(d.get('server_ready_s'))} s; client process: wall "
        f"{num(d.get('wall_s'))} s, CPU {num(d.get('cpu_s'))} s, peak RSS {num(d.get('maxrss_mb'))} MB; non-null values "
        f"{num(d.get('single_nonnull_cells'))} of {num(d.get('single_cells'))}.",
        "",
    ]

    F += M

    # aggregation
    F += [
        "## 5. Aggregation: 30-day mean of `amount` over the 2M transactions, point in time, 100k entity rows",
        "",
        'shipyard: a view `customer_agg` with `aggregations=[Aggregation("amount", "mean", "30d")]` over '
        'transactions.parquet, `training_set(df, ["customer_agg:customer_avg_amount_30d"])` (entity frame in memory). '
        "Floors (`agg_floor.py`, DuckDB, reading both parquet files): `range` = range join on customer and "
        "(t - 30 d, t] + GROUP BY; `cumsum` = running sums per customer and distinct timestamp, two ASOF joins.",
        "",
        table(
            hdr,
            [
                jrow("**shipyard** `training_set` on the aggregation view", "shipyard:agg"),
                jrow("floor: DuckDB range join", "floor:agg_range"),
                jrow("floor: DuckDB running sums + ASOF", "floor:agg_cumsum"),
            ],
        ),
        "",
    ]
    xa = [(k, v) for k, v in X.items() if k.startswith("agg_")]
    if xa:
        F += [
            table(
                [
                    "comparison",
                    "rows a",
                    "rows b",
                    "cells compared",
                    "mismatches (rel 1e-9)",
                    "bit-identical",
                    "max abs diff",
                    "nulls a / b",
                ],
                [
                    [
                        k,
                        num(v["ship_rows"]),
                        num(v["floor_rows"]),
                        num(v["cells_compared"]),
                        v["mismatches_rel_1e-9"],
                        num(v["bit_identical"]),
                        f"{v['max_abs_diff']:.3g}",
                        f"{v['nulls_ship']} / {v['nulls_floor']}",
                    ]
                    for k, v in xa
                ],
            ),
            "",
        ]

    notes = os.path.join(HERE, "NOTES.md")
    if os.path.exists(notes):
        F += [Path(notes).read_text().rstrip(), ""]
    F += [
        "## Raw",
        "",
        f"`bench/features/results/summary.json` (medians of every numeric key per step), `crosscheck.json`, "
        f"`env.json`, `code.json`; per-run JSON in `{out}/raw/`.",
        "",
    ]
    return "\n".join(F), section


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "results", "features-shipyard"))
    ap.add_argument("--results-md", default=os.path.join(HERE, "RESULTS.md"))
    ap.add_argument("--bench-results", default=os.path.join(MAIN, "bench", "RESULTS.md"))
    ap.add_argument("--no-section", action="store_true", help="do not touch bench/RESULTS.md")
    a = ap.parse_args()
    g, failed, _ = load_runs(a.out)
    S = summarize(g)
    X = crosschecks(a.out)
    env = json.loads(Path(os.path.join(a.out, "env.json")).read_text())
    code = json.loads(Path(os.path.join(a.out, "code.json")).read_text())
    full, section = build(S, X, env, code, failed, a.out, g)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    for name, obj in (
        ("summary.json", S),
        ("crosscheck.json", X),
        ("env.json", env),
        ("code.json", code),
    ):
        with open(os.path.join(HERE, "results", name), "w") as f:
            json.dump(obj, f, indent=1, default=str)
    with open(a.results_md, "w") as f:
        f.write(full)
    if not a.no_section:
        text = Path(a.bench_results).read_text()
        if BEGIN in text and END in text:
            text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END) :]
        else:
            text = text.rstrip("\n") + "\n\n" + section + "\n"
        with open(a.bench_results, "w") as f:
            f.write(text)
    print(section)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""shipyard side of the feature-store benchmark: the same phases, data, definitions and JSON
keys as the shared harness's bench_feast.py, one phase per process, JSON out (--out).

  python bench_shipyard.py setup         --data D --home H            # defs + apply (+ an online store for reads)
  python bench_shipyard.py historical    --data D --home H [--save out.parquet]
  python bench_shipyard.py materialize   --data D --home M            # fresh home, full run, empty SQLite
  python bench_shipyard.py incr_prepare  --data D --home I            # fresh home, 99 % of customer_daily, full run
  python bench_shipyard.py incremental   --data D --home I            # + the last 1 %, incremental run
  python bench_shipyard.py noop          --data D --home I            # again, nothing new (fixed cost)
  python bench_shipyard.py full_rerun    --data D --home I            # materialize(full=True) on the same store
  python bench_shipyard.py online        --data D --home H [--clock 2026-10-29] [--save sample.json]
  python bench_shipyard.py http          --data D --home H [--port 18477] [--save sample.json]
  python bench_shipyard.py agg           --data D --home H [--save out.parquet]

Run with the project's interpreter (/work/main/.venv/bin/python); `run.py` puts a snapshot of
src/ first on PYTHONPATH so that every repeat measures the same code.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

T0 = time.perf_counter()
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

ROOT = os.environ.get("ROOT", "/tmp/peers")
FEATURES = [
    "customer_stats:customer_avg_transaction_amount_30d",
    "customer_stats:customer_txn_count_7d",
    "customer_stats:customer_total_amount_7d",
    "merchant_stats:merchant_fraud_rate_7d",
    "merchant_stats:merchant_txn_count_7d",
]
FEAT_NAMES = [f.split(":")[1] for f in FEATURES]
AGG_FEATURE = "customer_avg_amount_30d"
MATERIALIZE_END = datetime(2026, 11, 1, tzinfo=UTC)
SNAPSHOT_VIEWS = ["customer_stats", "merchant_stats"]

DEFS = """
from shipyard.features import Aggregation, Entity, Feature, FeatureView, FileSource

DATA = {data!r}
CUSTOMER_SOURCE = {customer_source!r}
customer = Entity("customer", join_keys=["customer_id"])
merchant = Entity("merchant", join_keys=["merchant_id"])
customer_stats = FeatureView(
    name="customer_stats", entities=[customer], source=FileSource(CUSTOMER_SOURCE),
    features=[Feature("customer_avg_transaction_amount_30d", "float"),
              Feature("customer_txn_count_7d", "int"),
              Feature("customer_total_amount_7d", "float")],
    ttl="2d")
merchant_stats = FeatureView(
    name="merchant_stats", entities=[merchant], source=FileSource(DATA + "/merchant_daily.parquet"),
    features=[Feature("merchant_fraud_rate_7d", "float"), Feature("merchant_txn_count_7d", "int")],
    ttl="2d")
"""
AGG_DEFS = """
customer_agg = FeatureView(
    name="customer_agg", entities=[customer], source=FileSource(DATA + "/transactions.parquet"),
    aggregations=[Aggregation("amount", "mean", "30d", name={agg!r})])
"""


def pct(xs, q):
    return float(np.percentile(np.asarray(xs), q))


def open_store(home: Path, clock=None):
    from shipyard.core import Settings
    from shipyard.features import FeatureStore
    from shipyard.registry import Registry

    settings = Settings(home=home)
    registry = Registry.from_settings(settings)
    store = FeatureStore(registry, settings, clock=clock)
    return registry, store


def write_defs(home: Path, data: str, customer_source: str, with_agg: bool) -> Path:
    text = DEFS.format(data=data, customer_source=customer_source)
    if with_agg:
        text += AGG_DEFS.format(agg=AGG_FEATURE)
    path = home / "defs.py"
    path.write_text(text)
    return path


def apply(home: Path, defs: Path, check_sources: bool, res: dict) -> None:
    from shipyard.features import load_definitions

    registry, store = open_store(home)
    with registry, store:
        t = time.perf_counter()
        changes = store.apply(load_definitions(defs), check_sources=check_sources)
        res["apply_s"] = time.perf_counter() - t
        res["apply_checked_sources"] = check_sources
        res["applied"] = [(c["view"], c["action"], c["version"]) for c in changes]


def entity_frame(data: str) -> pd.DataFrame:
    # the same frame bench_feast.py hands to get_historical_features (in memory, pandas)
    ent = pd.read_parquet(os.path.join(data, "entity_df.parquet"))
    return ent[["label_id", "customer_id", "merchant_id", "event_timestamp"]]


def online_table_digest(home: Path, view: str) -> dict:
    """Rows and a SHA-256 of every row of a view's online table (sorted by key)."""
    db = sqlite3.connect(home / "online.sqlite")
    try:
        name = db.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name LIKE ? ORDER BY name DESC",
            (f"fv_{view}_%",),
        ).fetchone()[0]
        rows = db.execute(f'SELECT * FROM "{name}" ORDER BY 1').fetchall()
    finally:
        db.close()
    h = hashlib.sha256()
    for r in rows:
        h.update(repr(r).encode())
    return {"table": name, "rows": len(rows), "sha256": h.hexdigest()}


def materialize(store, res: dict, **kw) -> None:
    t, c = time.perf_counter(), time.process_time()
    runs = store.materialize(SNAPSHOT_VIEWS, end=MATERIALIZE_END, **kw)
    res["materialize_s"] = time.perf_counter() - t
    res["span_cpu_s"] = time.process_time() - c
    res["runs"] = [
        {k: r[k] for k in ("view", "mode", "rows_read", "entities_written")} for r in runs
    ]
    res["rows_read"] = sum(r["rows_read"] for r in runs)
    res["entities_written"] = sum(r["entities_written"] for r in runs)
    res["modes"] = sorted({r["mode"] for r in runs})


# -- phases ---------------------------------------------------------------------------------------


def phase_setup(a, res):
    home = Path(a.home)
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    defs = write_defs(home, a.data, a.data + "/customer_daily.parquet", with_agg=True)
    apply(home, defs, True, res)  # with the source checks (reads every source once)
    registry, store = open_store(home)
    with registry, store:
        materialize(store, res)  # the online store the read phases use
    res["online_db_mb"] = os.path.getsize(home / "online.sqlite") / 2**20


def phase_historical(a, res):
    ent = entity_frame(a.data)
    registry, store = open_store(Path(a.home))
    with registry, store:
        t, c = time.perf_counter(), time.process_time()
        ts = store.training_set(ent, FEATURES)
        res["historical_s"] = time.perf_counter() - t
        res["span_cpu_s"] = time.process_time() - c  # every thread of the process
    res["in_api_s"] = ts.seconds
    res["entity_rows"] = len(ent)
    res["result_rows"] = ts.table.num_rows
    res["nulls"] = ts.nulls
    res["columns"] = ts.table.column_names
    res["null_cells"] = {c: ts.table.column(c).null_count for c in FEAT_NAMES}
    if a.save:
        import pyarrow.parquet as pq

        pq.write_table(ts.table, a.save)


def phase_agg(a, res):
    ent = entity_frame(a.data)[["label_id", "customer_id", "event_timestamp"]]
    registry, store = open_store(Path(a.home))
    with registry, store:
        t, c = time.perf_counter(), time.process_time()
        ts = store.training_set(ent, [f"customer_agg:{AGG_FEATURE}"])
        res["historical_s"] = time.perf_counter() - t
        res["span_cpu_s"] = time.process_time() - c
    res["entity_rows"] = len(ent)
    res["result_rows"] = ts.table.num_rows
    res["nulls"] = ts.nulls
    if a.save:
        import pyarrow.parquet as pq

        pq.write_table(ts.table.select(["label_id", AGG_FEATURE]), a.save)


def phase_materialize(a, res):
    home = Path(a.home)
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    defs = write_defs(home, a.data, a.data + "/customer_daily.parquet", with_agg=False)
    apply(home, defs, False, res)  # not timed, as Feast's apply before its materialize
    registry, store = open_store(home)
    with registry, store:
        materialize(store, res)
    res["online_db_mb"] = os.path.getsize(home / "online.sqlite") / 2**20
    res["digest"] = {v: online_table_digest(home, v) for v in SNAPSHOT_VIEWS}


def split_paths(a):
    split = Path(a.data) / "customer_daily_split"
    return split / "part-1.parquet", split / "part-2.parquet", Path(a.home) / "customer_daily"


def phase_incr_prepare(a, res):
    part1, _part2, folder = split_paths(a)
    if not part1.exists():
        raise SystemExit(f"{part1} missing: run run.sh (it splits customer_daily once)")
    home = Path(a.home)
    shutil.rmtree(home, ignore_errors=True)
    folder.mkdir(parents=True)
    shutil.copyfile(part1, folder / "part-1.parquet")
    defs = write_defs(home, a.data, str(folder), with_agg=False)
    apply(home, defs, False, res)
    registry, store = open_store(home)
    with registry, store:
        materialize(store, res)  # full run over 99 % of customer_daily (+ merchant_daily)


def phase_incremental(a, res):
    _part1, part2, folder = split_paths(a)
    home = Path(a.home)
    target = folder / "part-2.parquet"
    if target.exists():
        raise SystemExit("part-2 already there: run incr_prepare first")
    shutil.copyfile(part2, target)  # the new 1 % arrives (not timed)
    res["new_file_rows"] = int(pd.read_parquet(target, columns=["customer_id"]).shape[0])
    registry, store = open_store(home)
    with registry, store:
        materialize(store, res)
    res["digest"] = {v: online_table_digest(home, v) for v in SNAPSHOT_VIEWS}


def phase_noop(a, res):
    """materialize again with nothing new: the fixed cost of an incremental run."""
    registry, store = open_store(Path(a.home))
    with registry, store:
        materialize(store, res)


def phase_full_rerun(a, res):
    registry, store = open_store(Path(a.home))
    with registry, store:
        materialize(store, res, full=True)


def entity_pairs(data):
    ent = pd.read_parquet(os.path.join(data, "entity_df.parquet"))
    return ent[["customer_id", "merchant_id"]].to_numpy()


def phase_online(a, res):
    clock = None
    if a.clock:
        fixed = datetime.fromisoformat(a.clock).replace(tzinfo=UTC)
        clock = lambda: fixed  # noqa: E731
        res["clock"] = fixed.isoformat()
    rng = np.random.default_rng(a.seed)  # the same rows as bench_feast.py's online phase
    pairs = entity_pairs(a.data)
    registry, store = open_store(Path(a.home), clock)
    with registry, store:
        t = time.perf_counter()
        store.get_online(
            [{"customer_id": int(pairs[0, 0]), "merchant_id": int(pairs[0, 1])}], FEATURES
        )
        res["first_call_s"] = time.perf_counter() - t
        lat, sample, nonnull, status = [], {}, 0, {}
        for i in rng.integers(0, len(pairs), a.calls):
            row = [{"customer_id": int(pairs[i, 0]), "merchant_id": int(pairs[i, 1])}]
            t = time.perf_counter_ns()
            r = store.get_online(row, FEATURES)
            lat.append((time.perf_counter_ns() - t) / 1e3)
            v = r.values[0]
            nonnull += sum(v[f] is not None for f in FEAT_NAMES)
            for view, s in r.status[0].items():
                status[f"{view}:{s}"] = status.get(f"{view}:{s}", 0) + 1
            sample[f"{pairs[i, 0]}:{pairs[i, 1]}"] = {**v, "__status": r.status[0]}
        blat, bnonnull = [], 0
        for _ in range(a.batch_calls):
            j = rng.integers(0, len(pairs), a.batch)
            rows = [{"customer_id": int(pairs[i, 0]), "merchant_id": int(pairs[i, 1])} for i in j]
            t = time.perf_counter_ns()
            r = store.get_online(rows, FEATURES)
            blat.append((time.perf_counter_ns() - t) / 1e3)
            bnonnull += sum(v[f] is not None for v in r.values for f in FEAT_NAMES)
    res.update(
        {
            "single_calls": a.calls,
            "single_p50_us": pct(lat, 50),
            "single_p99_us": pct(lat, 99),
            "single_mean_us": float(np.mean(lat)),
            "single_max_us": float(np.max(lat)),
            "batch_size": a.batch,
            "batch_calls": a.batch_calls,
            "batch_p50_us": pct(blat, 50),
            "batch_p99_us": pct(blat, 99),
            "single_cells": a.calls * len(FEAT_NAMES),
            "single_nonnull_cells": nonnull,
            "batch_cells": a.batch_calls * a.batch * len(FEAT_NAMES),
            "batch_nonnull_cells": bnonnull,
            "single_status": status,
        }
    )
    if a.save:
        with open(a.save, "w") as f:
            json.dump(sample, f, default=str)


def free_port(preferred: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]


def proc_stats(pid: int) -> dict:
    """CPU seconds (user+sys, the process and its reaped children) and peak RSS of a live pid."""
    tick = os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    return {"cpu_s": (utime + stime + cutime + cstime) / tick, "maxrss_mb": hwm / 1024}


def phase_http(a, res):
    import httpx

    home = Path(a.home)
    env = dict(os.environ, SHIPYARD_HOME=str(home))
    shipyard = [sys.executable, "-m", "shipyard"]
    key = subprocess.run(
        [*shipyard, "keys", "create", "--scope", "read", "--name", "bench-features", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if key.returncode != 0:
        raise SystemExit(f"keys create failed: {key.stderr[-2000:]}")
    token = json.loads(key.stdout)["token"]
    port = free_port(a.port)
    log = open(home / f"server_{port}.log", "w")  # noqa: SIM115  (the server writes to it until it stops)
    t = time.perf_counter()
    server = subprocess.Popen(
        [*shipyard, "server", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    res["server_pid"] = server.pid
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {token}"}
    rng = np.random.default_rng(a.seed)
    pairs = entity_pairs(a.data)
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=30.0) as client:
            deadline = time.monotonic() + 120
            while True:
                if server.poll() is not None:
                    raise SystemExit(f"server exited rc={server.returncode}; see {log.name}")
                try:
                    if client.get("/metrics").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("server not ready in 120 s")
                time.sleep(0.1)
            res["server_ready_s"] = time.perf_counter() - t
            before = proc_stats(server.pid)

            def post(rows):
                r = client.post(
                    "/v1/features/online", json={"features": FEATURES, "entities": rows}
                )
                if r.status_code != 200:
                    raise SystemExit(f"HTTP {r.status_code}: {r.text[:500]}")
                return r.json()

            t = time.perf_counter()
            post([{"customer_id": int(pairs[0, 0]), "merchant_id": int(pairs[0, 1])}])
            res["first_call_s"] = time.perf_counter() - t
            for _ in range(a.warmup):
                post([{"customer_id": int(pairs[0, 0]), "merchant_id": int(pairs[0, 1])}])
            lat, sample, nonnull, status = [], {}, 0, {}
            t_loop = time.perf_counter()
            for i in rng.integers(0, len(pairs), a.calls):
                row = [{"customer_id": int(pairs[i, 0]), "merchant_id": int(pairs[i, 1])}]
                t = time.perf_counter_ns()
                body = post(row)
                lat.append((time.perf_counter_ns() - t) / 1e3)
                got = body["results"][0]
                nonnull += sum(got["values"].get(f) is not None for f in FEAT_NAMES)
                for view, s in got["status"].items():
                    status[f"{view}:{s}"] = status.get(f"{view}:{s}", 0) + 1
                sample[f"{pairs[i, 0]}:{pairs[i, 1]}"] = {
                    **got["values"],
                    "__status": got["status"],
                }
            single_wall = time.perf_counter() - t_loop
            mid = proc_stats(server.pid)
            blat, bnonnull = [], 0
            for _ in range(a.batch_calls):
                j = rng.integers(0, len(pairs), a.batch)
                rows = [
                    {"customer_id": int(pairs[i, 0]), "merchant_id": int(pairs[i, 1])} for i in j
                ]
                t = time.perf_counter_ns()
                body = post(rows)
                blat.append((time.perf_counter_ns() - t) / 1e3)
                bnonnull += sum(
                    r["values"].get(f) is not None for r in body["results"] for f in FEAT_NAMES
                )
            after = proc_stats(server.pid)
    finally:
        if server.poll() is None:
            os.kill(server.pid, signal.SIGTERM)  # the server we started, by pid
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(server.pid, signal.SIGKILL)
                server.wait(timeout=10)
        log.close()
    res.update(
        {
            "port": port,
            "single_calls": a.calls,
            "single_p50_us": pct(lat, 50),
            "single_p99_us": pct(lat, 99),
            "single_mean_us": float(np.mean(lat)),
            "single_max_us": float(np.max(lat)),
            "single_req_per_s": a.calls / single_wall,
            "batch_size": a.batch,
            "batch_calls": a.batch_calls,
            "batch_p50_us": pct(blat, 50),
            "batch_p99_us": pct(blat, 99),
            "single_cells": a.calls * len(FEAT_NAMES),
            "single_nonnull_cells": nonnull,
            "batch_cells": a.batch_calls * a.batch * len(FEAT_NAMES),
            "batch_nonnull_cells": bnonnull,
            "single_status": status,
            "server_cpu_ms_per_single_req": (mid["cpu_s"] - before["cpu_s"]) * 1e3 / a.calls,
            "server_cpu_ms_per_batch_req": (after["cpu_s"] - mid["cpu_s"]) * 1e3 / a.batch_calls,
            "server_cpu_s": after["cpu_s"],
            "server_maxrss_mb": after["maxrss_mb"],
        }
    )
    if a.save:
        with open(a.save, "w") as f:
            json.dump(sample, f, default=str)


PHASES = {
    "setup": phase_setup,
    "historical": phase_historical,
    "agg": phase_agg,
    "materialize": phase_materialize,
    "incr_prepare": phase_incr_prepare,
    "incremental": phase_incremental,
    "noop": phase_noop,
    "full_rerun": phase_full_rerun,
    "online": phase_online,
    "http": phase_http,
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("phase", choices=sorted(PHASES))
    ap.add_argument("--data", default=os.path.join(ROOT, "data", "features"))
    ap.add_argument("--home", default=os.path.join(ROOT, "shipyard_home"))
    ap.add_argument("--out", default=None)
    ap.add_argument("--save", default=None)
    ap.add_argument(
        "--clock", default=None, help="online: fixed 'now' (ISO date, UTC) for the TTL check"
    )
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--batch-calls", type=int, default=200)
    ap.add_argument(
        "--warmup", type=int, default=20, help="http: extra warm-up requests after the first"
    )
    ap.add_argument("--port", type=int, default=18477)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    a.data, a.home = os.path.abspath(a.data), os.path.abspath(a.home)
    import shipyard
    import shipyard.features

    res = {
        "tool": "shipyard",
        "phase": a.phase,
        "import_s": time.perf_counter() - T0,
        "shipyard_file": shipyard.__file__,
    }
    PHASES[a.phase](a, res)
    res["total_in_process_s"] = time.perf_counter() - T0
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1, default=str)
    print(json.dumps(res, default=str))


if __name__ == "__main__":
    main()

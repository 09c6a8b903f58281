#!/usr/bin/env python3
"""The feature-store matrix: shipyard beside Feast and the floors, each step a fresh process
under /usr/bin/time -v, repeats interleaved. Reuses the shared harness
(../../../shared/bench/features): its `run()` (time -v, load average before, raw JSON per
run), `cmd_for()` (the Feast and floor command lines) and so bench_feast.py / bench_floor.py
as they are; the shipyard steps call bench_shipyard.py and agg_floor.py from here.

  python run.py [--repeats 3] [--timeout 600] [--only STEP ...] [--out DIR]

ROOT (env, default /tmp/peers) holds venv-feast, data/features, feast_repo and results.
Raw JSON: $ROOT/results/features-shipyard/raw/<step>_r<N>.json; the first repeat also saves
the join outputs and online samples there for report.py.
Interpreters: PY_FEAST (default $ROOT/venv-feast/bin/python) for Feast and the floors,
PY_SHIPYARD (default /work/main/.venv/bin/python) for shipyard, with a snapshot of
/work/main/src first on PYTHONPATH (taken once at the start, so every repeat measures the
same code even while src/ changes; its fingerprint is in code.json).
"""

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
MAIN = os.path.abspath(os.path.join(HERE, "..", ".."))
SHARED = os.environ.get("SHARED_FEATURES", os.path.join(MAIN, "..", "shared", "bench", "features"))
ROOT = os.environ.setdefault("ROOT", "/tmp/peers")
PY_FEAST = os.environ.setdefault("PY_FEAST", os.path.join(ROOT, "venv-feast", "bin", "python"))
PY_SHIPYARD = os.environ.get("PY_SHIPYARD", os.path.join(MAIN, ".venv", "bin", "python"))

spec = importlib.util.spec_from_file_location(
    "run_features", os.path.join(SHARED, "run_features.py")
)
rf = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rf)  # the shared harness's runner: run(), cmd_for(), parse_time_v()

STEPS = [
    "feast:historical",
    "shipyard:historical",
    "duckdb",
    "polars",
    "feast:materialize",
    "shipyard:materialize",
    "shipyard:incr_prepare",
    "shipyard:incremental",
    "shipyard:noop",
    "shipyard:full_rerun",
    "feast:online",
    "shipyard:online",
    "shipyard:online_clock",
    "floor:online",
    "shipyard:http",
    "shipyard:agg",
    "floor:agg_range",
    "floor:agg_cumsum",
]
CLOCK = "2026-10-29"  # just after the newest snapshot (2026-10-28 00:00 UTC)


def code_snapshot(dest):
    """Copy /work/main/src/shipyard to dest/src and describe it."""
    src = os.path.join(MAIN, "src")
    snap = os.path.join(dest, "src")
    shutil.rmtree(snap, ignore_errors=True)
    shutil.copytree(
        os.path.join(src, "shipyard"),
        os.path.join(snap, "shipyard"),
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    h = hashlib.sha256()
    for d, dirs, files in sorted(os.walk(os.path.join(snap, "shipyard"))):
        dirs.sort()
        for f in sorted(files):
            p = os.path.join(d, f)
            h.update(os.path.relpath(p, snap).encode())
            h.update(Path(p).read_bytes())

    def git(*a):
        return subprocess.run(
            ["git", "-C", MAIN, *a], capture_output=True, text=True
        ).stdout.strip()

    info = {
        "git_describe": git("describe", "--dirty", "--always"),
        "head": git("rev-parse", "HEAD"),
        "src_sha256": h.hexdigest(),
        "snapshot": snap,
        "dirty_src": git("status", "--porcelain", "--", "src"),
        "dirty_paths": git("status", "--porcelain"),
        "taken": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    with open(os.path.join(dest, "code.json"), "w") as f:
        json.dump(info, f, indent=1)
    with open(os.path.join(dest, "src.diff"), "w") as f:
        f.write(git("diff", "HEAD", "--", "src"))
    return info


def environment(dest):
    """Machine, OS and package versions of both interpreters, at the start of the run."""

    def out(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout.strip()
        except Exception as ex:
            return f"error: {ex}"

    probe = (
        "import json, sys, sqlite3, importlib.metadata as m\n"
        "v = {'python': sys.version.split()[0], 'sqlite': sqlite3.sqlite_version}\n"
        "for p in sys.argv[1:]:\n"
        "    try: v[p] = m.version(p)\n"
        "    except Exception: pass\n"
        "print(json.dumps(v))"
    )
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        "?",
    )
    mem = next(
        (
            ln.split()[1]
            for ln in Path("/proc/meminfo").read_text().splitlines()
            if ln.startswith("MemTotal")
        ),
        "0",
    )
    osr = dict(
        ln.strip().split("=", 1)
        for ln in Path("/etc/os-release").read_text().splitlines()
        if "=" in ln
    )
    env = {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "mem_gib": round(int(mem) / 2**20, 1),
        "os": osr.get("PRETTY_NAME", "?").strip('"'),
        "kernel": os.uname().release,
        "feast_venv": json.loads(
            out(
                [
                    PY_FEAST,
                    "-c",
                    probe,
                    "feast",
                    "dask",
                    "pandas",
                    "numpy",
                    "pyarrow",
                    "duckdb",
                    "polars",
                    "redis",
                ]
            )
            or "{}"
        ),
        "shipyard_venv": json.loads(
            out(
                [
                    PY_SHIPYARD,
                    "-c",
                    probe,
                    "shipyard",
                    "duckdb",
                    "pyarrow",
                    "pandas",
                    "numpy",
                    "httpx",
                    "fastapi",
                    "uvicorn",
                    "starlette",
                    "pydantic",
                ]
            )
            or "{}"
        ),
        "loadavg_at_start": os.getloadavg(),
    }
    with open(os.path.join(dest, "env.json"), "w") as f:
        json.dump(env, f, indent=1)
    return env


def split_customer_daily(data):
    """part-1: the oldest 99 % of customer_daily's rows by event_timestamp; part-2: the newest 1 %."""
    out = os.path.join(data, "customer_daily_split")
    if os.path.exists(os.path.join(out, "part-2.parquet")):
        return
    code = f"""
import os, pyarrow.parquet as pq, pyarrow.compute as pc
t = pq.read_table({os.path.join(data, "customer_daily.parquet")!r})
t = t.take(pc.sort_indices(t, sort_keys=[("event_timestamp", "ascending"), ("customer_id", "ascending")]))
cut = t.num_rows - t.num_rows // 100
os.makedirs({out!r}, exist_ok=True)
pq.write_table(t.slice(0, cut), {os.path.join(out, "part-1.parquet")!r})
pq.write_table(t.slice(cut), {os.path.join(out, "part-2.parquet")!r})
print("split", cut, t.num_rows - cut, t.column("event_timestamp")[cut])
"""
    subprocess.run([PY_FEAST, "-c", code], check=True)


def cmd_for(step, a, rep):
    save = rep == 1
    saved = lambda name: ["--save", os.path.join(a.out, name)] if save else []  # noqa: E731
    if not step.startswith(("shipyard:", "floor:agg")):
        return rf.cmd_for(
            step, a, rep, None
        )  # Feast and the shared floors, as the harness runs them
    if step.startswith("floor:agg"):
        method = step.split("_")[1]
        return [
            PY_FEAST,
            os.path.join(HERE, "agg_floor.py"),
            method,
            "--data",
            a.data,
            *saved(f"floor_agg_{method}.parquet"),
        ]
    phase = step.split(":")[1]
    env = ["env", f"PYTHONPATH={a.snapshot}", f"ROOT={ROOT}"]
    base = [*env, PY_SHIPYARD, os.path.join(HERE, "bench_shipyard.py")]
    read_home = os.path.join(ROOT, "shipyard_home")
    if phase == "historical":
        return [
            *base,
            "historical",
            "--data",
            a.data,
            "--home",
            read_home,
            *saved("shipyard_historical.parquet"),
        ]
    if phase == "agg":
        return [*base, "agg", "--data", a.data, "--home", read_home, *saved("shipyard_agg.parquet")]
    if phase == "materialize":
        return [
            *base,
            "materialize",
            "--data",
            a.data,
            "--home",
            os.path.join(ROOT, "shipyard_mat"),
        ]
    if phase in ("incr_prepare", "incremental", "noop", "full_rerun"):
        return [*base, phase, "--data", a.data, "--home", os.path.join(ROOT, "shipyard_incr")]
    if phase == "online":
        return [
            *base,
            "online",
            "--data",
            a.data,
            "--home",
            read_home,
            *saved("shipyard_online_sample.json"),
        ]
    if phase == "online_clock":
        return [
            *base,
            "online",
            "--clock",
            CLOCK,
            "--data",
            a.data,
            "--home",
            read_home,
            *saved("shipyard_online_clock_sample.json"),
        ]
    if phase == "http":
        return [
            *base,
            "http",
            "--data",
            a.data,
            "--home",
            read_home,
            *saved("shipyard_http_sample.json"),
        ]
    raise SystemExit(step)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=f"{ROOT}/data/features")
    ap.add_argument("--repo", default=f"{ROOT}/feast_repo")
    ap.add_argument("--out", default=f"{ROOT}/results/features-shipyard")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--timeout", type=int, default=600)
    ap.add_argument("--keep", action="store_true", help="keep earlier raw results in --out")
    a = ap.parse_args()
    a.no_redis = (
        True  # the shared floor:online runs dict + SQLite (Redis is not part of this comparison)
    )
    raw = os.path.join(a.out, "raw")
    if not a.keep:
        shutil.rmtree(a.out, ignore_errors=True)
    os.makedirs(raw, exist_ok=True)
    code = code_snapshot(a.out)
    a.snapshot = code["snapshot"]
    print(
        f"code measured: {code['git_describe']} src sha256 {code['src_sha256'][:16]} "
        f"(dirty src files: {len(code['dirty_src'].splitlines())})",
        flush=True,
    )
    environment(a.out)
    split_customer_daily(a.data)
    steps = a.only or STEPS
    tag = lambda s: s.replace(":", "_")  # noqa: E731
    # once, untimed: Feast's repo (feast apply) and shipyard's read home (apply + materialize)
    if not os.path.exists(os.path.join(a.repo, "feature_store.yaml")):
        rf.run(
            [
                PY_FEAST,
                os.path.join(SHARED, "bench_feast.py"),
                "setup",
                "--repo",
                a.repo,
                "--data",
                a.data,
            ],
            "feast_setup",
            a,
            raw,
        )
    env = ["env", f"PYTHONPATH={a.snapshot}", f"ROOT={ROOT}"]
    rf.run(
        [
            *env,
            PY_SHIPYARD,
            os.path.join(HERE, "bench_shipyard.py"),
            "setup",
            "--data",
            a.data,
            "--home",
            os.path.join(ROOT, "shipyard_home"),
        ],
        "shipyard_setup",
        a,
        raw,
    )
    for rep in range(1, a.repeats + 1):
        for s in steps:
            extra = {
                "step": s,
                "repeat": rep,
                "code": code["git_describe"],
                "src_sha256": code["src_sha256"],
            }
            rf.run(cmd_for(s, a, rep), f"{tag(s)}_r{rep}", a, raw, extra)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The batch benchmark's matrix: each target scores the same Parquet input with the same model
in a fresh process, one at a time, measured from outside.

    python run.py [--rows N] [--only TARGET ...] [--models lr lgbm] [--timeout S] [--keep-outputs]

Targets, in the order they run for each model (see README.md):
    pyarrow          the joblib model in a plain pyarrow read -> predict_proba -> write loop
    shipyard         `shipyard batch NAME:1 -i IN -o OUT --json`, two steps: `shipyard:nolog`
                     (--no-log) and `shipyard:log` (predictions logged, the default)
    floor            the same registered predictor over the input's Arrow batches, in memory
    spark            pyspark local[2], mapInPandas
    ray              Ray Data local, map_batches with an actor class
then `check.py` compares every output with the pyarrow loop's.

Every step runs under `/usr/bin/time -v` in its own session; this process is a child
subreaper, so whatever a step leaves behind (Spark's JVM, Ray's raylet and workers) is
reparented here, counted and stopped (by PID) when the step ends. Measured per step:
* wall: the step's own timed span (JSON it writes) and the whole process's (time -v);
* CPU: user + sys of every process of the step (this process's RUSAGE_CHILDREN before and
  after, once all of them are reaped) and time -v's (the main process and what it waited for);
* memory: time -v's maximum RSS (the largest single process) and the sums over every process
  of the step of RSS (sampled every --interval s) and of PSS (every --pss-every samples: it is
  dearer to read; PSS divides shared pages, such as Ray's object store, between the processes
  that map them).

ROOT (env, default /tmp/peers-batch): data/ (gen_data.py), venv-peers/, work/n<N>/ (the
shipyard home and outputs, deleted at the end unless --keep-outputs; ref/ keeps the pyarrow
loop's outputs, the reference for a later --only run's check), results/n<N>/ (raw
JSON per step, logs, code snapshot). The merged results go to bench/batch/results/n<N>.json
(a --only run replaces only its steps there). shipyard runs from a snapshot of
/work/main/src taken at the start (PYTHONPATH), so every step measures the same code.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
MAIN = os.path.abspath(os.path.join(HERE, "..", ".."))
ROOT = os.environ.get("ROOT", "/tmp/peers-batch")
PY_SHIPYARD = os.environ.get("PY_SHIPYARD", os.path.join(MAIN, ".venv", "bin", "python"))
PY_PEERS = os.environ.get("PY_PEERS", os.path.join(ROOT, "venv-peers", "bin", "python"))
TARGETS = ["pyarrow", "shipyard", "floor", "spark", "ray"]
MODELS = ["lr", "lgbm"]
PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 2**20


# ---------------------------------------------------------------- processes


def become_subreaper() -> None:
    """Orphans of our steps (daemonised JVMs, raylets) are reparented to us, not to init."""
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_CHILD_SUBREAPER = 36
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("warning: could not become a child subreaper", file=sys.stderr)


def descendants(root: int) -> list[int]:
    """Every process below `root` (from /proc), not root itself."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def memory(pid: int, pss: bool = True) -> tuple[int, int]:
    """(RSS, PSS) in bytes; (0, 0) for a process that is gone or a zombie. PSS (0 unless asked)
    costs the kernel a walk of the process's page tables: milliseconds for a large process."""
    try:
        rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
        if not pss or not rss:
            return rss, 0
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return rss, int(line.split()[1]) * 1024
        return rss, 0
    except (OSError, ValueError, IndexError):
        return 0, 0


def reap(exclude: int | None = None) -> None:
    """Collect our exited children (orphans reparented here), except `exclude`."""
    me = os.getpid()
    for pid in descendants(me):
        if pid == exclude:
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == me:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


def stop_all(grace: float = 10.0) -> list[int]:
    """Wait up to `grace` s for what the step left running to exit, then SIGTERM and SIGKILL
    those processes by PID; reap them. Returns the PIDs that had to be signalled."""
    me = os.getpid()
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        reap()
        if not [p for p in descendants(me) if memory(p, False)[0]]:
            break
        time.sleep(0.2)
    signalled = []
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
        alive = [p for p in descendants(me) if memory(p, False)[0]]
        if not alive:
            break
        for pid in alive:
            try:
                os.kill(pid, sig)
                signalled.append(pid)
            except ProcessLookupError:
                pass
        end = time.monotonic() + wait
        while time.monotonic() < end and any(memory(p, False)[0] for p in descendants(me)):
            reap()
            time.sleep(0.1)
    for _ in range(20):
        reap()
        if not descendants(me):
            break
        time.sleep(0.1)
    return sorted(set(signalled))


def parse_time_v(path: str) -> dict:
    out: dict = {}
    try:
        text = Path(path).read_text()
    except OSError:
        return out
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("Maximum resident set size"):
            out["maxrss_mb"] = int(line.rsplit(":", 1)[1]) / 1024
        elif line.startswith("User time"):
            out["user_s"] = float(line.rsplit(":", 1)[1])
        elif line.startswith("System time"):
            out["sys_s"] = float(line.rsplit(":", 1)[1])
        elif line.startswith("Elapsed (wall clock)"):
            v = line.split("):", 1)[1].strip().split(":")
            out["wall_s"] = sum(float(x) * 60**i for i, x in enumerate(reversed(v)))
        elif line.startswith("Exit status"):
            out["exit_status"] = int(line.rsplit(":", 1)[1])
    return out


def measure(
    name: str,
    cmd: list[str],
    *,
    env: dict,
    timeout: float,
    logs: str,
    interval: float,
    pss_every: int,
) -> dict:
    """Run `cmd` under /usr/bin/time -v, sample its process tree (RSS every `interval` s, PSS
    every `pss_every` samples), stop what it leaves."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    out_path, err_path, time_path = (
        os.path.join(logs, f"{safe}.{x}") for x in ("out", "err", "time")
    )
    load_before = os.getloadavg()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(cmd)}", flush=True)
    peak_rss = peak_pss = max_procs = samples = 0
    timed_out = False
    t0 = time.perf_counter()
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(
            ["/usr/bin/time", "-v", "-o", time_path, *cmd],
            stdout=out,
            stderr=err,
            env=env,
            cwd=ROOT,
            start_new_session=True,
        )
        while True:
            try:
                proc.wait(timeout=interval)
                break
            except subprocess.TimeoutExpired:
                pass
            pids = [p for p in descendants(os.getpid()) if p != proc.pid]
            rss = pss = 0
            with_pss = samples % pss_every == 0
            for pid in pids:
                r, s = memory(pid, with_pss)
                rss += r
                pss += s
            peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
            max_procs = max(max_procs, len(pids))
            samples += 1
            reap(exclude=proc.pid)
            if time.perf_counter() - t0 > timeout:
                timed_out = True
                print(f"  {name}: timed out after {timeout:.0f} s; stopping it", flush=True)
                for pid in [proc.pid, *descendants(proc.pid)]:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    for pid in [proc.pid, *descendants(proc.pid)]:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                    proc.wait()
                break
    wall = time.perf_counter() - t0
    leftovers = stop_all()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    tv = parse_time_v(time_path)
    record = {
        "step": name,
        "cmd": cmd,
        "rc": proc.returncode,
        "timed_out": timed_out,
        "loadavg_before": [round(x, 2) for x in load_before],
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - wall)),
        "observed_wall_s": wall,
        "process_wall_s": tv.get("wall_s", wall),
        "cpu_user_s": ru1.ru_utime - ru0.ru_utime,
        "cpu_sys_s": ru1.ru_stime - ru0.ru_stime,
        "time_v": tv,
        # the sum over the tree is at least its largest process's high-water mark, which time -v
        # has exactly (a short peak between two samples is missed by sampling)
        "tree_peak_rss_mb": max(peak_rss / MIB, tv.get("maxrss_mb", 0.0)),
        "tree_peak_rss_sampled_mb": peak_rss / MIB,
        # PSS is read every pss_every samples from the first: fewer than 3 readings say little
        "tree_peak_pss_mb": peak_pss / MIB if samples >= 2 * pss_every + 1 else None,
        "pss_samples": (samples + pss_every - 1) // pss_every,
        "tree_max_procs": max_procs,
        "samples": samples,
        "sample_interval_s": interval,
        "pss_interval_s": interval * pss_every,
        "stopped_after": leftovers,
        "logs": [out_path, err_path],
    }
    record["cpu_s"] = record["cpu_user_s"] + record["cpu_sys_s"]
    status = "TIMEOUT" if timed_out else f"rc={proc.returncode}"
    print(
        f"  {name}: {status} wall {record['process_wall_s']:.2f} s, CPU {record['cpu_s']:.2f} s, "
        f"max RSS {tv.get('maxrss_mb', 0):.0f} MiB, tree RSS {record['tree_peak_rss_mb']:.0f} MiB"
        f" (PSS {record['tree_peak_pss_mb'] or 0:.0f}), {max_procs} procs",
        flush=True,
    )
    if proc.returncode:
        tail = Path(err_path).read_text(errors="replace")[-1500:]
        print(f"  stderr tail:\n{tail}", flush=True)
    return record


# ---------------------------------------------------------------- context


def git(*a: str) -> str:
    return subprocess.run(["git", "-C", MAIN, *a], capture_output=True, text=True).stdout.strip()


def code_snapshot(dest: str) -> dict:
    """Copy /work/main/src/shipyard to dest/src (on PYTHONPATH for shipyard's steps)."""
    snap = os.path.join(dest, "src")
    shutil.rmtree(snap, ignore_errors=True)
    shutil.copytree(
        os.path.join(MAIN, "src", "shipyard"),
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
    with open(os.path.join(dest, "src.diff"), "w") as f:
        f.write(git("diff", "HEAD", "--", "src"))
    return {
        "git_describe": git("describe", "--dirty", "--always"),
        "head": git("rev-parse", "HEAD"),
        "src_sha256": h.hexdigest(),
        "dirty_src": git("status", "--porcelain", "--", "src"),
        "snapshot": snap,
        "taken": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def environment() -> dict:
    probe = (
        "import json, sys, importlib.metadata as m\n"
        "v = {'python': sys.version.split()[0]}\n"
        "for p in sys.argv[1:]:\n"
        "    try: v[p] = m.version(p)\n"
        "    except Exception: pass\n"
        "print(json.dumps(v))"
    )

    def versions(py: str, *pkgs: str) -> dict:
        try:
            r = subprocess.run(
                [py, "-c", probe, *pkgs], capture_output=True, text=True, timeout=120
            )
            return json.loads(r.stdout or "{}")
        except Exception as ex:
            return {"error": str(ex)}

    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")), "?")
    mem = next(
        ln.split()[1]
        for ln in Path("/proc/meminfo").read_text().splitlines()
        if ln.startswith("MemTotal")
    )
    try:
        java = subprocess.run(
            ["java", "-version"], capture_output=True, text=True
        ).stderr.splitlines()[0]
    except Exception as ex:
        java = f"error: {ex}"
    return {
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": cpu,
        "mem_gib": round(int(mem) / 2**20, 1),
        "kernel": os.uname().release,
        "java": java,
        "peers_venv": PY_PEERS,
        "peers": versions(
            PY_PEERS,
            "pyspark",
            "ray",
            "lightgbm",
            "scikit-learn",
            "pyarrow",
            "pandas",
            "numpy",
            "joblib",
            "py4j",
        ),
        "shipyard_venv": PY_SHIPYARD,
        "shipyard": versions(
            PY_SHIPYARD,
            "shipyard",
            "onnxruntime",
            "lightgbm",
            "scikit-learn",
            "pyarrow",
            "pandas",
            "numpy",
            "skl2onnx",
            "onnxmltools",
        ),
    }


def input_info(path: str) -> dict:
    code = (
        "import json, sys, pyarrow.parquet as pq\n"
        "m = pq.ParquetFile(sys.argv[1]).metadata\n"
        "print(json.dumps({'rows': m.num_rows, 'columns': m.num_columns,"
        " 'row_groups': m.num_row_groups}))"
    )
    r = subprocess.run([PY_SHIPYARD, "-c", code, path], capture_output=True, text=True, check=True)
    return {"path": path, "bytes": os.path.getsize(path), **json.loads(r.stdout)}


# ---------------------------------------------------------------- the matrix


def rm(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--only", nargs="+", choices=TARGETS, default=TARGETS, metavar="TARGET")
    ap.add_argument("--models", nargs="+", choices=MODELS, default=MODELS)
    ap.add_argument("--timeout", type=float, default=1500, help="seconds per step")
    ap.add_argument("--interval", type=float, default=0.25, help="RSS sampling period, s")
    ap.add_argument("--pss-every", type=int, default=4, help="PSS every N RSS samples")
    ap.add_argument("--cores", type=int, default=2, help="local[N] for Spark, num_cpus for Ray")
    ap.add_argument("--keep-outputs", action="store_true")
    args = ap.parse_args()

    become_subreaper()

    def terminated(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminated)  # `timeout` around run.sh: stop the step too
    try:
        matrix(args)
    except KeyboardInterrupt:
        print("interrupted: stopping what the step left running", file=sys.stderr, flush=True)
        stop_all(grace=0)
        sys.exit(130)


def matrix(args: argparse.Namespace) -> None:
    n = args.rows
    data = os.path.join(ROOT, "data")
    source = os.path.join(data, f"batch_{n}.parquet")
    models_dir = os.path.join(data, "models")
    if not os.path.exists(source):
        sys.exit(f"{source} is missing: run gen_data.py --rows {n} first (run.sh does)")
    work = os.path.join(ROOT, "work", f"n{n}")
    outdir = os.path.join(work, "out")
    refdir = os.path.join(work, "ref")  # the pyarrow loop's outputs, kept for later --only runs
    home = os.path.join(work, "shipyard_home")
    res = os.path.join(ROOT, "results", f"n{n}")
    raw, logs = os.path.join(res, "raw"), os.path.join(res, "logs")
    for d in (outdir, refdir, raw, logs, os.path.join(HERE, "results")):
        os.makedirs(d, exist_ok=True)
    summary_path = os.path.join(HERE, "results", f"n{n}.json")
    summary = json.loads(Path(summary_path).read_text()) if os.path.exists(summary_path) else {}
    summary.setdefault("steps", {})
    summary.setdefault("checks", {})

    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    code = code_snapshot(res)
    env_info = environment()
    env_info["loadavg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    if "env" in summary:  # a package gone from the peers' venv: the earlier run's version
        env_info["peers"] = {**summary["env"].get("peers", {}), **env_info["peers"]}
    info = input_info(source)
    print(
        f"{n:,} rows, {info['bytes'] / MIB:,.0f} MiB, {info['row_groups']} row groups; code {code['git_describe']}"
    )
    base_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("SHIPYARD_", "PYTHONPATH"))
    }
    base_env.update({"RAY_USAGE_STATS_ENABLED": "0", "SPARK_LOCAL_IP": "127.0.0.1"})
    ship_env = {**base_env, "PYTHONPATH": code["snapshot"]}
    peers_env = {**base_env, "PYSPARK_PYTHON": PY_PEERS, "PYSPARK_DRIVER_PYTHON": PY_PEERS}
    cli = os.path.join(os.path.dirname(PY_SHIPYARD), "shipyard")

    t_start = time.perf_counter()

    def save(finished: bool = False) -> None:
        """The merged results so far (after every step: a run cut short keeps what it did)."""
        summary.update(
            rows=n,
            input=info,
            registration=registration,
            models_meta=json.loads(Path(models_dir, "meta.json").read_text()),
            env=env_info,
            code={k: v for k, v in code.items() if k != "snapshot"},
            last_run={
                "started": started,
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S") if finished else None,
                "seconds": round(time.perf_counter() - t_start, 1),
                "targets": args.only,
                "models": args.models,
                "timeout_s": args.timeout,
                "cores": args.cores,
            },
        )
        Path(summary_path).write_text(json.dumps(summary, indent=1))
        shutil.copy(summary_path, os.path.join(res, f"n{n}.json"))

    registration = summary.get("registration", {})
    if {"shipyard", "floor"} & set(args.only):  # a fresh home; registering is never timed
        rm(home)
        r = subprocess.run(
            [PY_SHIPYARD, os.path.join(HERE, "bench_shipyard.py"), "register", "--home", home,
             "--models", models_dir, "--json", os.path.join(raw, "registration.json")],
            env=ship_env, capture_output=True, text=True, cwd=ROOT, timeout=600,
        )  # fmt: skip
        if r.returncode:
            sys.exit(f"registration failed:\n{r.stdout}\n{r.stderr}")
        registration = json.loads(Path(raw, "registration.json").read_text())
        print(f"registered: {registration}", flush=True)

    def step(target: str, model: str, cmd: list[str], env: dict, inner_json: str | None) -> dict:
        name = f"{target}/{model}"
        if inner_json:
            rm(inner_json)
        rec = measure(
            name, cmd, env=env, timeout=args.timeout, logs=logs, interval=args.interval,
            pss_every=args.pss_every,
        )  # fmt: skip
        inner: dict = {}
        try:
            if inner_json and os.path.exists(inner_json):
                inner = json.loads(Path(inner_json).read_text())
            elif target.startswith("shipyard"):
                inner = json.loads(Path(rec["logs"][0]).read_text())
        except (OSError, ValueError) as ex:
            inner = {"error": f"no result: {ex}"}
        rec.update(
            target=target,
            model=model,
            rows=n,
            inner=inner,
            git_describe=code["git_describe"],
            # the libraries this step ran with (a step kept from an earlier run keeps its own)
            versions=env_info["shipyard" if target.startswith(("shipyard", "floor")) else "peers"],
            ok=rec["rc"] == 0 and not rec["timed_out"],
        )
        with open(os.path.join(raw, f"{target.replace(':', '-')}__{model}.json"), "w") as f:
            json.dump(rec, f, indent=1)
        summary["steps"][name] = rec
        summary["checks"].get(model, {}).pop(target, None)  # an older output's, if any
        save()
        return rec

    for model in args.models:
        model_file = os.path.join(models_dir, f"{model}.joblib")
        ref = registration.get(model, {}).get("ref", f"batch-{model}:1")
        outputs: dict[str, str] = {}

        def peer(target: str, model: str, model_file: str, outputs: dict[str, str]) -> None:
            if target == "pyarrow":
                out = os.path.join(refdir, f"pyarrow_{model}.parquet")
            else:
                out = os.path.join(outdir, f"{target}_{model}")
            rm(out)
            inner = os.path.join(raw, f"{target}__{model}.inner.json")
            cmd = [PY_PEERS, os.path.join(HERE, "peers.py"), target, "--model-file", model_file,
                   "--input", source, "--output", out, "--json", inner, "--cores", str(args.cores)]  # fmt: skip
            if step(target, model, cmd, peers_env, inner)["ok"]:
                outputs[target] = out

        if "pyarrow" in args.only:
            peer("pyarrow", model, model_file, outputs)
        if "shipyard" in args.only:
            for variant, flags in (("shipyard:nolog", ["--no-log"]), ("shipyard:log", [])):
                out = os.path.join(outdir, f"{variant.replace(':', '_')}_{model}.parquet")
                rm(out)
                cmd = [cli, "--home", home, "batch", ref, "-i", source, "-o", out, "--json", *flags]
                if step(variant, model, cmd, ship_env, None)["ok"]:
                    outputs[variant] = out
        if "floor" in args.only:
            inner = os.path.join(raw, f"floor__{model}.inner.json")
            cmd = [PY_SHIPYARD, os.path.join(HERE, "bench_shipyard.py"), "floor", "--home", home,
                   "--model", ref, "--input", source, "--json", inner]  # fmt: skip
            step("floor", model, cmd, ship_env, inner)
        for target in ("spark", "ray"):
            if target in args.only:
                peer(target, model, model_file, outputs)

        # every output against the reference: the pyarrow loop's (this run's or an earlier
        # run's), else the first there is
        reference = os.path.join(refdir, f"pyarrow_{model}.parquet")
        if "pyarrow" not in outputs and os.path.exists(reference):
            outputs = {"pyarrow": reference, **outputs}
        if outputs:
            ref_name = "pyarrow" if "pyarrow" in outputs else next(iter(outputs))
            check_json = os.path.join(raw, f"check__{model}.json")
            cmd = [PY_SHIPYARD, os.path.join(HERE, "check.py"), "--rows", str(n), "--json", check_json,
                   "--ref", f"{ref_name}={outputs[ref_name]}"]  # fmt: skip
            cmd += [f"--out={k}={v}" for k, v in outputs.items() if k != ref_name]
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
            if r.returncode == 0:
                check = json.loads(Path(check_json).read_text())
                if ref_name != summary["checks"].get(model, {}).get("_reference", ref_name):
                    summary["checks"][model] = {}  # other references: the old entries go
                summary["checks"].setdefault(model, {}).update(
                    {k: v for k, v in check.items() if k not in ("reference", "rows")}
                )
                summary["checks"][model]["_reference"] = check["reference"]
                print(f"  check {model}: {json.dumps(check)}", flush=True)
                save()
            else:
                print(f"  check {model} failed:\n{r.stderr[-2000:]}", flush=True)
        if not args.keep_outputs:
            for name, out in outputs.items():
                if name != "pyarrow":
                    rm(out)

    if not args.keep_outputs:  # the home holds the logged predictions: N rows x 30 features
        rm(outdir)
        rm(home)
    save(finished=True)
    failed = [k for k, v in summary["steps"].items() if not v.get("ok")]
    print(f"wrote {summary_path}" + (f"; FAILED: {', '.join(failed)}" if failed else ""))


if __name__ == "__main__":
    main()

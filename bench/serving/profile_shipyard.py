"""Where a shipyard worker spends its time under load: py-spy samples during a wrk run.

    .venv/bin/python bench/serving/profile_shipyard.py --model lr --concurrency 64 --seconds 10

Starts `shipyard-1w` (as `serve_bench.py` does), drives it with single-record (or, with
`--rows 100`, 100-record) requests at the given concurrency, and samples the server with
`py-spy record --nonblocking` (py-spy lives in its own venv, `ROOT/venv-tools`, created on
first use). Prints the functions with
the most samples on their own (self) and the share of samples under a few named stages of a
request (inclusive); writes the collapsed stacks to `bench/results/raw/` for flame graphs.
Sampling costs the server a little CPU; use it to see proportions, not to measure speed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from harness import BENCH, DEFAULT_ROOT, HARNESS, module
from serve_bench import all_targets, for_model, port_of
from wrk_load import check_body

peers = module("peers")

# Each sample goes to the innermost frame that names a stage (first match in this order), so
# the shares add up to 100 %: "model call" is time in the model's own frames, not its callers'.
STAGES = {
    "auth + rate limit (shipyard/access)": ("shipyard/access/",),
    "read body + JSON parse": ("read_json (",),
    "validate records -> columns (Signature)": ("validate_records (", "_column_array ("),
    "model call (runtime predictor)": ("shipyard/runtime/", "onnxruntime/"),
    "micro-batcher (shipyard/serving/_batcher)": ("serving/_batcher.py",),
    "ids (new_id: clock + os.urandom)": ("new_id (",),
    "shape result (labels, scores)": ("shape (", "PredictionResult.records ("),
    "prediction log (shipyard/logstore)": ("shipyard/logstore/",),
    "render JSON response (orjson)": ("render (",),
    "Prometheus metrics": ("prometheus_client/",),
    "log records (access log, JsonFormatter)": ("logging/__init__.py", "shipyard/core/logs.py"),
    "FastAPI native telemetry check": ("fastapi/telemetry/",),
    "shipyard request middleware": ("RequestContext.",),
    "shipyard endpoint glue (serving/api, _service)": ("shipyard/serving/",),
    "fastapi / starlette": ("fastapi/", "starlette/"),
    "uvicorn + httptools": ("uvicorn/", "httptools/"),
    "event loop, threads, futures": ("asyncio/", "uvloop/", "concurrent/futures/", "threading.py"),
}


def py_spy(root: Path) -> Path:
    exe = root / "venv-tools" / "bin" / "py-spy"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(root / "venv-tools")], check=True)
        subprocess.run([str(root / "venv-tools" / "bin" / "pip"), "install", "-q", "py-spy"], check=True)  # fmt: skip
    return exe


def stage_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for stage, needles in STAGES.items():
            if any(n in frame for n in needles):
                return stage
    return "other"


def summarise(collapsed: Path, top: int) -> None:
    self_counts: Counter[str] = Counter()
    stage_counts: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        self_counts[frames[-1]] += count
        stage_counts[stage_of(frames)] += count
    if not total:
        print("no samples")
        return
    print(f"\n{total} active samples (all threads); share by innermost stage:")
    for stage, count in stage_counts.most_common():
        print(f"  {count / total:6.1%}  {stage}")
    print(f"\ntop {top} functions by self samples:")
    for frame, count in self_counts.most_common(top):
        print(f"  {count / total:6.1%}  {frame}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--target", default="shipyard-1w")
    ap.add_argument("--model", default="lr")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rows", type=int, choices=(1, 100), default=1, help="records per request")
    ap.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--summarise", type=Path, default=None, help="only summarise this file")
    args = ap.parse_args()
    if args.summarise:
        summarise(args.summarise, args.top)
        return
    root = args.root.resolve()
    exe = py_spy(root)
    spec = for_model(all_targets(root)[args.target], args.model)
    if spec.get("transport", "http-json") != "http-json":
        raise SystemExit(f"{args.target}: profiling drives JSON targets only (shipyard-1w, ...)")
    port = port_of(args.target)
    raw = BENCH / "results" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    out = raw / f"pyspy-{args.target}-{args.model}-{args.rows}rows-c{args.concurrency}-{time.strftime('%Y%m%d-%H%M%S')}.txt"  # fmt: skip
    p, log = peers.start(args.target, spec, args.model, port, str(root), {})
    try:
        peers.wait_healthy(p, port, spec["health"])
        path, body = (spec["path"], spec["body"]) if args.rows == 1 else (spec["batch_path"], spec["batch_body"])  # fmt: skip
        url = f"http://127.0.0.1:{port}{path}"
        check = check_body(url, body, spec.get("headers_file"))
        if check["status"] != 200:
            raise SystemExit(f"the server answered {check}")
        cmd = ["wrk", "-t1", f"-c{args.concurrency}", f"-d{args.seconds + 3}s", "--latency"]
        cmd += ["-s", str(Path(__file__).parent / "lua" / "post_body_headers.lua"), url, "--"]
        cmd += [body, "200000", spec.get("headers_file") or ""]
        env = {**os.environ, "HARNESS_LUA_DIR": str(HARNESS / "lua")}
        load = threading.Thread(
            target=subprocess.run, args=(cmd,), kwargs={"env": env, "capture_output": True}
        )
        load.start()
        time.sleep(2)
        # --workers 1: uvicorn serves in the main process; more: the busiest worker process
        cpu = {pid: peers.harness.cpu_seconds([pid]) for pid in peers.harness.proc_tree(p.pid)}
        pid = p.pid if args.target.endswith("-1w") else max(cpu, key=lambda k: cpu[k])
        subprocess.run(
            [str(exe), "record", "--pid", str(pid), "--duration", str(args.seconds),
             "--rate", str(args.rate), "--nonblocking", "--format", "raw", "--output", str(out)],
            check=True, capture_output=True,
        )  # fmt: skip
        load.join()
    finally:
        peers.stop(p, str(root), args.target, args.model)
        log.close()
    print(f"collapsed stacks: {out}")
    summarise(out, args.top)


if __name__ == "__main__":
    main()

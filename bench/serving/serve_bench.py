"""Start each server on 127.0.0.1, load-test it with wrk, stop it by PID: shipyard and its peers.

    .venv/bin/python bench/serving/serve_bench.py --root bench/.peers --rounds 3 \
        --out bench/results/raw/serving.jsonl

Targets: `shipyard-1w` / `shipyard-2w` (`shipyard --home ROOT/shipyard/<model> server
--workers N`, auth on, prediction logging on, the key from `shipyard_setup.py` sent as
`Authorization: Bearer`), and every target of the shared harness's `peers.py` (`mlflow-1w`,
`mlflow-2w`, `bento-default`, `bento-batching`, `fastapi-plain-1w`, `fastapi-1w`,
`fastapi-2w`), started, health-checked and stopped by `peers.py`'s own functions.

Method (the harness's): per round every server starts afresh and the order of targets is
rotated; after a 3 s warm-up at c=16, single-record bodies at c=1, 16, 64 and 100-record
bodies at c=16, each `wrk -t1 -cN -d10s`; one JSON line per wrk run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from harness import BENCH, DEFAULT_ROOT, module
from wrk_load import run_target

peers = module("peers")

DEFAULT_TARGETS = "shipyard-1w,shipyard-2w,mlflow-1w,bento-batching,fastapi-1w,fastapi-2w"
SHIPYARD_PORTS = {"shipyard-1w": 18401, "shipyard-2w": 18402}
SHIPYARD = Path(os.environ.get("SHIPYARD_BIN", BENCH.parent / ".venv" / "bin" / "shipyard"))


def shipyard_target(root: Path, workers: int) -> dict[str, Any]:
    """A target in `peers.py`'s shape; path and headers depend on the model."""

    def cmd(model: str, port: int) -> list[str]:
        return [
            str(SHIPYARD), "--home", str(root / "shipyard" / model), "server",
            "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
        ]  # fmt: skip

    bodies = root / "bodies"
    return {
        "cmd": cmd,
        "env": {"PATH": f"{SHIPYARD.parent}:" + os.environ.get("PATH", "")},
        "health": "/v2/health/ready",
        "path": lambda m: f"/v1/models/fraud-{m}/predict",
        "batch_path": lambda m: f"/v1/models/fraud-{m}/predict",
        "body": str(bodies / "shipyard_single.json"),
        "batch_body": str(bodies / "shipyard_batch100.json"),
        "headers_file": lambda m: str(root / "shipyard" / m / "auth_headers.txt"),
    }


def all_targets(root: Path) -> dict[str, dict[str, Any]]:
    targets: dict[str, dict[str, Any]] = {
        "shipyard-1w": shipyard_target(root, 1),
        "shipyard-2w": shipyard_target(root, 2),
    }
    targets.update(peers.targets(str(root)))
    return targets


def port_of(name: str) -> int:
    port: int = SHIPYARD_PORTS.get(name) or peers.PORTS[name]
    return port


def for_model(spec: dict[str, Any], model: str) -> dict[str, Any]:
    """The spec's per-model fields (callables other than `cmd`) evaluated for `model`."""
    return {k: (v(model) if callable(v) and k != "cmd" else v) for k, v in spec.items()}


def plan(names: list[str], models: list[str], rounds: int) -> list[tuple[int, str, str]]:
    """(round, target, model) in run order; each round starts one step further along."""
    combos = [(n, m) for n in names for m in models]
    order = []
    for r in range(rounds):
        k = (r * len(combos)) // max(1, rounds)
        order += [(r, n, m) for n, m in combos[k:] + combos[:k]]
    return order


def versions(root: Path) -> dict[str, str]:
    """Installed versions of what each target runs, for the record."""
    found = {}
    wanted = {
        "shipyard": (BENCH.parent / ".venv", "shipyard"),
        "mlflow": (root / "venv-mlflow", "mlflow"),
        "bentoml": (root / "venv-bento", "bentoml"),
        "fastapi": (root / "venv-fast", "fastapi"),
    }
    for label, (venv, dist) in wanted.items():
        python = venv / "bin" / "python"
        if python.exists():
            code = f"import importlib.metadata as m; print(m.version({dist!r}))"
            p = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
            found[label] = p.stdout.strip() or "?"
    git = ["git", "-C", str(BENCH.parent)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run([*git, "status", "--porcelain", "src"], capture_output=True, text=True)
    found["shipyard_commit"] = head.stdout.strip() + ("+dirty src" if dirty.stdout.strip() else "")
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--targets", default=DEFAULT_TARGETS, help="comma list, or 'all'")
    ap.add_argument("--models", default="lr,lgbm")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    ap.add_argument("--warmup", type=int, default=3, help="seconds of unrecorded load at c=16")
    ap.add_argument("--concurrency", default="1,16,64")
    ap.add_argument("--batch-concurrency", type=int, default=16)
    ap.add_argument("--no-batch", action="store_true", help="skip the 100-record runs")
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE for every server")
    ap.add_argument("--tag", default="")
    ap.add_argument("--out", type=Path, required=True, help="JSON lines, appended")
    args = ap.parse_args()
    root = args.root.resolve()
    targets = all_targets(root)
    names = list(targets) if args.targets == "all" else args.targets.split(",")
    unknown = [n for n in names if n not in targets]
    if unknown:
        ap.error(f"unknown target(s) {', '.join(unknown)}; known: {', '.join(targets)}")
    extra_env = dict(kv.split("=", 1) for kv in args.env)
    setup = json.loads((root / "shipyard" / "setup.json").read_text())

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    run_info = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "args": {k: str(v) for k, v in vars(args).items()},
        "versions": versions(root),
        "shipyard_setup": setup,
        "cells": [],
    }
    schedule = plan(names, args.models.split(","), args.rounds)
    for rnd, name, model in schedule:
        spec = for_model(targets[name], model)
        port = port_of(name)
        print(f"=== round {rnd + 1}/{args.rounds}: {name}/{model}", flush=True)
        p, log = peers.start(name, spec, model, port, str(root), extra_env)
        cell: dict[str, Any] = {"target": name, "model": model, "round": rnd + 1}
        try:
            startup = peers.wait_healthy(p, port, spec["health"])
            time.sleep(1)
            procs = len(peers.harness.proc_tree(p.pid))
            print(f"  healthy after {startup:.1f}s; procs={procs}", flush=True)
            extra = {"startup_s": round(startup, 2), "server_env": extra_env}
            if name.startswith("shipyard"):
                extra["shipyard_runtime"] = setup[model]["runtime"]
            _, checks = run_target(
                name,
                port,
                spec["path"],
                spec["body"],
                model=model,
                batch_path=spec["batch_path"],
                batch_body=None if args.no_batch else spec["batch_body"],
                batch_concurrency=args.batch_concurrency,
                concurrency=[int(c) for c in args.concurrency.split(",")],
                duration=args.duration,
                repeats=1,
                rep_base=rnd,
                warmup=args.warmup,
                headers_file=spec.get("headers_file"),
                server_pid=p.pid,
                out=str(args.out),
                tag=args.tag,
                extra=extra,
            )
            cell.update({"startup_s": startup, "checks": checks})
        except Exception as e:
            print(f"  FAILED {name}/{model}: {e!r}", flush=True)
            cell["error"] = repr(e)
        finally:
            peers.stop(p, str(root), name, model)
            log.close()
        run_info["cells"].append(cell)
    run_info["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    info_file = args.out.with_suffix(".run.json")
    info_file.write_text(json.dumps(run_info, indent=1))
    failed = [c for c in run_info["cells"] if "error" in c]
    print(f"wrote {args.out} and {info_file}; {len(failed)} failed cell(s)", flush=True)
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()

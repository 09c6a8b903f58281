"""Start each server on 127.0.0.1, load-test it, stop it by PID: shipyard and its peers.

    .venv/bin/python bench/serving/serve_bench.py --root bench/.peers --rounds 3 \
        --out bench/results/raw/serving.jsonl

Targets: `shipyard-1w` / `shipyard-2w` (`shipyard --home ROOT/shipyard/<model> server
--workers N`, auth on, prediction logging on, the key from `shipyard_setup.py` sent as
`Authorization: Bearer`, JSON on `/v1/models/fraud-<model>/predict`); the same servers
measured over the Open Inference Protocol's binary tensor extension,
`shipyard-1w-bin` / `shipyard-2w-bin` (`POST /v2/models/fraud-<model>/infer`, wrk), and over
gRPC, `shipyard-1w-grpc` / `shipyard-2w-grpc` (`--grpc-port`, `ModelInfer`, h2load; see
`grpc_load.py`); and every target of the shared harness's `peers.py` (`mlflow-1w`,
`mlflow-2w`, `bento-default`, `bento-batching`, `fastapi-plain-1w`, `fastapi-1w`,
`fastapi-2w`), started, health-checked and stopped by `peers.py`'s own functions.

Method (the harness's): per round every server starts afresh and the order of targets is
rotated; after a 3 s warm-up at c=16, single-record bodies at c=1, 16, 64 and 100-record
bodies at c=16, each `wrk -t1 -cN -d10s` (h2load `-cN -m1 -t1 -D 10` for gRPC); one JSON
line per load run. The binary targets add one 100-record scenario: one tensor per column
(`columns100`) beside the [100, k] matrix (`batch100`).
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

from grpc_load import check_grpc, h2load_scenario
from harness import BENCH, DEFAULT_ROOT, module
from wrk_load import Check, Load, Scenario, check_scenario, run_scenarios, wrk_scenario

peers = module("peers")

DEFAULT_TARGETS = ",".join(
    [
        "shipyard-1w", "shipyard-2w", "shipyard-1w-bin", "shipyard-2w-bin",
        "shipyard-1w-grpc", "shipyard-2w-grpc",
        "mlflow-1w", "bento-batching", "fastapi-1w", "fastapi-2w",
    ]
)  # fmt: skip
SHIPYARD_PORTS = {
    "shipyard-1w": 18401, "shipyard-2w": 18402, "shipyard-1w-bin": 18403,
    "shipyard-2w-bin": 18404, "shipyard-1w-grpc": 18405, "shipyard-2w-grpc": 18406,
}  # fmt: skip
SHIPYARD = Path(os.environ.get("SHIPYARD_BIN", BENCH.parent / ".venv" / "bin" / "shipyard"))
GRPC_SERVICE = "/inference.GRPCInferenceService/ModelInfer"


def grpc_port(port: int) -> int:
    """The gRPC port of a shipyard target whose HTTP port is `port`."""
    return port + 100


def shipyard_target(root: Path, workers: int, transport: str = "http-json") -> dict[str, Any]:
    """A target in `peers.py`'s shape; path and headers depend on the model. `transport`:
    `http-json` (/v1 JSON), `http-binary` (/v2 binary tensors) or `grpc` (adds --grpc-port);
    the JSON fields below serve the first, `scenarios` builds the others from setup.json."""

    def cmd(model: str, port: int) -> list[str]:
        out = [
            str(SHIPYARD), "--home", str(root / "shipyard" / model), "server",
            "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
        ]  # fmt: skip
        if transport == "grpc":
            out += ["--grpc-port", str(grpc_port(port))]
        return out

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
        "transport": transport,
        "workers": workers,
    }


def all_targets(root: Path) -> dict[str, dict[str, Any]]:
    targets: dict[str, dict[str, Any]] = {}
    for suffix, transport in (("", "http-json"), ("-bin", "http-binary"), ("-grpc", "grpc")):
        for workers in (1, 2):
            targets[f"shipyard-{workers}w{suffix}"] = shipyard_target(root, workers, transport)
    targets.update(peers.targets(str(root)))
    return targets


def scenarios(
    spec: dict[str, Any], model: str, port: int, args: argparse.Namespace, setup: dict[str, Any]
) -> tuple[list[Scenario], Check, Load]:
    """The target's scenarios, and how to check and load them (wrk, or grpcio and h2load)."""
    base = f"http://127.0.0.1:{port}"
    conc = [int(c) for c in args.concurrency.split(",")]
    transport = spec.get("transport", "http-json")
    if transport == "http-json":
        headers = (spec["headers_file"],) if spec.get("headers_file") else ()
        out = [Scenario("single", 1, base + spec["path"], spec["body"], c, headers) for c in conc]
        if not args.no_batch:
            url = base + spec["batch_path"]
            out.append(Scenario("batch100", 100, url, spec["batch_body"], args.batch_concurrency, headers))  # fmt: skip
        return out, check_scenario, wrk_scenario
    info = setup[model]
    files = info["requests"][transport]
    if transport == "grpc":
        url, check, load = f"http://127.0.0.1:{grpc_port(port)}{GRPC_SERVICE}", check_grpc, h2load_scenario  # fmt: skip
    else:
        url, check, load = f"{base}/v2/models/{info['name']}/infer", check_scenario, wrk_scenario

    def scenario(label: str, c: int) -> Scenario:
        f = files[label]
        headers = tuple(h for h in (info["headers_file"], f["headers"]) if h)
        scores = tuple(info["json_scores"]["single" if f["rows"] == 1 else "batch100"])
        return Scenario(
            label, f["rows"], url, f["body"], c, headers, transport, f["layout"], scores
        )

    out = [scenario("single", c) for c in conc]
    if not args.no_batch:
        out += [scenario(label, args.batch_concurrency) for label in files if label != "single"]
    return out, check, load


def listening(port: int) -> int:
    """How many sockets listen on TCP `port` (IPv4 and IPv6), from /proc/net."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


def wait_listening(ports: list[int], sockets: int, timeout: float = 60) -> None:
    """Until every worker listens on each port (each has its own SO_REUSEPORT socket): the
    first ready worker answers the health check before the others have bound, and load that
    connects then would all land on it."""
    deadline = time.monotonic() + timeout
    while any(listening(p) < sockets for p in ports):
        if time.monotonic() > deadline:
            found = {p: listening(p) for p in ports}
            raise RuntimeError(f"not {sockets} listening socket(s) per port after {timeout}s: {found}")  # fmt: skip
        time.sleep(0.2)


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
        "grpcio": (BENCH.parent / ".venv", "grpcio"),
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
    for tool in ("wrk", "h2load"):
        try:
            p = subprocess.run([tool, "--version"], capture_output=True, text=True)
            found[tool] = (p.stdout or p.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            found[tool] = "missing"
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
            if "workers" in spec:
                grpc = [grpc_port(port)] if spec["transport"] == "grpc" else []
                wait_listening([port, *grpc], spec["workers"])
            time.sleep(1)
            procs = len(peers.harness.proc_tree(p.pid))
            print(f"  healthy after {startup:.1f}s; procs={procs}", flush=True)
            extra = {"startup_s": round(startup, 2), "server_env": extra_env}
            if name.startswith("shipyard"):
                extra["shipyard_runtime"] = setup[model]["runtime"]
            cell_scenarios, check, load = scenarios(spec, model, port, args, setup)
            _, checks = run_scenarios(
                name,
                cell_scenarios,
                model=model,
                check=check,
                load=load,
                duration=args.duration,
                repeats=1,
                rep_base=rnd,
                warmup=args.warmup,
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

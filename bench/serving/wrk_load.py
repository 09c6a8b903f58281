"""Load-test one running server: the shared harness's `run.py` method, plus request headers and
any load tool.

`run.py` posts bodies with `Content-Type` only; shipyard answers 401 without an API key, and
the Open Inference Protocol's binary extension needs two more headers per body. This module
is `run.py`'s `check_body`, `wrk_once` and `run_target` with headers files (`Name: value` per
line, several per scenario) sent with every request, through `lua/post_body_headers.lua`,
which runs the harness's own `post_body.lua`. Without headers files the harness's
`post_body.lua` runs unchanged. The /proc CPU and RSS readers, the loopback check and the
record fields are the harness's, so results from here and from `run.py` line up.

A scenario's `check` and `load` are pluggable (`run_scenarios`): `grpc_load.py` gives the
gRPC ones (grpcio and h2load), measured through the same `CpuWindow`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from harness import HARNESS, module
from oip_bodies import binary_scores

__all__ = [
    "CpuWindow",
    "Scenario",
    "check_body",
    "check_scenario",
    "read_headers",
    "run_scenarios",
    "wrk_once",
    "wrk_scenario",
]

run = module("run")

LUA_HEADERS = Path(__file__).resolve().parent / "lua" / "post_body_headers.lua"
LUA_PLAIN = HARNESS / "lua" / "post_body.lua"
SCORE_TOLERANCE = 1e-6


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One load scenario: a body posted to a URL at a concurrency, with its headers files.

    `transport` and `layout` go into every record (`http-json`/`records` for the harness's
    JSON bodies); `scores`, when given, are what the check must read back from the answer.
    """

    name: str
    rows: int
    url: str
    body: str
    concurrency: int
    headers_files: tuple[str, ...] = ()
    transport: str = "http-json"
    layout: str = "records"
    scores: tuple[float, ...] | None = None


def read_headers(paths: str | os.PathLike[str] | Sequence[str] | None) -> dict[str, str]:
    """`Name: value` lines of one headers file or several (later files win)."""
    if paths is None:
        return {}
    files = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    headers = {}
    for path in files:
        if not path:
            continue
        for line in Path(path).read_text().splitlines():
            name, sep, value = line.partition(":")
            if sep and name.strip():
                headers[name.strip()] = value.strip()
    return headers


def check_body(
    url: str,
    body_file: str,
    headers_files: str | Sequence[str] | None = None,
    timeout: float = 30,
    scores: Sequence[float] | None = None,
) -> dict[str, Any]:
    """POST the body once; the status, the time and the head of the answer (and, with
    `scores`, the largest difference between the answer's scores and them)."""
    data = Path(body_file).read_bytes()
    headers = {"Content-Type": "application/json", **read_headers(headers_files)}
    req = urllib.request.Request(url, data=data, method="POST", headers=headers)
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body, status = r.read(), r.status
            header_length = r.headers.get("Inference-Header-Content-Length")
    except urllib.error.HTTPError as e:
        body, status, header_length = e.read(), e.code, None
    out: dict[str, Any] = {
        "status": status,
        "ms": round((time.perf_counter() - started) * 1e3, 2),
        "response_head": body[: int(header_length or 300)][:300].decode("utf-8", "replace"),
    }
    if scores is not None and 200 <= status < 300:
        got = binary_scores(body, header_length)
        if len(got) != len(scores):
            raise RuntimeError(f"{url}: {len(got)} scores in the answer, expected {len(scores)}")
        out["max_score_diff"] = float(np.max(np.abs(got - np.asarray(scores))))
    return out


class CpuWindow:
    """CPU of the server's process tree, of the load tool (this process's children) and of
    everything else, over one load run: the harness's /proc readers, as `run.wrk_once` uses
    them."""

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid

    def __enter__(self) -> CpuWindow:
        self._srv0 = run.cpu_by_pid(run.proc_tree(self.server_pid))
        self._sys0 = run.system_busy_seconds()
        self._ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._started
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.sys_cpu = run.system_busy_seconds() - self._sys0
        self.pids = run.proc_tree(self.server_pid)
        srv1 = run.cpu_by_pid(self.pids)
        self.srv_cpu = sum(v - self._srv0.get(k, 0.0) for k, v in srv1.items())
        ru0 = self._ru0
        self.tool_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)

    def fields(self, requests: int) -> dict[str, Any]:
        """The record's CPU fields (`wrk_cores` is the load tool's, whichever it is)."""
        pid, wall = self.server_pid, self.wall
        with open("/proc/loadavg") as f:
            loadavg = f.read().split()[:3]
        return {
            "server_cores": self.srv_cpu / wall if pid else None,
            "wrk_cores": self.tool_cpu / wall,
            "machine_busy_cores": self.sys_cpu / wall,
            "other_cores": max(
                0.0, (self.sys_cpu - self.tool_cpu - (self.srv_cpu if pid else 0)) / wall
            ),
            "server_cpu_ms_per_req": (self.srv_cpu * 1e3 / requests) if pid and requests else None,
            "server_rss_mb": round(run.rss_mb(self.pids), 1) if pid else None,
            "server_procs": len(self.pids),
            "loadavg": loadavg,
        }


def wrk_once(
    url: str,
    body_file: str,
    conc: int,
    duration: int,
    *,
    headers_files: Sequence[str] = (),
    threads: int = 1,
    max_responses: int = 200_000,
    server_pid: int | None = None,
) -> dict[str, Any]:
    """One bounded wrk run, with the server's, wrk's and everyone else's CPU from /proc."""
    threads = max(1, min(threads, conc))
    headers_files = [h for h in headers_files if h]
    lua = LUA_HEADERS if headers_files else LUA_PLAIN
    cmd = ["wrk", f"-t{threads}", f"-c{conc}", f"-d{duration}s", "--timeout", "10s", "--latency"]
    cmd += ["-s", str(lua), url, "--", body_file, str(max_responses), *headers_files]
    env = {**os.environ, "HARNESS_LUA_DIR": str(HARNESS / "lua")}
    with CpuWindow(server_pid) as cpu:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, env=env)
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("WRKJSON ")]
    if p.returncode != 0 or not line:
        raise RuntimeError(f"wrk failed rc={p.returncode}: {p.stdout[-2000:]} {p.stderr[-2000:]}")
    w = json.loads(line[0][len("WRKJSON ") :])
    secs = w["duration_us"] / 1e6
    requests = w["requests"]
    return {
        "concurrency": conc,
        "wrk_threads": threads,
        "duration_s": round(secs, 3),
        "requests": requests,
        "non2xx": w["non2xx"],
        "socket_errors": w["err_connect"] + w["err_read"] + w["err_write"] + w["err_timeout"],
        "err_detail": {
            k: w[k] for k in ("err_connect", "err_read", "err_write", "err_timeout", "err_status")
        },
        "rps": requests / secs,
        "p50_ms": w["p50_us"] / 1e3,
        "p75_ms": w["p75_us"] / 1e3,
        "p90_ms": w["p90_us"] / 1e3,
        "p99_ms": w["p99_us"] / 1e3,
        "p999_ms": w["p999_us"] / 1e3,
        "mean_ms": w["lat_mean_us"] / 1e3,
        "max_ms": w["lat_max_us"] / 1e3,
        **cpu.fields(requests),
        "load_tool": "wrk",
    }


def check_scenario(s: Scenario) -> dict[str, Any]:
    """POST the scenario's body once; raise unless it is answered 2xx (with its scores)."""
    checked = check_body(s.url, s.body, s.headers_files, scores=s.scores)
    if not 200 <= checked["status"] < 300:
        raise RuntimeError(f"{s.name} body got {checked}")
    if checked.get("max_score_diff", 0.0) > SCORE_TOLERANCE:
        raise RuntimeError(f"{s.name}: scores differ from the JSON path's by {checked}")
    return checked


def wrk_scenario(
    s: Scenario, duration: int, server_pid: int | None, check: dict[str, Any]
) -> dict[str, Any]:
    """One wrk run of the scenario (its check's answer is not needed)."""
    return wrk_once(
        s.url, s.body, s.concurrency, duration, headers_files=s.headers_files, server_pid=server_pid
    )


Check = Callable[[Scenario], dict[str, Any]]
Load = Callable[[Scenario, int, int | None, dict[str, Any]], dict[str, Any]]


def run_scenarios(
    target: str,
    scenarios: Sequence[Scenario],
    *,
    model: str = "",
    check: Check = check_scenario,
    load: Load = wrk_scenario,
    duration: int = 10,
    repeats: int = 1,
    rep_base: int = 0,
    warmup: int = 3,
    server_pid: int | None = None,
    out: str | None = None,
    tag: str = "",
    extra: dict[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Check each body once, warm up at c=16 with the first scenario's body, then run every
    scenario `repeats` times; each run appends one JSON line to `out`."""
    for s in scenarios:
        run.assert_loopback(urllib.parse.urlsplit(s.url).hostname)
    checks: dict[str, Any] = {}
    for s in scenarios:
        if s.name not in checks:
            checks[s.name] = check(s)
    print(f"[{target}/{model}] checks: " + json.dumps(checks)[:600], flush=True)
    if warmup:
        first = scenarios[0]
        load(dataclasses.replace(first, concurrency=16), warmup, server_pid, checks[first.name])
    results = []
    for rep in range(rep_base + 1, rep_base + repeats + 1):
        for s in scenarios:
            r = load(s, duration, server_pid, checks[s.name])
            r.update(
                {
                    "target": target,
                    "model": model,
                    "tag": tag,
                    "scenario": s.name,
                    "rows_per_request": s.rows,
                    "rep": rep,
                    "url": s.url,
                    "rows_per_s": (r["requests"] - r["non2xx"]) * s.rows / r["duration_s"],
                    "body_file": os.path.basename(s.body),
                    "transport": s.transport,
                    "request_layout": s.layout,
                    "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    **(extra or {}),
                }
            )
            results.append(r)
            print(
                f"[{target}/{model}{'/' + tag if tag else ''}] rep{rep} {s.name:10s} "
                f"c={s.concurrency:<3d} rps={r['rps']:8.1f} rows/s={r['rows_per_s']:9.1f} "
                f"p50={r['p50_ms']:7.2f}ms p90={r['p90_ms']:7.2f} p99={r['p99_ms']:7.2f} "
                f"non2xx={r['non2xx']} sockerr={r['socket_errors']} "
                f"cores srv={r['server_cores'] or 0:.2f} {r['load_tool']}={r['wrk_cores']:.2f} "
                f"other={r['other_cores']:.2f} srv_cpu/req={r['server_cpu_ms_per_req'] or 0:.2f}ms",
                flush=True,
            )
            if out:
                os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
                with open(out, "a") as f:
                    f.write(json.dumps(r) + "\n")
    return results, checks

"""Load-test one running server with wrk: the shared harness's `run.py` method, plus headers.

`run.py` posts bodies with `Content-Type` only; shipyard answers 401 without an API key. This
module is `run.py`'s `check_body`, `wrk_once` and `run_target` with one addition, a headers
file (`Name: value` per line) sent with every request, through `lua/post_body_headers.lua`,
which runs the harness's own `post_body.lua`. Without a headers file the harness's
`post_body.lua` runs unchanged. The /proc CPU and RSS readers, the loopback check and the
record fields are the harness's, so results from here and from `run.py` line up.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness import HARNESS, module

__all__ = ["check_body", "read_headers", "run_target", "wrk_once"]

run = module("run")

LUA_HEADERS = Path(__file__).resolve().parent / "lua" / "post_body_headers.lua"
LUA_PLAIN = HARNESS / "lua" / "post_body.lua"


def read_headers(path: str | os.PathLike[str] | None) -> dict[str, str]:
    """`Name: value` lines of a headers file (none when `path` is None)."""
    if path is None:
        return {}
    headers = {}
    for line in Path(path).read_text().splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip():
            headers[name.strip()] = value.strip()
    return headers


def check_body(
    url: str, body_file: str, headers_file: str | None = None, timeout: float = 30
) -> dict[str, Any]:
    """POST the body once; the status, the time and the head of the answer."""
    data = Path(body_file).read_bytes()
    headers = {"Content-Type": "application/json", **read_headers(headers_file)}
    req = urllib.request.Request(url, data=data, method="POST", headers=headers)
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body, status = r.read(), r.status
    except urllib.error.HTTPError as e:
        body, status = e.read(), e.code
    return {
        "status": status,
        "ms": round((time.perf_counter() - started) * 1e3, 2),
        "response_head": body[:300].decode("utf-8", "replace"),
    }


def wrk_once(
    url: str,
    body_file: str,
    conc: int,
    duration: int,
    *,
    headers_file: str | None = None,
    threads: int = 1,
    max_responses: int = 200_000,
    server_pid: int | None = None,
) -> dict[str, Any]:
    """One bounded wrk run, with the server's, wrk's and everyone else's CPU from /proc."""
    threads = max(1, min(threads, conc))
    lua = LUA_HEADERS if headers_file else LUA_PLAIN
    cmd = ["wrk", f"-t{threads}", f"-c{conc}", f"-d{duration}s", "--timeout", "10s", "--latency"]
    cmd += ["-s", str(lua), url, "--", body_file, str(max_responses)]
    if headers_file:
        cmd.append(headers_file)
    env = {**os.environ, "HARNESS_LUA_DIR": str(HARNESS / "lua")}
    srv0 = run.cpu_by_pid(run.proc_tree(server_pid))
    sys0 = run.system_busy_seconds()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, env=env)
    wall = time.perf_counter() - started
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    sys1 = run.system_busy_seconds()
    pids1 = run.proc_tree(server_pid)
    srv1 = run.cpu_by_pid(pids1)
    srv_cpu = sum(v - srv0.get(k, 0.0) for k, v in srv1.items())
    wrk_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("WRKJSON ")]
    if p.returncode != 0 or not line:
        raise RuntimeError(f"wrk failed rc={p.returncode}: {p.stdout[-2000:]} {p.stderr[-2000:]}")
    w = json.loads(line[0][len("WRKJSON ") :])
    secs = w["duration_us"] / 1e6
    sys_cpu = sys1 - sys0
    requests = w["requests"]
    with open("/proc/loadavg") as f:
        loadavg = f.read().split()[:3]
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
        "server_cores": srv_cpu / wall if server_pid else None,
        "wrk_cores": wrk_cpu / wall,
        "machine_busy_cores": sys_cpu / wall,
        "other_cores": max(0.0, (sys_cpu - wrk_cpu - (srv_cpu if server_pid else 0)) / wall),
        "server_cpu_ms_per_req": (srv_cpu * 1e3 / requests) if server_pid and requests else None,
        "server_rss_mb": round(run.rss_mb(pids1), 1) if server_pid else None,
        "server_procs": len(pids1),
        "loadavg": loadavg,
    }


def run_target(
    target: str,
    port: int,
    path: str,
    body: str,
    *,
    model: str = "",
    host: str = "127.0.0.1",
    batch_path: str | None = None,
    batch_body: str | None = None,
    batch_rows: int = 100,
    batch_concurrency: int = 16,
    concurrency: Sequence[int] = (1, 16, 64),
    duration: int = 10,
    repeats: int = 1,
    rep_base: int = 0,
    warmup: int = 3,
    headers_file: str | None = None,
    server_pid: int | None = None,
    out: str | None = None,
    tag: str = "",
    extra: dict[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Check each body once, warm up at c=16, then every scenario `repeats` times.

    Scenarios: the single-record body at each concurrency, then the batch body (if given) at
    `batch_concurrency`. Each run appends one JSON line to `out`.
    """
    run.assert_loopback(host)
    base = f"http://{host}:{port}"
    scenarios = [("single", 1, f"{base}{path}", body, c) for c in concurrency]
    if batch_body:
        url = f"{base}{batch_path or path}"
        scenarios.append((f"batch{batch_rows}", batch_rows, url, batch_body, batch_concurrency))
    checks: dict[str, Any] = {}
    for name, _, url, body_file, _ in scenarios:
        if name not in checks:
            checks[name] = check_body(url, body_file, headers_file)
            if not 200 <= checks[name]["status"] < 300:
                raise RuntimeError(f"{target}: {name} body got {checks[name]}")
    print(f"[{target}/{model}] checks: " + json.dumps(checks)[:600], flush=True)
    if warmup:
        _, _, url, body_file, _ = scenarios[0]
        wrk_once(url, body_file, 16, warmup, headers_file=headers_file, server_pid=server_pid)
    results = []
    for rep in range(rep_base + 1, rep_base + repeats + 1):
        for name, rows, url, body_file, c in scenarios:
            r = wrk_once(
                url, body_file, c, duration, headers_file=headers_file, server_pid=server_pid
            )
            r.update(
                {
                    "target": target,
                    "model": model,
                    "tag": tag,
                    "scenario": name,
                    "rows_per_request": rows,
                    "rep": rep,
                    "url": url,
                    "rows_per_s": (r["requests"] - r["non2xx"]) * rows / r["duration_s"],
                    "body_file": os.path.basename(body_file),
                    "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    **(extra or {}),
                }
            )
            results.append(r)
            print(
                f"[{target}/{model}{'/' + tag if tag else ''}] rep{rep} {name:9s} c={c:<3d} "
                f"rps={r['rps']:8.1f} rows/s={r['rows_per_s']:9.1f} p50={r['p50_ms']:7.2f}ms "
                f"p90={r['p90_ms']:7.2f} p99={r['p99_ms']:7.2f} non2xx={r['non2xx']} "
                f"sockerr={r['socket_errors']} cores srv={r['server_cores'] or 0:.2f} "
                f"wrk={r['wrk_cores']:.2f} other={r['other_cores']:.2f} "
                f"srv_cpu/req={r['server_cpu_ms_per_req'] or 0:.2f}ms",
                flush=True,
            )
            if out:
                os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
                with open(out, "a") as f:
                    f.write(json.dumps(r) + "\n")
    return results, checks

"""Soak: the cluster of tests/cluster (three replicas in their own network namespaces behind
HAProxy, PostgreSQL and Redis across the bridge) held at 80% of its measured peak for ten
minutes. Does anything drift: errors, tail latency, memory, the log writer's lag?

    SHIPYARD_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \
    SHIPYARD_TEST_REDIS_URL=redis://127.0.0.1:6379/0 \
    sudo -E .venv/bin/python bench/soak/run.py [--minutes 10] [--share 0.8] [--clients 8]

1. peak: `--clients` closed-loop callers through the balancer for 20 s; requests/s answered.
2. soak: the same callers, paced (open loop) to `--share` of that peak for `--minutes`; each
   request's latency counts from when it was due, so a stall shows as latency, not as fewer
   requests. Every 5 s: every process's RSS (replica supervisors and workers, HAProxy) and
   each replica's `shipyard_log_writer_lag_seconds`.

Pass when: no error; the last minute's p99 within 1.5x of the first minute's; no process grew
its memory by 10% or more from the end of the first minute to the end; log lag below 10 s
throughout. Writes `bench/soak/results/<git describe>.json` and `.svg` (throughput, p99 and
memory over time) and prints a Markdown summary.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.cluster.conftest import (  # noqa: E402  (the cluster the tests build, reused)
    BALANCER_PORT,
    REPLICA_PORT,
    Cluster,
    _database,
    _model,
    _redis,
    wait_ready,
)
from tests.cluster.network import Lab, netns_unavailable  # noqa: E402

from shipyard.access import KeyStore  # noqa: E402
from shipyard.core import Settings  # noqa: E402
from shipyard.registry import Registry  # noqa: E402

RECORD = {"amount": 42.5, "age": 37}
SAMPLE_EVERY = 5.0


def build(folder: Path) -> tuple[Cluster, Any]:
    lab = Lab.create(folder)
    try:
        return _build(lab, folder)
    except BaseException:
        lab.close()
        raise


def _build(lab: Lab, folder: Path) -> tuple[Cluster, Any]:
    database_here, database_there, drop = _database(lab.gateway)
    redis_here, redis_there = _redis(lab.gateway)
    artifacts = folder / "artifacts"
    settings = Settings(
        home=folder / "tester", database_url=database_here, artifact_root=str(artifacts),
        redis_url=redis_here, auto_migrate=True, actor="soak",
    )  # fmt: skip
    with Registry.from_settings(settings) as registry:
        model, frame = _model(1)
        registry.register(model, name="fraud", sample=frame[["amount", "age"]].head(200))
        registry.deploy("fraud", 1)
        token = KeyStore(registry.database).create("predict", name="soak")[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    env.update(
        SHIPYARD_DATABASE_URL=database_there, SHIPYARD_REDIS_URL=redis_there,
        SHIPYARD_ARTIFACT_ROOT=str(artifacts), SHIPYARD_AUTO_MIGRATE="false",
    )  # fmt: skip
    replicas = [lab.host(f"r{i}") for i in (1, 2, 3)]
    url = lab.balancer(BALANCER_PORT, replicas, REPLICA_PORT, forwards=[5432, 6379])
    cluster = Cluster(
        lab, url, replicas, {}, lab.host("ops"), settings, env, folder, {"predict": token}
    )
    for host in replicas:
        cluster.start_server(host)
    return cluster, drop


def closed_loop(url: str, token: str, clients: int, seconds: float) -> float:
    done = [0] * clients
    end = time.monotonic() + seconds

    def caller(i: int) -> None:
        with httpx.Client(timeout=10) as client:
            while time.monotonic() < end:
                if call(client, url, token, i) is not None:
                    done[i] += 1

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / seconds


def call(client: httpx.Client, url: str, token: str, i: int) -> float | None:
    """One prediction; its latency in ms, or None when it failed."""
    started = time.perf_counter()
    try:
        answer = client.post(
            f"{url}/v1/models/fraud/predict", json={"instances": [RECORD]},
            headers={"Authorization": f"Bearer {token}", "X-Routing-Key": f"c{i}"},
        )  # fmt: skip
    except httpx.TransportError:
        return None
    return (time.perf_counter() - started) * 1e3 if answer.status_code == 200 else None


def soak(cluster: Cluster, rate: float, clients: int, seconds: float) -> dict[str, Any]:
    token = cluster.tokens["predict"]
    start = time.monotonic()
    records: list[list[tuple[float, float | None]]] = [[] for _ in range(clients)]
    interval = clients / rate

    def caller(i: int) -> None:
        due = start + i * interval / clients
        with httpx.Client(timeout=10) as client:
            while due < start + seconds:
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                ms = call(client, cluster.url, token, i)
                late = (time.monotonic() - due) * 1e3  # from when it was due
                records[i].append((due - start, None if ms is None else max(ms, late)))
                due += interval

    samples: list[dict[str, Any]] = []
    stop = threading.Event()

    def sampler() -> None:
        with httpx.Client(timeout=5) as client:
            while not stop.wait(SAMPLE_EVERY):
                samples.append(
                    {
                        "t": time.monotonic() - start,
                        "rss_mb": rss(cluster),
                        "lag_s": lags(client, cluster),
                    }
                )

    watcher = threading.Thread(target=sampler)
    watcher.start()
    threads = [threading.Thread(target=caller, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    watcher.join()
    rows = sorted(r for rs in records for r in rs)
    return {"requests": rows, "samples": samples}


def rss(cluster: Cluster) -> dict[str, float]:
    """Resident memory of every process in each replica's group, and HAProxy's, in MB."""
    out = {}
    groups = {name: p.popen.pid for name, p in cluster.servers.items()}
    if cluster.lab.haproxy is not None:
        groups["haproxy"] = cluster.lab.haproxy.pid
    for name, leader in groups.items():
        pids = subprocess.run(
            ["pgrep", "-g", str(leader)], capture_output=True, text=True
        ).stdout.split()
        for pid in pids:
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            kb = next(
                int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS")
            )
            role = "haproxy" if name == "haproxy" else (command[-1] or command[0]).decode()[-40:]
            out[f"{name}:{pid}:{role}"] = kb / 1024
    return out


def lags(client: httpx.Client, cluster: Cluster) -> dict[str, float]:
    out = {}
    for host in cluster.replicas:
        text = client.get(f"{cluster.replica_url(host)}/metrics").text
        for line in text.splitlines():
            if line.startswith("shipyard_log_writer_lag_seconds"):
                out[host.name] = float(line.split()[-1])
    return out


def summarise(peak: float, rate: float, run: dict[str, Any], minutes: float) -> dict[str, Any]:
    rows = run["requests"]
    errors = sum(1 for _, ms in rows if ms is None)
    by_minute: dict[int, list[float]] = {}
    for t, ms in rows:
        if ms is not None:
            by_minute.setdefault(int(t // 60), []).append(ms)
    minutes_seen = sorted(by_minute)
    p99 = {m: float(np.percentile(by_minute[m], 99)) for m in minutes_seen}
    samples = run["samples"]
    after_first = [s for s in samples if s["t"] >= 60] or samples
    first, last = after_first[0]["rss_mb"], samples[-1]["rss_mb"]
    growth = {k: (last[k] - first[k]) / first[k] for k in first if k in last and first[k] > 0}
    max_lag = max((max(s["lag_s"].values(), default=0.0) for s in samples), default=0.0)
    first_p99, last_p99 = p99[minutes_seen[0]], p99[minutes_seen[-1]]
    return {
        "peak_rps": round(peak, 1), "target_rps": round(rate, 1), "minutes": minutes,
        "requests": len(rows), "errors": errors,
        "achieved_rps": round((len(rows) - errors) / (minutes * 60), 1),
        "p99_ms_by_minute": {str(m): round(v, 2) for m, v in p99.items()},
        "p50_ms": round(float(np.percentile([ms for _, ms in rows if ms is not None], 50)), 2),
        "p99_ratio_last_first": round(last_p99 / first_p99, 3),
        "memory_growth": {k: round(v, 4) for k, v in growth.items()},
        "max_memory_growth": round(max(growth.values(), default=0.0), 4),
        "max_log_lag_s": round(max_lag, 2),
        "passed": errors == 0 and last_p99 <= 1.5 * first_p99
        and max(growth.values(), default=0.0) < 0.10 and max_lag < 10,
    }  # fmt: skip


def svg(run: dict[str, Any], summary: dict[str, Any]) -> str:
    """Three stacked charts: answered requests/s, p99 per 10 s, RSS per process."""
    rows = run["requests"]
    end = max((t for t, _ in rows), default=1.0)
    buckets = int(end // 10) + 1
    rps = [0.0] * buckets
    lat: list[list[float]] = [[] for _ in range(buckets)]
    for t, ms in rows:
        if ms is not None:
            rps[int(t // 10)] += 0.1
            lat[int(t // 10)].append(ms)
    p99 = [float(np.percentile(b, 99)) if b else 0.0 for b in lat]
    series = [("answered requests/s (per 10 s)", [(i * 10.0, v) for i, v in enumerate(rps)])]
    series.append(("p99 latency ms (per 10 s)", [(i * 10.0, v) for i, v in enumerate(p99)]))
    width, height, pad = 900, 180, 40
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{3 * height + 40}" font-family="sans-serif" font-size="11">'
    ]
    parts.append(
        f'<text x="{pad}" y="16" font-size="13">soak: {summary["target_rps"]} req/s for {summary["minutes"]} min, {summary["errors"]} errors, p99 ratio {summary["p99_ratio_last_first"]}, max memory growth {summary["max_memory_growth"]:.1%}</text>'
    )
    memory: dict[str, list[tuple[float, float]]] = {}
    for s in run["samples"]:
        for k, v in s["rss_mb"].items():
            memory.setdefault(k, []).append((s["t"], v))
    charts = [*series, ("RSS MB per process", None)]
    for n, (title, points) in enumerate(charts):
        top = 30 + n * height
        lines = [points] if points is not None else list(memory.values())
        values = [v for line in lines for _, v in line] or [1.0]
        high = max(values) * 1.1 or 1.0
        parts.append(f'<text x="{pad}" y="{top + 12}">{title} (max {max(values):.1f})</text>')
        parts.append(
            f'<rect x="{pad}" y="{top + 18}" width="{width - 2 * pad}" height="{height - 40}" fill="none" stroke="#ccc"/>'
        )
        for line in lines:
            coords = " ".join(
                f"{pad + (t / end) * (width - 2 * pad):.1f},{top + 18 + (height - 40) * (1 - v / high):.1f}"
                for t, v in line
            )
            parts.append(
                f'<polyline fill="none" stroke="#2563eb" stroke-width="1" points="{coords}"/>'
            )
    parts.append("</svg>")
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--share", type=float, default=0.8)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    why = netns_unavailable()
    if why is not None:
        sys.exit(f"the soak needs network namespaces: {why}")
    if not (
        os.environ.get("SHIPYARD_TEST_POSTGRES_URL") and os.environ.get("SHIPYARD_TEST_REDIS_URL")
    ):
        sys.exit("set SHIPYARD_TEST_POSTGRES_URL and SHIPYARD_TEST_REDIS_URL (as .ci/run does)")
    described = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="shipyard-soak-") as tmp:
        cluster, drop = build(Path(tmp))
        try:
            for host in cluster.replicas:
                wait_ready(cluster.replica_url(host), cluster.servers[host.name])
            peak = closed_loop(cluster.url, cluster.tokens["predict"], args.clients, 20)
            rate = peak * args.share
            run = soak(cluster, rate, args.clients, args.minutes * 60)
        finally:
            cluster.lab.close()
            drop()
    summary = {"code": described, **summarise(peak, rate, run, args.minutes)}
    out = ROOT / "bench" / "soak" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{described}.json").write_text(
        json.dumps({**summary, "samples": run["samples"]}, indent=2)
    )
    (out / f"{described}.svg").write_text(svg(run, summary))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

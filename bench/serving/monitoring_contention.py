"""Does reading monitoring reports starve the prediction path?

A `shipyard server --workers 2` serves the fraud model over a log of 200,000 predictions (a
few weeks of traffic, half of it labelled). wrk drives single-record predictions at c=16 for
10 s, twice: alone, and while 10 clients ask for monitoring reports in a loop (each waits what
a `Retry-After` says before asking again). The same is
run against any other checkout given with `--compare PATH` (e.g. a worktree of an older
commit), on the same home, so the two are measured side by side.

    .venv/bin/python bench/serving/monitoring_contention.py [--compare /tmp/shipyard-old]

Each server gets its own copy of the prepared home, so nothing one stores (a snapshot) makes
the other's reads cheaper. Prints one JSON line per (code, phase) and a table; writes nothing
into the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prepare(home: Path) -> dict[str, str]:
    """A home with the demo's fraud model serving and a few weeks of logged traffic."""
    from shipyard.access import KeyStore
    from shipyard.core import Settings
    from shipyard.demo import FEATURES, LABEL, transactions
    from shipyard.demo.training import train
    from shipyard.logstore import LogWriter
    from shipyard.registry import Registry

    settings = Settings(home=home, actor="bench")
    history = transactions(20_000, seed=7)
    with Registry.from_settings(settings) as registry:
        registry.register(
            train(history, {"C": 0.5}), name="fraud-detector", sample=history[FEATURES].iloc[:1000]
        )
        registry.deploy("fraud-detector", 1)
        keys = KeyStore(registry.database)
        tokens = {
            "predict": keys.create("predict", rate_per_second=1e6)[1],
            "read": keys.create("read", rate_per_second=1e6)[1],
        }
        traffic = transactions(200_000, seed=11)
        writer = LogWriter(settings.resolved_spool_dir, registry.artifacts, fsync_seconds=0)
        now = time.time()
        rng = np.random.default_rng(3)
        for start in range(0, len(traffic), 5_000):
            chunk = traffic.iloc[start : start + 5_000]
            ids = [
                f"{int((now - 21 * 86400 + (start + i) * 9) * 1000):012x}{os.urandom(10).hex()}"
                for i in range(len(chunk))
            ]
            scores = rng.random(len(chunk))
            writer.log_predictions(
                model="fraud-detector",
                version=1,
                variant="primary",
                ids=ids,
                inputs={c: chunk[c].to_numpy() for c in FEATURES},
                outputs={"score": scores, "label": (scores > 0.5).astype(int).tolist()},
                latency_ms=1.0,
                at=now - 21 * 86400 + start * 9,
            )
            labelled = ids[: len(ids) // 2]
            writer.log_labels(labelled, chunk[LABEL].iloc[: len(labelled)].tolist(), at=now)
            writer.flush()
        writer.close()
    (home / "request.json").write_text(
        json.dumps(
            {"instances": [json.loads(traffic[FEATURES].iloc[:1].to_json(orient="records"))[0]]}
        )
    )
    return tokens


def wrk(url: str, body: str, token: str, seconds: int) -> dict[str, Any]:
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(body)}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {token}"\n'
    )
    out = subprocess.run(
        ["wrk", "-t1", "-c16", f"-d{seconds}s", "--timeout", "10s", "--latency", "-s", str(script),
         f"{url}/v1/models/fraud-detector/predict"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    script.unlink()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    return {
        "req_per_s": rps,
        "non_2xx": int(errors.group(1)) if errors else 0,
        "p99_ms": float(p99.group(1)) * scale[p99.group(2)] if p99 else None,
    }


def readers(url: str, token: str, query: str, stop: threading.Event) -> Counter[int]:
    answers: Counter[int] = Counter()
    lock = threading.Lock()

    def loop() -> None:
        with httpx.Client(
            base_url=url, timeout=120, headers={"Authorization": f"Bearer {token}"}
        ) as client:
            while not stop.is_set():
                answer = client.get(f"/v1/models/fraud-detector/monitoring{query}")
                with lock:
                    answers[answer.status_code] += 1
                # a well-behaved client: it comes back when the server says
                stop.wait(float(answer.headers.get("retry-after", 0)))

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(10)]
    for thread in threads:
        thread.start()
    stop.wait()
    for thread in threads:
        thread.join(timeout=180)
    return answers


def measure(
    label: str, code: Path | None, prepared: Path, tokens: dict[str, str], query: str
) -> list[dict[str, Any]]:
    # a copy each: what one server stores (snapshots) must not make the other's reads cheaper
    home = Path(tempfile.mkdtemp(prefix="shipyard-contention-run-")) / "home"
    shutil.copytree(prepared, home)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    env["SHIPYARD_HOME"] = str(home)
    if code is not None:
        env["PYTHONPATH"] = str(code / "src")
    server = subprocess.Popen(
        [sys.executable, "-m", "shipyard", "server", "--port", str(port), "--workers", "2"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        body = (home / "request.json").read_text()
        wrk(url, body, tokens["predict"], 3)  # warm-up
        rows = [
            {"code": label, "phase": "predictions alone", **wrk(url, body, tokens["predict"], 10)}
        ]
        stop = threading.Event()
        result: dict[str, Counter[int]] = {}
        reading = threading.Thread(
            target=lambda: result.update(r=readers(url, tokens["read"], query, stop))
        )
        reading.start()
        time.sleep(1.0)
        loaded = wrk(url, body, tokens["predict"], 10)
        stop.set()
        reading.join()
        rows.append({"code": label, "phase": "with 10 monitoring readers", **loaded,
                     "monitoring_answers": dict(result["r"])})  # fmt: skip
        return rows
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--compare", type=Path, help="another checkout, measured the same way")
    parser.add_argument("--compare-query", default="?fresh=true", help="its monitoring query")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="shipyard-contention-"))
    tokens = prepare(home / "home")
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True
    ).stdout.strip()
    rows = []
    if args.compare is not None:
        other = subprocess.run(
            ["git", "-C", str(args.compare), "describe", "--always", "--dirty"],
            capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        rows += measure(other, args.compare, home / "home", tokens, args.compare_query)
    rows += measure(commit, None, home / "home", tokens, "")
    for row in rows:
        print(json.dumps(row))
    print("\n| code | phase | req/s | non-2xx | p99 ms | monitoring answers |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['code']} | {row['phase']} | {row['req_per_s']:,.0f} | {row['non_2xx']} | "
            f"{row['p99_ms']} | {row.get('monitoring_answers', '')} |"
        )


if __name__ == "__main__":
    main()

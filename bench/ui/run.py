#!/usr/bin/env python3
"""The dashboard on a model with 10M logged predictions: how long a page takes to open.

    .venv/bin/python bench/ui/run.py [--rows 10000000] [--chunk 1000000] [--json OUT]

1. A fresh home; the demo's fraud model trained on 50,000 synthetic transactions, registered
   and deployed.
2. The log: `shipyard.batch.score` over `--chunk` transactions, `rows / chunk` times (one batch
   job each), so the model has `--rows` logged predictions with their inputs, as a nightly
   batch job would leave them.
3. `Monitor.run` over them (1d x 7: every drift test, quality and data check) stores the
   snapshot: timed, as what a page that computed its figures on opening would pay, and what a
   monitoring tool without snapshots pays per look.
4. `shipyard server` on that home; a read key signs in at /ui/login; each page is fetched 20
   times over HTTP (after 2 untimed), and the monitoring page is opened 5 times in Chromium
   (Playwright, Debian's package) until its `load` event, charts drawn.
5. The same monitoring page for a window with no snapshot (6h), computed on the spot, once.

The machine is shared and noisy; the numbers name the code they measured (`git describe`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def _describe() -> str:
    return subprocess.run(
        ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, check=False
    ).stdout.strip()


def _timed(call, repeat: int, warm: int = 2) -> dict[str, float]:
    for _ in range(warm):
        call()
    spans = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        spans.append((time.perf_counter() - started) * 1000)
    spans.sort()
    return {
        "p50_ms": round(statistics.median(spans), 1),
        "p95_ms": round(spans[max(0, round(0.95 * len(spans)) - 1)], 1),
        "max_ms": round(spans[-1], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--chunk", type=int, default=1_000_000)
    parser.add_argument("--json", type=Path, default=Path("bench/ui/results/latest.json"))
    args = parser.parse_args()

    from shipyard.access import KeyStore
    from shipyard.batch import score
    from shipyard.core import Settings
    from shipyard.demo import FEATURES, LABEL, running_server, transactions
    from shipyard.demo.training import train
    from shipyard.logstore import LogReader
    from shipyard.monitoring import Monitor
    from shipyard.registry import Registry

    work = Path(tempfile.mkdtemp(prefix="bench-ui-"))
    home = work / "home"
    result: dict[str, object] = {"code": _describe(), "rows": args.rows}
    try:
        settings = Settings(home=home, database_url=None, artifact_root=None, auto_migrate=True)
        data = transactions(50_000, seed=11)
        model = train(data[[*FEATURES, LABEL]], {"C": 0.5, "max_iter": 2000})
        with Registry.from_settings(settings) as registry:
            registry.register(
                model, name="fraud-detector", sample=data[FEATURES].iloc[:2000],
                training_data=data[[*FEATURES, LABEL]], threshold=0.1,
            )  # fmt: skip
            registry.deploy("fraud-detector", 1)
            token = KeyStore(registry.database).create("read", name="bench")[1]

        chunk = transactions(args.chunk, seed=12)[FEATURES]
        source = work / "chunk.parquet"
        chunk.to_parquet(source, index=False)
        started = time.perf_counter()
        for job in range(args.rows // args.chunk):
            score(
                "fraud-detector:1", str(source), str(work / f"out-{job}.parquet"),
                settings=settings,
            )  # fmt: skip
        result["log_s"] = round(time.perf_counter() - started, 1)
        with Registry.from_settings(settings) as registry:
            logged = LogReader(registry.artifacts).predictions("fraud-detector").num_rows
            result["logged"] = logged
            started = time.perf_counter()
            Monitor.from_settings(settings, registry).run("fraud-detector", window="1d", periods=7)
            result["monitor_run_s"] = round(time.perf_counter() - started, 2)
        print(
            f"logged {logged:,} predictions in {result['log_s']} s; monitor run {result['monitor_run_s']} s",
            flush=True,
        )

        with (
            running_server(home, timeout=120) as url,
            httpx.Client(base_url=url, timeout=600) as http,
        ):
            signed = http.post("/ui/login", data={"key": token, "next": "/ui/models"})
            assert signed.status_code == 303, signed.text
            pages = {}
            for path in (
                "/ui/models",
                "/ui/models/fraud-detector",
                "/ui/models/fraud-detector/monitoring",
                "/ui/models/fraud-detector/retraining",
            ):

                def get(path: str = path) -> None:
                    answer = http.get(path)
                    assert answer.status_code == 200, (path, answer.status_code)

                pages[path] = _timed(get, 20)
                print(path, pages[path], flush=True)
            result["pages_http"] = pages
            started = time.perf_counter()
            computed = http.get("/ui/models/fraud-detector/monitoring?window=6h&periods=4")
            assert computed.status_code == 200
            result["no_snapshot_s"] = round(time.perf_counter() - started, 2)
            print(
                "no snapshot (6h x 4, computed on opening):",
                result["no_snapshot_s"],
                "s",
                flush=True,
            )
            result["browser"] = _browser(url, token)
            print("chromium load event:", result["browser"], flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def _browser(url: str, token: str) -> dict[str, float] | str:
    chromium = os.environ.get("SHIPYARD_TEST_CHROMIUM") or shutil.which("chromium")
    if chromium is None:
        return "no chromium"
    from playwright.sync_api import sync_playwright

    flags = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync"]  # fmt: skip
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=flags)
        page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        page.goto(url + "/ui/login")
        page.fill("#key", token)
        page.click("button[type=submit]")
        page.wait_for_url("**/ui/models")

        def open_monitoring() -> None:
            page.goto(url + "/ui/models/fraud-detector/monitoring", wait_until="load")
            page.locator("[data-chart] .uplot").first.wait_for()

        timings = _timed(open_monitoring, 5, warm=1)
        browser.close()
    return timings


if __name__ == "__main__":
    sys.exit(main())

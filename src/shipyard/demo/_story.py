"""`shipyard demo`: the running fraud example, end to end, on embedded defaults."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from rich.console import Console
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from shipyard.core import Settings
from shipyard.demo._data import FEATURES, LABEL, transactions
from shipyard.registry import Registry

__all__ = ["DemoResult", "run_demo"]

MODEL = "fraud-detector"


@dataclass
class DemoResult:
    """What the demo measured, for callers and tests."""

    version: int = 0
    runtime: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    single_latencies_ms: list[float] = field(default_factory=list)
    batch_rows_per_s: float = 0.0
    flagged: int = 0
    scored: int = 0
    bad_request_status: int = 0
    v2_status: int = 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _progress(console: Console) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def _train(console: Console, rows: int) -> tuple[Any, Any, Any, dict[str, float], float]:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import (
        average_precision_score,
        precision_score,
        recall_score,
        roc_auc_score,
    )
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    with _progress(console) as progress:
        task = progress.add_task("generating card transactions", total=2)
        data = transactions(rows, seed=7)
        progress.advance(task)
        cut = int(len(data) * 0.8)  # time-based split: train on the first 80% of the month
        train, test = data.iloc[:cut], data.iloc[cut:]
        numeric = [f for f in FEATURES if f != "merchant_category"]
        model = Pipeline(
            [
                (
                    "features",
                    ColumnTransformer(
                        [
                            (
                                "numeric",
                                make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
                                numeric,
                            ),
                            (
                                "category",
                                OneHotEncoder(handle_unknown="ignore"),
                                ["merchant_category"],
                            ),
                        ]
                    ),
                ),
                ("classifier", LogisticRegression(max_iter=2000, C=0.5)),
            ]
        )
        progress.update(task, description="training a logistic-regression pipeline")
        model.fit(train[FEATURES], train[LABEL])
        progress.advance(task)
    scores = model.predict_proba(test[FEATURES])[:, 1]
    # the threshold a fraud team would pick: flag the riskiest 2% of transactions
    threshold = float(np.quantile(scores, 0.98))
    flagged = scores >= threshold
    metrics = {
        "auc": round(float(roc_auc_score(test[LABEL], scores)), 4),
        "average_precision": round(float(average_precision_score(test[LABEL], scores)), 4),
        "precision": round(float(precision_score(test[LABEL], flagged, zero_division=0)), 4),
        "recall": round(float(recall_score(test[LABEL], flagged)), 4),
    }
    return model, train, test, metrics, round(threshold, 6)


def _embedded_env(home: Path) -> dict[str, str]:
    """The environment with only the demo's home: no database or artifact root from outside."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    return {**env, "SHIPYARD_HOME": str(home)}


def _start_server(home: Path, port: int) -> subprocess.Popen[bytes]:
    with (home / "server.log").open("ab") as log:  # the child keeps its own handle
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "shipyard",
                "server",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            env=_embedded_env(home),
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


def _wait_ready(
    client: httpx.Client, server: subprocess.Popen[bytes], log: Path, timeout: float = 60.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited during start-up:\n{log.read_text()[-4000:]}")
        try:
            if client.get("/v2/health/ready").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the server did not become ready within a minute")


def _records(frame: Any) -> list[dict[str, Any]]:
    out = (
        frame[FEATURES]
        .astype(object)
        .where(frame[FEATURES].notna(), None)
        .to_dict(orient="records")
    )
    return list(out)


def run_demo(
    home: Path, *, rows: int = 60_000, requests: int = 500, console: Console | None = None
) -> DemoResult:
    """Train, register, serve and call the fraud model; prints the story, returns the numbers."""
    console = console or Console()
    result = DemoResult()
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    # embedded defaults whatever the environment says: the demo never writes to a shared database
    settings = Settings(home=home, database_url=None, artifact_root=None, auto_migrate=True)
    console.print(
        Panel.fit(
            "[bold]shipyard demo[/]: a fraud model from training to a live prediction API\n"
            f"state in {home} (SQLite + local files)",
            border_style="cyan",
        )
    )

    model, train, test, metrics, threshold = _train(console, rows)
    result.metrics = metrics
    console.print(
        f"[green]✓[/] trained on {len(train):,} transactions ({train[LABEL].mean():.2%} fraud); "
        f"holdout AUC {metrics['auc']:.3f}, precision {metrics['precision']:.2f} / recall "
        f"{metrics['recall']:.2f} at threshold {threshold:.4f}"
    )

    started = time.perf_counter()
    with Registry.from_settings(settings) as registry:
        version = registry.register(
            model,
            name=MODEL,
            sample=train[FEATURES],
            training_data=train[[*FEATURES, LABEL]],
            metrics=metrics,
            params={"classifier": "LogisticRegression", "C": 0.5, "max_iter": 2000},
            tags={"team": "payments-risk", "dataset": "synthetic-card-transactions"},
            description="Logistic regression on 11 transaction and customer features",
            purpose="Flag card transactions for review before authorisation",
            threshold=threshold,
            aliases=["production"],
        )
    result.version, result.runtime = version.version, version.runtime
    console.print(
        f"[green]✓[/] registered [bold]{version.ref}[/] in {time.perf_counter() - started:.1f}s: "
        f"{version.flavour} pipeline, signature of {len(version.signature.columns)} columns, "
        f"serves on [bold]{version.runtime}[/], alias production → {version.version}"
    )

    port = _free_port()
    server = _start_server(home, port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10.0) as client:
            with console.status("starting the prediction server"):
                _wait_ready(client, server, home / "server.log")
            console.print(f"[green]✓[/] server ready on http://127.0.0.1:{port} (docs at /docs)")
            _call_server(client, test, result, console, requests)
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    _summary(console, result, version.ref)
    return result


def _call_server(
    client: httpx.Client, test: Any, result: DemoResult, console: Console, requests: int
) -> None:
    records = _records(test.iloc[:requests])
    example = None
    with _progress(console) as progress:
        task = progress.add_task("scoring single transactions over HTTP", total=len(records))
        for record in records:
            t0 = time.perf_counter()
            response = client.post(f"/v1/models/{MODEL}/predict", json={"instances": [record]})
            result.single_latencies_ms.append((time.perf_counter() - t0) * 1e3)
            response.raise_for_status()
            body = response.json()
            example = example or (record, body)
            result.flagged += int(body["predictions"][0]["label"] == 1)
            result.scored += 1
            progress.advance(task)
    batch = _records(test.iloc[requests : requests + 1000])
    t0 = time.perf_counter()
    for i in range(0, len(batch), 100):
        client.post(
            f"/v1/models/{MODEL}/predict", json={"instances": batch[i : i + 100]}
        ).raise_for_status()
    result.batch_rows_per_s = len(batch) / (time.perf_counter() - t0)

    assert example is not None
    record, body = example
    console.print(
        Panel.fit(
            f"POST /v1/models/{MODEL}/predict\n"
            f"[dim]{_short(record)}[/]\n→ {body['predictions'][0]} (version {body['version']}, "
            f"id {body['prediction_ids'][0][:12]}…)",
            title="one prediction",
            border_style="green",
        )
    )

    v2 = client.post(
        f"/v2/models/{MODEL}/infer",
        json={
            "inputs": [
                {"name": k, "shape": [1], "datatype": _v2_type(v), "data": [v]}
                for k, v in record.items()
            ]
        },
    )
    result.v2_status = v2.status_code
    score = next(o for o in v2.json()["outputs"] if o["name"] == "score")["data"][0]
    console.print(
        f"[green]✓[/] Open Inference Protocol (KServe V2) /v2/models/{MODEL}/infer → score {score:.6f}"
    )

    bad = dict(record, transaction_amount="a lot")
    bad.pop("hour_of_day")
    response = client.post(f"/v1/models/{MODEL}/predict", json={"instances": [bad]})
    result.bad_request_status = response.status_code
    console.print(
        f"[green]✓[/] a malformed transaction is refused with {response.status_code}: "
        f"[italic]{response.json()['error']['message']}[/]"
    )


def _v2_type(value: Any) -> str:
    if isinstance(value, str):
        return "BYTES"
    if isinstance(value, int):
        return "INT64"
    return "FP64"


def _short(record: dict[str, Any]) -> str:
    keys = [
        "transaction_amount",
        "merchant_category",
        "hour_of_day",
        "distance_from_home_km",
        "device_risk_score",
    ]
    return ", ".join(f"{k}={record[k]}" for k in keys) + ", …"


def _summary(console: Console, result: DemoResult, ref: str) -> None:
    latencies = np.array(result.single_latencies_ms)
    table = Table(title=f"{ref} in production", show_header=False, border_style="cyan")
    table.add_row("serving runtime", result.runtime)
    table.add_row(
        "holdout AUC / average precision",
        f"{result.metrics['auc']:.3f} / {result.metrics['average_precision']:.3f}",
    )
    table.add_row("single-record requests", f"{result.scored:,}")
    table.add_row(
        "round-trip latency p50 / p95 / p99",
        " / ".join(f"{np.percentile(latencies, q):.2f} ms" for q in (50, 95, 99)),
    )
    table.add_row("flagged for review", f"{result.flagged} of {result.scored}")
    table.add_row("100-record batches", f"{result.batch_rows_per_s:,.0f} rows/s")
    console.print(table)

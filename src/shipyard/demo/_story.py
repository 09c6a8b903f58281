"""`shipyard demo`: the running fraud example, end to end, on embedded defaults.

Train a champion and a challenger, register both, put the champion in production behind API
keys, call it over HTTP, canary the challenger on 10% of customers (sticky), send the labels
that arrive later, show the guard rails (401/403/422/429/413), roll back, and read the
prediction log back from Parquet.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
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

from shipyard.access import KeyStore
from shipyard.client import Client
from shipyard.core import Settings
from shipyard.demo._data import FEATURES, LABEL, transactions
from shipyard.demo._features import FeaturesResult, feature_store_act
from shipyard.demo._governance import GovernanceResult, governance_act
from shipyard.demo._loop import SPEC, LoopResult, close_the_loop
from shipyard.demo._replay import MonthResult, replay_month
from shipyard.demo._server import running_server
from shipyard.demo._train import Trained, train_boosted, train_logistic
from shipyard.logstore import LogReader
from shipyard.registry import Registry

__all__ = ["DemoResult", "run_demo"]

MODEL = "fraud-detector"
CANARY_PERCENT = 10.0
KPIS = {
    "fraud_blocked_usd": "sum(transaction_amount) where label = 1 and prediction = 1",
    "fraud_missed_usd": "sum(transaction_amount) where label = 1 and prediction = 0",
    "flagged_for_review": "count(*) where prediction = 1",
    "approval_rate": "rate where prediction = 0",
    "false_alarm_rate": "rate where label = 0 and prediction = 1",
}
# groups whose outcomes monitoring and the model card compare (bias testing)
FAIRNESS = {
    "attributes": [{"name": "customer_age_band", "column": "customer_age", "edges": [30, 45, 65]}]
}


# what the team writes on the model card (the rest of the card comes from the records)
CARD = {
    "owner": "payments-risk@example.com",
    "intended_use": "flag card transactions for a fraud analyst to review before authorisation",
    "out_of_scope": "declining a payment without a person's review",
    "limitations": ["trained on synthetic transactions; retrain on your own before any real use"],
}


def project_file() -> str:
    """The demo's shipyard.yaml: how the model retrains (`SPEC`), its KPIs, the groups its
    fairness is measured over and its model card's text, as a team would declare them beside
    the model."""
    import yaml

    spec = SPEC(MODEL).model_dump(mode="json", exclude_defaults=True, exclude={"name"})
    body = {"models": {MODEL: {**spec, "kpis": KPIS, "fairness": FAIRNESS, "card": CARD}}}
    header = (
        "# what the demo declares beside its model; `shipyard server`, the worker and\n"
        "# `shipyard pipeline run` read it (SHIPYARD_CONFIG points at this file)\n"
    )
    return header + yaml.safe_dump(body, sort_keys=False)


@dataclass
class DemoResult:
    """What the demo measured, for callers and tests."""

    version: int = 0
    challenger: int = 0
    dashboard_key: str = ""
    runtime: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    single_latencies_ms: list[float] = field(default_factory=list)
    batch_rows_per_s: float = 0.0
    flagged: int = 0
    scored: int = 0
    canary_share: float = 0.0
    sticky: bool = False
    labels_accepted: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    after_rollback: set[int] = field(default_factory=set)
    partner_answered: int = 0
    month: MonthResult | None = None
    loop: LoopResult | None = None
    logged: dict[str, int] = field(default_factory=dict)
    bad_request_status: int = 0
    v2_status: int = 0
    features: FeaturesResult | None = None
    governance: GovernanceResult | None = None


def _progress(console: Console) -> Progress:
    return Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=console, transient=True,
    )  # fmt: skip


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    present = frame[FEATURES].astype(object).where(frame[FEATURES].notna(), None)
    return [{str(k): v for k, v in row.items()} for row in present.to_dict(orient="records")]


def run_demo(
    home: Path,
    *,
    rows: int = 60_000,
    requests: int = 500,
    month_rows: int = 8000,
    console: Console | None = None,
) -> DemoResult:
    """Play the fraud story; prints it and returns the numbers."""
    console = console or Console()
    result = DemoResult()
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    config = home / "shipyard.yaml"
    config.write_text(project_file())
    # embedded defaults whatever the environment says: the demo never writes to a shared database
    settings = Settings(
        home=home,
        database_url=None,
        artifact_root=None,
        auto_migrate=True,
        actor="demo",
        config=config,
    )
    console.print(Panel.fit(
        "[bold]shipyard demo[/]: a fraud model from training to a guarded, canaried prediction API\n"
        f"state in {home} (SQLite + local files)", border_style="cyan",
    ))  # fmt: skip

    with _progress(console) as progress:
        task = progress.add_task("generating card transactions", total=3)
        data = transactions(rows, seed=7)
        cut = int(len(data) * 0.8)  # time-based split: train on the first 80% of the month
        train, test = data.iloc[:cut], data.iloc[cut:]
        progress.update(task, advance=1, description="training the champion (logistic regression)")
        champion = train_logistic(train, test)
        progress.update(task, advance=1, description="training the challenger (boosted trees)")
        challenger = train_boosted(train, test)
        progress.advance(task)
    result.metrics = champion.metrics
    console.print(
        f"[green]✓[/] trained on {len(train):,} transactions ({train[LABEL].mean():.2%} fraud): champion AUC "
        f"{champion.metrics['auc']:.3f}, challenger AUC {challenger.metrics['auc']:.3f} on the last week"
    )

    with Registry.from_settings(settings) as registry:
        started = time.perf_counter()
        v1 = _register(registry, champion, train)
        v2 = _register(registry, challenger, train)
        registry.deploy(MODEL, v1.version, reason="first release")
        keys = KeyStore(registry.database, actor="demo")
        _, checkout = keys.create(
            "predict", model=MODEL, rate_per_second=5000, name="checkout-service"
        )
        _, slow = keys.create(
            "predict", model=MODEL, rate_per_second=5, burst=5, name="partner-sandbox"
        )
        _, ops = keys.create("write", name="ml-ops")
        _, result.dashboard_key = keys.create("admin", name="dashboard")
    result.version, result.challenger, result.runtime = v1.version, v2.version, v1.runtime
    console.print(
        f"[green]✓[/] registered {v1.ref} ({v1.runtime}) and {v2.ref} ({v2.runtime}) in "
        f"{time.perf_counter() - started:.1f}s; deployed {v1.ref} to all traffic; API keys for "
        "checkout (predict, 5000/s), a partner sandbox (5/s) and ml-ops (write)"
    )

    with running_server(
        home,
        SHIPYARD_LOG_FLUSH_SECONDS="1",
        SHIPYARD_REFRESH_SECONDS="0.5",
        SHIPYARD_CONFIG=str(config),
    ) as url:
        console.print(f"[green]✓[/] server ready on {url} (docs at /docs, metrics at /metrics)")
        with (
            Client(url, checkout, timeout=5.0) as client,
            httpx.Client(base_url=url, timeout=10.0) as http,
        ):
            answered = _serve_champion(client, http, checkout, test, result, console, requests)
            answered += _canary(client, http, ops, test, result, console, v2.version)
            _feedback(client, answered, test, result, console)
            _guard_rails(http, checkout, slow, test, result, console)
            _rollback(client, http, ops, test, result, console)
        result.features = feature_store_act(settings, data, cut, url, console)
        time.sleep(1.5)  # one log flush interval, then the Parquet segments are there
    _read_logs(settings, result, console)
    console.print(
        Panel.fit(
            "[bold]a month in production[/]: four weeks replayed into the log, then the monitor",
            border_style="cyan",
        )
    )
    # the month ends two weeks ago, so the loop's weeks 5 and 6 end today
    end_of_week4 = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(
        days=14
    )
    # the story tells each alert in its place; their log lines would interrupt it
    with _quiet("shipyard.monitoring"):
        result.month = replay_month(
            settings, MODEL, v1.version, end=end_of_week4, rows_per_week=month_rows, console=console
        )
        console.print(Panel.fit(
            "[bold]the closed loop[/]: the accuracy alert triggers a retrain; validated, canaried, decided on live labels",
            border_style="cyan",
        ))  # fmt: skip
        result.loop = close_the_loop(
            settings, MODEL, end_of_week4=end_of_week4, rows_per_week=month_rows, console=console
        )
    serving = result.loop.champion_after if result.loop.champion_after is not None else v1.version
    result.governance = governance_act(settings, f"{MODEL}:{serving}", console)
    _summary(console, result, f"{MODEL}:{serving}")
    console.print(
        "[bold]the dashboard[/]: `shipyard demo --serve` keeps a server up on the demo's state, "
        f"or run `SHIPYARD_HOME={home} SHIPYARD_CONFIG={config} shipyard server` and open "
        "http://127.0.0.1:8000/ui; sign in with the demo's admin key:\n"
        f"  {result.dashboard_key}"
    )
    return result


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """Log records of `logger` below ERROR are not shown while the block runs."""
    target = logging.getLogger(logger)
    before = target.level
    target.setLevel(logging.ERROR)
    try:
        yield
    finally:
        target.setLevel(before)


def _register(registry: Registry, trained: Trained, train: pd.DataFrame) -> Any:
    return registry.register(
        trained.model,
        name=MODEL,
        sample=train[FEATURES].iloc[:2000],
        training_data=train[[*FEATURES, LABEL]],
        metrics=trained.metrics,
        params=trained.params,
        tags={"team": "payments-risk", "dataset": "synthetic-card-transactions"},
        description=trained.description,
        purpose="Flag card transactions for review before authorisation",
        threshold=trained.threshold,
    )


def _serve_champion(
    client: Client,
    http: httpx.Client,
    key: str,
    test: pd.DataFrame,
    result: DemoResult,
    console: Console,
    requests: int,
) -> list[tuple[str, int]]:
    """Single-record calls through the Python client, then 100-record batches."""
    rows = test.iloc[:requests]
    answered: list[tuple[str, int]] = []
    example = None
    with _progress(console) as progress:
        task = progress.add_task("scoring single transactions over HTTP", total=len(rows))
        for i, record in enumerate(_records(rows)):
            t0 = time.perf_counter()
            answer = client.predict(MODEL, record, routing_key=str(rows["customer_id"].iloc[i]))
            result.single_latencies_ms.append((time.perf_counter() - t0) * 1e3)
            example = example or (record, answer)
            result.flagged += int(answer.first["label"] == 1)
            result.scored += 1
            answered.append((answer.prediction_ids[0], int(rows[LABEL].iloc[i])))
            progress.advance(task)
    batch = test.iloc[requests : requests + 1000]
    headers = {"Authorization": f"Bearer {key}"}
    t0 = time.perf_counter()
    for start in range(0, len(batch), 100):
        part = batch.iloc[start : start + 100]
        response = http.post(
            f"/v1/models/{MODEL}/predict", json={"instances": _records(part)}, headers=headers
        )
        response.raise_for_status()
        answered += list(
            zip(response.json()["prediction_ids"], part[LABEL].astype(int), strict=True)
        )
    result.batch_rows_per_s = len(batch) / (time.perf_counter() - t0)
    assert example is not None
    record, answer = example
    console.print(Panel.fit(
        f"POST /v1/models/{MODEL}/predict  (Authorization: Bearer sy_…)\n[dim]{_short(record)}[/]\n"
        f"→ {answer.first} (version {answer.version}, {answer.variant}, id {answer.prediction_ids[0][:12]}…)",
        title="one prediction", border_style="green",
    ))  # fmt: skip
    v2 = http.post(
        f"/v2/models/{MODEL}/infer",
        json={
            "inputs": [
                {"name": k, "shape": [1], "datatype": _v2_type(v), "data": [v]}
                for k, v in record.items()
            ]
        },
        headers=headers,
    )
    result.v2_status = v2.status_code
    score = next(o for o in v2.json()["outputs"] if o["name"] == "score")["data"][0]
    console.print(
        f"[green]✓[/] the same over the Open Inference Protocol (KServe V2) → score {score:.6f}"
    )
    return answered


def _wait_for(http: httpx.Client, ops: str, revision: int) -> None:
    """Until the server serves `revision` with every version loaded (it re-reads every 0.5 s)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.2)
        serving = http.get("/v1/serving", headers={"Authorization": f"Bearer {ops}"}).json()
        if serving["models"][MODEL]["revision"] >= revision and serving["ready"]:
            return


def _canary(
    client: Client,
    http: httpx.Client,
    ops: str,
    test: pd.DataFrame,
    result: DemoResult,
    console: Console,
    challenger: int,
) -> list[tuple[str, int]]:
    """Canary the challenger on 10% of customers, sticky by customer id."""
    response = http.post(
        f"/v1/models/{MODEL}/deployment",
        json={
            "version": challenger,
            "canary": CANARY_PERCENT,
            "routing_field": "customer_id",
            "reason": "challenger canary",
        },
        headers={"Authorization": f"Bearer {ops}"},
    )
    response.raise_for_status()
    deployment = response.json()
    _wait_for(http, ops, deployment["revision"])
    rows = test.iloc[-2000:]
    customers = rows["customer_id"].tolist()
    served_by: dict[str, set[int]] = {}
    answered: list[tuple[str, int]] = []
    variants: Counter[str] = Counter()
    with _progress(console) as progress:
        task = progress.add_task("traffic during the canary", total=len(rows))
        for i, record in enumerate(_records(rows)):
            answer = client.predict(MODEL, record, routing_key=customers[i])
            variants[answer.variant or ""] += 1
            served_by.setdefault(customers[i], set()).add(int(answer.version or 0))
            answered.append((answer.prediction_ids[0], int(rows[LABEL].iloc[i])))
            progress.advance(task)
    result.canary_share = variants["canary"] / sum(variants.values())
    repeat = [c for c, v in served_by.items() if len(v) == 1]
    result.sticky = len(repeat) == len(served_by)
    console.print(
        f"[green]✓[/] canary {MODEL}:{challenger} at {CANARY_PERCENT:g}% by customer_id: it answered "
        f"{result.canary_share:.1%} of {sum(variants.values()):,} requests; every one of "
        f"{len(served_by):,} customers stayed on one version: {result.sticky}"
    )
    return answered


def _feedback(
    client: Client,
    answered: list[tuple[str, int]],
    test: pd.DataFrame,
    result: DemoResult,
    console: Console,
) -> None:
    """The chargebacks arrive: send the true labels for what was scored."""
    labels = [{"prediction_id": pid, "label": label} for pid, label in answered]
    accepted = 0
    for start in range(0, len(labels), 500):
        accepted += int(client.feedback(labels[start : start + 500])["accepted"])
    result.labels_accepted = accepted
    frauds = sum(label for _, label in answered)
    console.print(
        f"[green]✓[/] {accepted:,} labels sent back via POST /v1/feedback ({frauds} confirmed frauds)"
    )


def _guard_rails(
    http: httpx.Client,
    key: str,
    slow: str,
    test: pd.DataFrame,
    result: DemoResult,
    console: Console,
) -> None:
    record = _records(test.iloc[:1])[0]
    path = f"/v1/models/{MODEL}/predict"
    bearer = {"Authorization": f"Bearer {key}"}
    statuses: dict[str, int] = {}
    statuses["no key"] = http.post(path, json={"instances": [record]}).status_code
    statuses["predict key on /v1/keys"] = http.get("/v1/keys", headers=bearer).status_code
    bad = dict(record, transaction_amount="a lot")
    bad.pop("hour_of_day")
    response = http.post(path, json={"instances": [bad]}, headers=bearer)
    statuses["malformed transaction"] = response.status_code
    result.bad_request_status = response.status_code
    message = response.json()["error"]["message"]
    codes = [
        http.post(path, json={"instances": [record]}, headers={"Authorization": f"Bearer {slow}"})
        for _ in range(8)
    ]
    statuses["partner over 5/s"] = codes[-1].status_code
    result.partner_answered = sum(c.status_code == 200 for c in codes)
    retry_after = codes[-1].headers.get("retry-after")
    statuses["20,000 records in one request"] = http.post(
        path, json={"instances": [record] * 20_000}, headers=bearer
    ).status_code
    result.statuses = statuses
    table = Table("request", "status", title="guard rails", border_style="yellow")
    for what, status in statuses.items():
        table.add_row(what, str(status))
    console.print(table)
    console.print(f"  422 says: [italic]{message}[/]")
    console.print(f"  429 carries Retry-After: {retry_after} s")


def _rollback(
    client: Client,
    http: httpx.Client,
    ops: str,
    test: pd.DataFrame,
    result: DemoResult,
    console: Console,
) -> None:
    response = http.post(
        f"/v1/models/{MODEL}/rollback",
        json={"reason": "demo: back to the champion"},
        headers={"Authorization": f"Bearer {ops}"},
    )
    response.raise_for_status()
    _wait_for(http, ops, response.json()["revision"])
    rows = test.iloc[-300:]
    for i, record in enumerate(_records(rows)):
        result.after_rollback.add(
            int(
                client.predict(MODEL, record, routing_key=str(rows["customer_id"].iloc[i])).version
                or 0
            )
        )
    console.print(
        f"[green]✓[/] rolled back in one step (revision {response.json()['revision']}): "
        f"{response.json()['variants'][0]['version']} takes all traffic again; versions seen after: "
        f"{sorted(result.after_rollback)}"
    )


def _read_logs(settings: Settings, result: DemoResult, console: Console) -> None:
    with Registry.from_settings(settings) as registry:
        reader = LogReader(registry.artifacts)
        predictions = reader.predictions(MODEL)
        labels = reader.labels()
    variants = (
        Counter(predictions.column("variant").to_pylist()) if predictions.num_rows else Counter()
    )
    result.logged = {"predictions": predictions.num_rows, "labels": labels.num_rows, **variants}
    console.print(
        f"[green]✓[/] prediction log: {predictions.num_rows:,} predictions "
        f"({', '.join(f'{k} {v:,}' for k, v in sorted(variants.items()))}) and {labels.num_rows:,} labels "
        "in Parquet under artifacts/logs/, read back with DuckDB"
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
    table.add_row(f"first release ({MODEL}:{result.version}) runtime", result.runtime)
    table.add_row(
        f"{MODEL}:{result.version} holdout AUC / average precision",
        f"{result.metrics['auc']:.3f} / {result.metrics['average_precision']:.3f}",
    )
    table.add_row("single-record requests (Python client)", f"{result.scored:,}")
    table.add_row(
        "round-trip latency p50 / p95 / p99",
        " / ".join(f"{np.percentile(latencies, q):.2f} ms" for q in (50, 95, 99)),
    )
    table.add_row("flagged for review", f"{result.flagged} of {result.scored}")
    table.add_row("100-record batches", f"{result.batch_rows_per_s:,.0f} rows/s")
    table.add_row(
        "canary share (target 10%)", f"{result.canary_share:.1%}, sticky: {result.sticky}"
    )
    table.add_row("labels accepted", f"{result.labels_accepted:,}")
    table.add_row(
        "logged predictions / labels",
        f"{result.logged.get('predictions', 0):,} / {result.logged.get('labels', 0):,}",
    )
    if result.month is not None:
        table.add_row(
            "caught in the month",
            f"drift in {', '.join(result.month.drifted) or '-'}; alerts: {len(result.month.alerts)}",
        )
    if result.loop is not None and result.loop.weekly_accuracy:
        weekly = result.loop.weekly_accuracy
        table.add_row(
            "closed loop",
            f"candidate {result.loop.candidate} {result.loop.status}; accuracy week 4 {weekly[3]:.1%} -> week 6 {weekly[-1]:.1%}"
            if len(weekly) >= 6 and weekly[3] is not None and weekly[-1] is not None
            else f"candidate {result.loop.candidate} {result.loop.status}",
        )
    if result.governance is not None:
        table.add_row(
            "reproduced / maturity",
            f"{result.governance.reproduced}; level {result.governance.maturity}",
        )
    console.print(table)

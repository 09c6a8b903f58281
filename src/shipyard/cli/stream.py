"""`shipyard stream`: score a Redis stream or a Kafka topic as a consumer group."""

from __future__ import annotations

import signal
import threading
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import typer

from shipyard.cli._common import console, emit_json, err_console, json_flag, open_registry, settings
from shipyard.core.durations import parse_duration
from shipyard.core.errors import InvalidInput
from shipyard.streaming import (
    EventAlerts,
    EventRule,
    StreamConsumer,
    StreamMetrics,
    event_alerts,
    open_sink,
    open_source,
)

__all__ = ["app", "dead_letter_url"]

app = typer.Typer(no_args_is_help=True, help="Score events from Redis Streams or Kafka.")


def dead_letter_url(source: str) -> str:
    """Beside the source: `STREAM:dead-letter` on Redis, `TOPIC.dead-letter` on Kafka."""
    split = urlsplit(source)
    name = split.path.lstrip("/")
    suffix = ":dead-letter" if split.scheme.startswith("redis") else ".dead-letter"
    return urlunsplit((split.scheme, split.netloc, f"/{name}{suffix}", split.query, ""))


@app.command("run")
def run(
    ctx: typer.Context,
    ref: str = typer.Argument(
        ..., help="NAME (its serving alias, followed), NAME:VERSION or NAME:ALIAS"
    ),
    source: str = typer.Option(
        ..., "--source", "-s", help="redis://HOST:PORT/STREAM or kafka://BROKER:PORT/TOPIC"
    ),
    sink: str = typer.Option(
        ...,
        "--sink",
        help="redis://HOST:PORT/STREAM, kafka://BROKER:PORT/TOPIC, or a folder (path or fsspec "
        "URL) for Parquet files",
    ),
    group: str | None = typer.Option(
        None,
        "--group",
        "-g",
        help="consumer group (default shipyard-NAME); consumers of one group share the events",
    ),
    consumer: str | None = typer.Option(
        None, "--consumer", help="this consumer's name in a Redis group (default HOST-PID)"
    ),
    dead_letter: str | None = typer.Option(
        None,
        "--dead-letter",
        help="where events that cannot be scored go (default: STREAM:dead-letter / TOPIC.dead-letter)",
    ),
    batch_size: int = typer.Option(
        500, "--batch-size", min=1, max=100_000, help="most events scored together"
    ),
    max_wait_ms: float = typer.Option(
        100.0, "--max-wait-ms", min=0.0, max=60_000.0, help="longest wait for a batch to fill"
    ),
    commit_every: int = typer.Option(
        5_000,
        "--commit-every",
        min=1,
        max=1_000_000,
        help="events logged (one block) and committed together, at most",
    ),
    commit_wait_ms: float = typer.Option(
        200.0,
        "--commit-wait-ms",
        min=0.0,
        max=600_000.0,
        help="longest a delivered event waits to be logged and committed",
    ),
    id_field: str = typer.Option(
        "event_id",
        "--id-field",
        help="the event field holding its id (else its position in the stream)",
    ),
    keep: list[str] | None = typer.Option(
        None,
        "--keep",
        help="an event field copied into each result (repeat it); default: every field the model does not take",
    ),
    alert: str | None = typer.Option(
        None, "--alert", help="raise an alert when a scored event matches, e.g. 'score > 0.9'"
    ),
    entity_field: str | None = typer.Option(
        None,
        "--entity-field",
        help="the event field an alert is about (a device, a customer); default: each event",
    ),
    cooldown: str = typer.Option(
        "10m", "--cooldown", help="after an alert, how long the same entity raises no other"
    ),
    webhook: list[str] | None = typer.Option(
        None, "--webhook", help="post each alert to this URL (repeat it)"
    ),
    claim_after: str = typer.Option(
        "30s", "--claim-after", help="Redis: take over events another consumer has held this long"
    ),
    start: str = typer.Option(
        "earliest", "--start", help="where a new group starts: earliest or latest"
    ),
    metrics_port: int | None = typer.Option(
        None, "--metrics-port", min=1, max=65535, help="serve Prometheus metrics on this port"
    ),
    metrics_host: str = typer.Option(
        "127.0.0.1", "--metrics-host", help="address of the metrics port"
    ),
    no_log: bool = typer.Option(
        False, "--no-log", help="do not log the predictions for monitoring"
    ),
    max_events: int | None = typer.Option(
        None, "--max-events", min=1, help="stop after this many events"
    ),
    idle_exit: float | None = typer.Option(
        None, "--idle-exit", min=0.0, help="stop once no event came for this many seconds"
    ),
    as_json: bool = json_flag("what the consumer did when it stops"),
) -> None:
    """Score events as they arrive, until SIGTERM (or Ctrl-C): the batch in hand is finished
    and committed first. Results are committed only once written; a consumer killed halfway
    leaves its events for the next, which scores them once."""
    if start not in ("earliest", "latest"):
        raise InvalidInput(f"--start is earliest or latest, not {start!r}")
    config = settings(ctx)
    name = ref.split(":")[0]
    group = group or f"shipyard-{name}"
    rule = EventRule.parse(alert) if alert else None
    wait = parse_duration(cooldown)
    claim = parse_duration(claim_after).total_seconds()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    metrics = StreamMetrics(group)
    opened: list[Any] = []
    try:
        with open_registry(ctx) as registry:
            reader = open_source(
                source, group=group, consumer=consumer, claim_after=claim, start=start
            )
            opened.append(reader)
            writer = open_sink(sink)
            opened.append(writer)
            dead = open_sink(dead_letter or dead_letter_url(source))
            opened.append(dead)
            alerts = None
            if rule is not None:
                webhooks = list(webhook or [])
                webhooks += [
                    u.strip() for u in (config.alert_webhooks or "").split(",") if u.strip()
                ]
                alerts = EventAlerts(
                    registry.database, name, rule, group=group, entity_field=entity_field,
                    cooldown=wait, webhooks=webhooks,
                )  # fmt: skip
            if metrics_port is not None:
                metrics.serve(metrics_port, metrics_host)
            runner = StreamConsumer(
                registry, config, ref, reader, writer, dead, group=group, batch_size=batch_size,
                max_wait=max_wait_ms / 1e3, id_field=id_field, keep=keep, alerts=alerts,
                log_predictions=not no_log, metrics=metrics, commit_every=commit_every,
                commit_wait=commit_wait_ms / 1e3,
            )  # fmt: skip
            err_console.print(
                f"scoring {reader.description} with {runner.served.name}:{runner.served.version} "
                f"as group {group} into {writer.description}; SIGTERM or Ctrl-C to stop",
                highlight=False,
            )
            stats = runner.run(stop, max_events=max_events, idle_exit=idle_exit)
    finally:
        for thing in reversed(opened):
            thing.close()
        metrics.close()
    if as_json:
        emit_json(stats.to_dict())
    else:
        err_console.print(
            f"stopped: {stats.events:,} events ({stats.scored:,} scored, {stats.dead_letters:,} "
            f"dead letters, {stats.alerts:,} alerts) in {stats.seconds:.1f} s",
            highlight=False,
        )


@app.command("alerts")
def alerts(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="the model"),
    limit: int = typer.Option(50, "--limit", min=1, max=10_000),
    as_json: bool = json_flag("the alerts"),
) -> None:
    """Alerts that stream consumers raised on scored events, newest first."""
    from rich.table import Table

    with open_registry(ctx) as registry:
        found = event_alerts(registry.database, name, limit=limit)
    if as_json:
        emit_json(found)
        return
    table = Table(
        "raised", "rule", "entity", "value", "event", "version", title=f"{name}: event alerts"
    )
    for a in found:
        value = f"{a['value']:.4g}" if a["value"] is not None else ""
        table.add_row(f"{a['raised_at']:%Y-%m-%d %H:%M:%S}", a["rule"], a["entity"], value,
                      a["event_id"], str(a["version"] or ""))  # fmt: skip
    console.print(table)

"""A stream consumer's Prometheus metrics, served on its own port (`--metrics-port`)."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["StreamMetrics"]

RATE_SECONDS = 10.0  # events/s is measured over this long


class StreamMetrics:
    """Events scored and dead-lettered, alerts, batch time, lag, in-flight events and the
    recent events/s of one consumer, in a registry of its own."""

    def __init__(self, group: str) -> None:
        self.registry = CollectorRegistry()
        self.group = group
        self.events = Counter(
            "shipyard_stream_events", "events handled, by outcome (scored, dead_letter)",
            ["model", "group", "outcome"], registry=self.registry,
        )  # fmt: skip
        self.raised = Counter(
            "shipyard_stream_alerts", "alerts raised on scored events", ["model", "group"],
            registry=self.registry,
        )  # fmt: skip
        self.batch_seconds = Histogram(
            "shipyard_stream_batch_seconds", "time to score, write, log and commit one batch",
            ["model", "group"], registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )  # fmt: skip
        self.lag_events = Gauge(
            "shipyard_stream_lag_events", "events in the stream the group has not been given yet",
            ["group"], registry=self.registry,
        )  # fmt: skip
        self.in_flight_events = Gauge(
            "shipyard_stream_in_flight_events", "events read and not yet committed",
            ["group"], registry=self.registry,
        )  # fmt: skip
        self.rate = Gauge(
            "shipyard_stream_events_per_second",
            f"events handled per second over the last {RATE_SECONDS:.0f} s",
            ["group"], registry=self.registry,
        )  # fmt: skip
        self._recent: deque[tuple[float, int]] = deque()
        self.server: Any = None

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        self.server, _ = start_http_server(port, addr=host, registry=self.registry)

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def batch(self, model: str, scored: int, dead: int, seconds: float) -> None:
        self.events.labels(model, self.group, "scored").inc(scored)
        self.events.labels(model, self.group, "dead_letter").inc(dead)
        self.batch_seconds.labels(model, self.group).observe(seconds)
        now = time.monotonic()
        self._recent.append((now, scored + dead))
        while self._recent and self._recent[0][0] < now - RATE_SECONDS:
            self._recent.popleft()
        span = max(now - self._recent[0][0], 1.0) if self._recent else RATE_SECONDS
        self.rate.labels(self.group).set(sum(n for _, n in self._recent) / span)

    def alerts(self, model: str, count: int) -> None:
        self.raised.labels(model, self.group).inc(count)

    def lag(self, value: int | None) -> None:
        if value is not None:
            self.lag_events.labels(self.group).set(value)

    def in_flight(self, count: int) -> None:
        self.in_flight_events.labels(self.group).set(count)

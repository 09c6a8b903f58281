"""Prometheus metrics of the prediction server.

With several worker processes, `shipyard server` points `PROMETHEUS_MULTIPROC_DIR` at a fresh
folder before the workers start, and `/metrics` sums what every worker wrote there.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = [
    "BATCH_ROWS",
    "CONTENT_TYPE_LATEST",
    "HTTP_LATENCY",
    "HTTP_REQUESTS",
    "LOG_LAG",
    "LOG_ROWS",
    "MODELS_LOADED",
    "PREDICTIONS",
    "PREDICTION_LATENCY",
    "QUEUE_ROWS",
    "RATELIMIT_SHARED",
    "SHADOW_FAILURES",
    "live_sample",
    "render",
]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_MULTI = "PROMETHEUS_MULTIPROC_DIR" in os.environ

HTTP_REQUESTS = Counter(
    "shipyard_http_requests_total",
    "HTTP requests by route, method and status",
    ["route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "shipyard_http_request_duration_seconds",
    "Time from request to response by route",
    ["route"],
    buckets=_LATENCY_BUCKETS,
)
PREDICTIONS = Counter(
    "shipyard_predictions_total",
    "Prediction requests by model, version, variant and status",
    ["model", "version", "variant", "status"],
)
PREDICTION_ROWS = Counter(
    "shipyard_prediction_rows_total",
    "Rows scored by model, version and variant",
    ["model", "version", "variant"],
)
PREDICTION_LATENCY = Histogram(
    "shipyard_prediction_duration_seconds",
    "Server time of a prediction request (validation, queue, model, logging)",
    ["model", "version", "variant"],
    buckets=_LATENCY_BUCKETS,
)
BATCH_ROWS = Histogram(
    "shipyard_batch_rows",
    "Rows per model call (micro-batches)",
    ["model", "version"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096),
)
QUEUE_ROWS = Gauge(
    "shipyard_queue_rows",
    "Rows waiting for a model call",
    ["model", "version"],
    multiprocess_mode="livesum",
)
MODELS_LOADED = Gauge(
    "shipyard_models_loaded", "Model versions loaded and serving", multiprocess_mode="livemax"
)
LOG_LAG = Gauge(
    "shipyard_log_writer_lag_seconds",
    "Age of the oldest logged prediction not yet written as Parquet",
    multiprocess_mode="livemax",
)
LOG_ROWS = Counter("shipyard_log_rows_written_total", "Log rows written as Parquet segments")
LOG_FAILURES = Counter("shipyard_log_write_failures_total", "Failed attempts to write log segments")
RATELIMIT_SHARED = Gauge(
    "shipyard_ratelimit_shared_up",
    "1 when rate limits are shared through Redis, 0 when a replica fell back to its own",
    multiprocess_mode="livemin",
)
SHADOW_FAILURES = Counter(
    "shipyard_shadow_failures_total",
    "Shadow predictions that failed (never seen by callers)",
    ["model", "version"],
)


def _registry() -> Any:
    if _MULTI:
        from prometheus_client import multiprocess

        registry: Any = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    from prometheus_client import REGISTRY

    return REGISTRY


def render() -> tuple[bytes, str]:
    """The exposition text of this process, or of every worker in multiprocess mode."""
    return generate_latest(_registry()), CONTENT_TYPE_LATEST


def live_sample() -> list[dict[str, Any]]:
    """The prediction counters as they stand, per model, version and variant (every worker's
    in multiprocess mode): requests, errors (5xx) and refusals (4xx), and the latency histogram's cumulative bucket
    counts. Two samples apart give requests/s, errors and p95 over the time between them."""
    series: dict[tuple[str, str, str], dict[str, Any]] = {}

    def entry(labels: dict[str, str]) -> dict[str, Any]:
        key = (labels["model"], labels["version"], labels["variant"])
        if key not in series:
            series[key] = {
                "model": key[0],
                "version": int(key[1]) if key[1].isdigit() else key[1],
                "variant": key[2],
                "requests": 0.0,
                "errors": 0.0,
                "refused": 0.0,
                "buckets": {},
            }
        return series[key]

    for family in _registry().collect():
        if family.name == "shipyard_predictions":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    found = entry(sample.labels)
                    found["requests"] += sample.value
                    status = sample.labels.get("status", "")
                    if status.startswith("5"):
                        found["errors"] += sample.value
                    elif status.startswith("4"):
                        found["refused"] += sample.value
        elif family.name == "shipyard_prediction_duration_seconds":
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    buckets = entry(sample.labels)["buckets"]
                    bound = sample.labels["le"]
                    buckets[bound] = buckets.get(bound, 0.0) + sample.value
    out = []
    for found in series.values():
        found["buckets"] = sorted(
            ([float(le), count] for le, count in found["buckets"].items()),
            key=lambda pair: pair[0],
        )
        out.append(found)
    return sorted(out, key=lambda f: (f["model"], str(f["version"]), f["variant"]))

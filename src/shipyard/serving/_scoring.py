"""A scoring request, whatever the transport (HTTP `/v1` and `/v2`, gRPC): authorise, read,
route, validate, score, log, count.

    authorize (key, scope, model binding, rate limit)
      -> the body
      -> the version that answers (the deployment's variant for the routing key, or pinned)
      -> validate against the signature -> score through the micro-batcher
      -> log (a prediction that cannot be logged is not answered: 503)

The transport renders the answer and sends shadows a copy afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import anyio

from shipyard.access import ApiKey
from shipyard.core import Columns
from shipyard.core.errors import MalformedRequest, ShipyardError
from shipyard.core.status import status_of
from shipyard.registry import Deployment, PredictionResult, ServedModel
from shipyard.serving._service import PredictionService
from shipyard.serving.metrics import PREDICTION_LATENCY, PREDICTION_ROWS, PREDICTIONS

__all__ = ["PREDICT", "PREDICT_OR_READ", "Decode", "Scored", "Scoring"]

PREDICT = frozenset({"predict"})
PREDICT_OR_READ = frozenset({"predict", "read"})

Decode = Callable[[Any, PredictionService], Callable[[ServedModel], tuple[Columns, int]]]


class _Outcome:
    """Labels for the prediction metrics, filled in as the request goes."""

    __slots__ = ("model", "variant", "version")

    def __init__(self, model: str) -> None:
        self.model = model
        self.version = ""
        self.variant = ""

    def count(self, status: int, seconds: float | None = None, rows: int = 0) -> None:
        PREDICTIONS.labels(self.model, self.version, self.variant, str(status)).inc()
        if seconds is not None:
            PREDICTION_LATENCY.labels(self.model, self.version, self.variant).observe(seconds)
            PREDICTION_ROWS.labels(self.model, self.version, self.variant).inc(rows)


@dataclass(frozen=True)
class Scored:
    """An answered, logged prediction request, for the transport to render."""

    result: PredictionResult
    served: ServedModel
    plan: Deployment | None
    body: Any
    columns: Columns
    rows: int
    key: ApiKey
    request_id: str | None
    routing_key: str | None = None


class Scoring:
    """The scoring request over a service."""

    def __init__(self, service: PredictionService) -> None:
        self.service = service

    async def predict(
        self,
        name: str,
        version: int | None,
        authorize: Callable[[], Awaitable[ApiKey]],
        read: Callable[[], Awaitable[Any]],
        decode_body: Decode,
        *,
        deadline: str | None,
        routing: str | None,
        request_id: str | None,
        records: bool = False,
        explain: Callable[[Any], bool] | None = None,
    ) -> Scored:
        """Score one request. `deadline` is the caller's budget in milliseconds (text, as a
        header carries it), `routing` its sticky-routing key, if it sent them. `records`: the
        body holds records that may carry entity keys in place of store features (`/v1`).
        `explain`: whether the body asks for each answer's explanation."""
        started = time.perf_counter()
        service = self.service
        outcome = _Outcome(service.metric_model(name))
        key = None
        routing_key: str | None = None  # the key that chose the variant (pinned: none)
        try:
            key = await authorize()
            body = await read()
            decode = decode_body(body, service)
            due = service.deadline(deadline)
            plan: Deployment | None = None
            if version is None:
                plan = await service.plan_for(name)
                routing_key = service.routing_key(routing, body, plan)
                variant, served = await service.variant(plan, routing_key)
                role: str = variant.role
            else:
                served, role = await service.pinned(name, version), "pinned"
            outcome.version, outcome.variant = str(served.version), role
            if served.feature_refs:  # a key limited to feature views reads no others this way
                key.check_views(served.feature_views)
            if not served.feature_refs:
                columns, rows = decode(served)
            elif records:  # the store lookup may wait on I/O (Redis): off the event loop
                columns, rows = await anyio.to_thread.run_sync(decode, served)
            else:
                raise MalformedRequest(
                    f"{served.name}:{served.version} takes features from the feature store "
                    f"({', '.join(served.feature_refs[:5])}); send records with their entity "
                    f"keys to POST /v1/models/{name}/predict"
                )
            service.check_batch(rows)
            explaining = explain is not None and explain(body)
            if explaining:
                service.check_explain(rows)
            result = await service.score(served, columns, rows, due, role)
            if explaining:  # before the log: a prediction that is not answered is not logged
                explanation = await service.explain(served, columns, rows, due)
                result = replace(result, explanation=explanation)
            seconds = time.perf_counter() - started
            service.log(
                result,
                columns,
                latency_ms=seconds * 1e3,
                key_id=key.id,
                request_id=request_id,
                routing_key=routing_key,
            )
        except ShipyardError as error:
            outcome.count(status_of(error))
            service.log_refusal(
                name,
                int(outcome.version) if outcome.version else None,
                outcome.variant or None,
                error,
                key.id if key is not None else None,
                request_id,
            )
            raise
        outcome.count(200, seconds, rows)
        return Scored(result, served, plan, body, columns, rows, key, request_id, routing_key)

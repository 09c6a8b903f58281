"""Scoring: which version answers, keeping models warm, batching calls, shaping and logging.

A server holds a serving plan: for every model, its deployment (or its `production` alias as
sole primary). A background task re-reads the plan every `refresh_seconds`, loads the
versions it names *before* switching to it, and only then swaps it in, so a replica picks up
a new deployment within seconds, without a restart, and no request waits on a model load.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

import anyio
import numpy as np

from shipyard.core import Columns, Settings, Signature, new_ids
from shipyard.core.errors import (
    MalformedRequest,
    ModelUnavailable,
    PayloadTooLarge,
    SchemaViolation,
    ShipyardError,
)
from shipyard.logstore import LogWriter
from shipyard.registry import Deployment, ModelVersion, Registry, Variant
from shipyard.runtime import Predictor
from shipyard.serving._batcher import Batcher
from shipyard.serving._routing import choose

__all__ = ["PredictionResult", "PredictionService", "ServedModel"]

log = logging.getLogger("shipyard.serving")


@dataclass(frozen=True)
class ServedModel:
    """A loaded version, ready to answer."""

    record: ModelVersion
    predictor: Predictor
    classes: list[Any] | None

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def version(self) -> int:
        return self.record.version

    @property
    def signature(self) -> Signature:
        return self.record.signature

    @property
    def task(self) -> str:
        return self.record.task


@dataclass(frozen=True)
class PredictionResult:
    """Scores for a batch of rows, in the shape of the model's task.

    `scores` is the positive-class probability (binary), `probabilities` the class matrix
    (multiclass), `values` the regression output; `labels` the decided class per row.
    """

    model: ServedModel
    ids: list[str]
    labels: list[Any] | None = None
    scores: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    values: np.ndarray | None = None
    threshold: float | None = None
    latency_ms: float = 0.0
    variant: str = "primary"

    def __len__(self) -> int:
        return len(self.ids)

    def records(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per row, as `/v1/.../predict` answers."""
        if self.values is not None:
            return [{"value": v} for v in self.values.tolist()]
        if self.scores is not None:
            t = self.threshold
            return [
                {"score": s, "label": lab, "threshold": t}
                for s, lab in zip(self.scores.tolist(), self.labels or [], strict=True)
            ]
        assert self.probabilities is not None
        classes = [str(c) for c in self.model.classes or []]
        return [
            {"label": lab, "score": max(row), "probabilities": dict(zip(classes, row, strict=True))}
            for lab, row in zip(self.labels or [], self.probabilities.tolist(), strict=True)
        ]

    def outputs(self) -> dict[str, Any]:
        """Columnar outputs, as the prediction log stores them."""
        if self.values is not None:
            return {"value": self.values}
        if self.scores is not None:
            return {"score": self.scores, "label": self.labels}
        assert self.probabilities is not None
        return {
            "score": self.probabilities.max(axis=1),
            "label": self.labels,
            "probabilities": self.probabilities,
        }


def shape(
    served: ServedModel, raw: np.ndarray, latency_ms: float, variant: str = "primary"
) -> PredictionResult:
    """Turn a model's raw output into labelled predictions with fresh ids."""
    n = len(raw)
    ids = new_ids(n)
    if served.task == "regression":
        return PredictionResult(
            served,
            ids,
            values=np.asarray(raw, dtype=np.float64),
            latency_ms=latency_ms,
            variant=variant,
        )
    classes = served.classes or []
    if served.task == "binary":
        threshold = served.record.threshold if served.record.threshold is not None else 0.5
        scores = np.ascontiguousarray(raw[:, 1])
        negative, positive = classes[0], classes[1]
        labels = [positive if s >= threshold else negative for s in scores.tolist()]
        return PredictionResult(
            served,
            ids,
            labels=labels,
            scores=scores,
            threshold=threshold,
            latency_ms=latency_ms,
            variant=variant,
        )
    picked = raw.argmax(axis=1).tolist()
    return PredictionResult(
        served,
        ids,
        labels=[classes[i] for i in picked],
        probabilities=raw,
        latency_ms=latency_ms,
        variant=variant,
    )


class PredictionService:
    """Answers predictions for registered models; one per server process.

    Args:
        registry: where versions and deployments are read.
        settings: limits, batching and refresh interval.
        writer: the prediction log (None: predictions are not logged, e.g. the local CLI).
    """

    def __init__(
        self, registry: Registry, settings: Settings, writer: LogWriter | None = None
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.writer = writer
        self.plans: dict[str, Deployment] = {}
        self.problems: list[str] = []
        self._models: dict[tuple[str, int], ServedModel] = {}
        self._batchers: dict[tuple[str, int], Batcher] = {}
        self._locks: dict[tuple[str, int], threading.Lock] = {}
        self._guard = threading.Lock()
        self._task: asyncio.Task[None] | None = None
        self._rng = random.Random()
        self._background: set[asyncio.Task[Any]] = set()

    # -- loading --------------------------------------------------------------------------------

    def cached(self, name: str, version: int) -> ServedModel | None:
        return self._models.get((name, version))

    def load(self, name: str, version: int) -> ServedModel:
        """The loaded model, loading (and verifying) its bundle the first time. Blocking."""
        key = (name, version)
        served = self._models.get(key)
        if served is not None:
            return served
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            served = self._models.get(key)
            if served is None:
                started = time.perf_counter()
                bundle = self.registry.open(name, version)
                record = self.registry.get_version(name, version)
                served = ServedModel(
                    record, bundle.predictor, bundle.metadata["model"].get("classes")
                )
                self._models[key] = served
                log.info(
                    "loaded %s:%s on %s in %.0f ms",
                    name, version, served.predictor.runtime, (time.perf_counter() - started) * 1e3,
                )  # fmt: skip
        return served

    def loaded(self) -> list[ServedModel]:
        return list(self._models.values())

    @property
    def ready(self) -> bool:
        """Every version the plan names is loaded."""
        return not self.problems and all(
            (name, v.version) in self._models
            for name, plan in self.plans.items()
            for v in plan.variants
        )

    def load_plan(self) -> tuple[dict[str, Deployment], list[str]]:
        """Read the serving plan and load every version it names. Blocking."""
        plans = self.registry.serving_plan(self.settings.serving_alias)
        problems = []
        for name, plan in plans.items():
            for variant in plan.variants:
                try:
                    self.load(name, variant.version)
                except ShipyardError as error:
                    problems.append(f"{name}:{variant.version}: {error.message}")
                    log.error("cannot load %s:%s: %s", name, variant.version, error.message)
        return plans, problems

    async def refresh(self) -> None:
        """Swap in the current plan once its versions are loaded."""
        plans, problems = await anyio.to_thread.run_sync(self.load_plan)
        for name, plan in plans.items():
            old = self.plans.get(name)
            if old is None or old.variants != plan.variants:
                log.info("serving %s: %s (revision %s)", name, plan.describe(), plan.revision)
        # a plan whose versions failed to load keeps serving what it served before
        broken = {p.split(":", 1)[0] for p in problems}
        self.plans = {
            n: (self.plans[n] if n in broken and n in self.plans else p) for n, p in plans.items()
        }
        self.problems = problems

    async def start(self) -> None:
        await self.refresh()
        if self.settings.refresh_seconds > 0:
            self._task = asyncio.get_running_loop().create_task(self._refresh_forever())

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.refresh_seconds)
            try:
                await self.refresh()
            except Exception:  # the database may be briefly away; keep serving the last plan
                log.exception("cannot refresh the serving plan; serving the previous one")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        for batcher in self._batchers.values():
            batcher.close()

    # -- which version --------------------------------------------------------------------------

    async def plan_for(self, name: str) -> Deployment:
        """What `name` serves now."""
        plan = self.plans.get(name)
        if plan is None:
            # registered or deployed since the last refresh, or unknown: the registry says which
            await anyio.to_thread.run_sync(
                lambda: self.registry.resolve(f"{name}:{self.settings.serving_alias}")
            )
            await self.refresh()
            plan = self.plans.get(name)
            if plan is None:
                raise ModelUnavailable(
                    f"model {name!r} has no version that loads; see the server log"
                )
        return plan

    async def variant(
        self, plan: Deployment, routing_key: str | None
    ) -> tuple[Variant, ServedModel]:
        """The live variant that answers this routing key, loaded."""
        variant = choose(plan, routing_key, self._rng)
        served = self._models.get((plan.name, variant.version))
        if served is None:
            served = await anyio.to_thread.run_sync(self.load, plan.name, variant.version)
        return variant, served

    async def pinned(self, name: str, version: int) -> ServedModel:
        served = self._models.get((name, version))
        if served is None:
            served = await anyio.to_thread.run_sync(self.load, name, version)
        return served

    def resolve_version(self, name: str, version: int | None) -> int:
        """The version `name` serves now (blocking; for metadata look-ups)."""
        if version is not None:
            return version
        plan = self.plans.get(name)
        if plan is not None:
            return plan.primary.version
        return self.registry.resolve(f"{name}:{self.settings.serving_alias}").version

    # -- scoring --------------------------------------------------------------------------------

    def check_batch(self, rows: int) -> None:
        if rows == 0:
            raise MalformedRequest("no records to score; send at least one record")
        limit = self.settings.max_batch_records
        if rows > limit:
            raise PayloadTooLarge(
                f"{rows} records in one request is over the limit of {limit}; split the "
                "batch or raise SHIPYARD_MAX_BATCH_RECORDS (use `shipyard batch` for files)"
            )

    def batcher(self, served: ServedModel) -> Batcher:
        key = (served.name, served.version)
        batcher = self._batchers.get(key)
        if batcher is None:
            s = self.settings
            batcher = self._batchers[key] = Batcher(
                served.predictor,
                max_rows=s.batch_max_rows,
                max_wait=s.batch_max_wait_ms / 1e3,
                max_queue_rows=s.queue_max_rows,
                name=f"{served.name}:{served.version}",
            )
        return batcher

    def batchers(self) -> dict[tuple[str, int], Batcher]:
        return dict(self._batchers)

    async def score(
        self,
        served: ServedModel,
        columns: Columns,
        rows: int,
        deadline: float,
        variant: str = "primary",
    ) -> PredictionResult:
        """Score validated columns through the model's micro-batcher."""
        started = time.perf_counter()
        raw = await self.batcher(served).predict(columns, rows, deadline)
        return shape(served, raw, (time.perf_counter() - started) * 1e3, variant)

    def score_now(self, served: ServedModel, columns: Columns, rows: int) -> PredictionResult:
        """Score in the calling thread, without batching (the CLI, tests)."""
        self.check_batch(rows)
        started = time.perf_counter()
        raw = served.predictor.predict(columns)
        return shape(served, raw, (time.perf_counter() - started) * 1e3)

    def predict_records(self, served: ServedModel, records: Any) -> PredictionResult:
        if isinstance(records, list):
            self.check_batch(len(records))
        return self.score_now(served, served.signature.validate_records(records), len(records))

    def log(
        self,
        result: PredictionResult,
        columns: Columns,
        *,
        latency_ms: float,
        key_id: str | None,
        request_id: str | None,
    ) -> None:
        """Append answered predictions to the prediction log (a no-op without a writer)."""
        if self.writer is None:
            return
        self.writer.log_predictions(
            model=result.model.name,
            version=result.model.version,
            variant=result.variant,
            ids=result.ids,
            inputs=columns,
            outputs=result.outputs(),
            latency_ms=latency_ms,
            key_id=key_id,
            request_id=request_id,
        )

    def log_error(
        self,
        name: str,
        outcome: Any,
        status: int,
        error: ShipyardError,
        key: Any,
        request_id: str | None,
    ) -> None:
        """Log a refused or failed prediction request, with the fields a schema error named."""
        if self.writer is None:
            return
        fields = sorted(
            {
                str(d["loc"][-1])
                for d in error.details()
                if d.get("loc") and isinstance(d["loc"][-1], str)
            }
        )
        self.writer.log_error(
            model=name,
            version=int(outcome.version) if outcome.version else None,
            variant=outcome.variant or None,
            status=status,
            error=type(error).__name__,
            fields=fields,
            key_id=getattr(key, "id", None),
            request_id=request_id,
        )

    async def shadow(
        self,
        plan: Deployment,
        columns: Columns,
        rows: int,
        key_id: str | None,
        request_id: str | None,
    ) -> None:
        """Send a copy of an answered request to the plan's shadows, in the background."""
        for variant in plan.shadows:
            task = asyncio.get_running_loop().create_task(
                self._shadow_one(plan.name, variant, columns, rows, key_id, request_id)
            )
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _shadow_one(
        self,
        name: str,
        variant: Variant,
        columns: Columns,
        rows: int,
        key_id: str | None,
        request_id: str | None,
    ) -> None:
        from shipyard.serving.metrics import SHADOW_FAILURES

        started = time.perf_counter()
        try:
            served = await self.pinned(name, variant.version)
            missing = [c for c in served.signature.names if c not in columns]
            if missing:
                raise SchemaViolation(
                    f"the shadow takes input(s) the live version does not: {', '.join(missing)}",
                    [{"loc": ["shadow", m], "msg": "missing"} for m in missing],
                )
            # shadows never delay live traffic: they get a generous deadline of their own
            deadline = time.monotonic() + max(5.0, self.settings.deadline_ms / 1e3 * 4)
            result = await self.score(served, columns, rows, deadline, variant="shadow")
            self.log(
                result,
                columns,
                latency_ms=(time.perf_counter() - started) * 1e3,
                key_id=key_id,
                request_id=request_id,
            )
        except Exception as error:
            SHADOW_FAILURES.labels(name, str(variant.version)).inc()
            log.warning(
                "shadow %s:%s failed (the caller was not affected): %s",
                name,
                variant.version,
                error,
            )

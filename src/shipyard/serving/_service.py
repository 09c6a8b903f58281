"""Scoring: which version answers, keeping models warm, batching calls, shaping and logging.

A server holds a serving plan: for every model, its deployment (or its `production` alias as
sole primary). A background task re-reads the plan (and the API keys) every
`refresh_seconds`, loads the versions it names *before* switching to it, and only then swaps
it in, so a replica picks up a new deployment within seconds, without a restart, and no
request waits on a model load.

When the metadata database stops answering, the server keeps serving the last plan and keys
it read, for at most `max_stale_seconds` (then 503), says so once in its log and in its
readiness, and picks up what changed meanwhile at the first refresh after the outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import numpy as np

from shipyard.access import Authenticator
from shipyard.core import Columns, Settings
from shipyard.core.errors import (
    DatabaseUnavailable,
    LogUnavailable,
    MalformedRequest,
    ModelUnavailable,
    NotFound,
    PayloadTooLarge,
    SchemaViolation,
    ShipyardError,
)
from shipyard.core.status import status_of
from shipyard.explain import Attributions
from shipyard.features import FeatureStore
from shipyard.logstore import LogWriter
from shipyard.registry import (
    Deployment,
    PredictionResult,
    Registry,
    ServedModel,
    Variant,
    shape_prediction,
)
from shipyard.serving._batcher import Batcher
from shipyard.serving._models import ModelCache
from shipyard.serving._routing import choose
from shipyard.store import record_audit

__all__ = ["PredictionResult", "PredictionService", "Readiness", "ServedModel"]

log = logging.getLogger("shipyard.serving")

MAX_DEADLINE_MS = 60_000.0
MIN_REQUESTED_REFRESH_SECONDS = 1.0  # requests for models the plan lacks refresh at most this often
OTHER_MODEL = "_other"  # the metric label of every name that is not a registered model
# refusals worth a model's monitoring (bad input, overload, failures); not auth or unknown models
LOGGED_STATUSES = frozenset({400, 413, 422, 429, 503, 504})


@dataclass
class Readiness:
    """Whether the server can answer: `problems` say why not; `degraded` what it serves from."""

    ready: bool
    problems: list[str] = field(default_factory=list)
    degraded: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"ready": self.ready, "problems": self.problems, "degraded": self.degraded}


class PredictionService:
    """Answers predictions for registered models; one per server process.

    Args:
        registry: where versions and deployments are read.
        settings: limits, batching, refresh interval and staleness bound.
        writer: the prediction log (None: predictions are not logged, e.g. the local CLI).
        auth: API keys, re-read with the plan (None: nothing to refresh).
        clock: seconds, monotonic (tests inject their own).
        features: the feature store, for versions trained on its features (they are looked
            up by the records' entity keys before the model sees them).
    """

    def __init__(
        self,
        registry: Registry,
        settings: Settings,
        writer: LogWriter | None = None,
        *,
        auth: Authenticator | None = None,
        clock: Callable[[], float] = time.monotonic,
        features: FeatureStore | None = None,
    ) -> None:
        self.registry = registry
        self.features = features
        self.settings = settings
        self.writer = writer
        self.auth = auth
        self.clock = clock
        self.plans: dict[str, Deployment] = {}
        self.problems: list[str] = []
        self.known: frozenset[str] = frozenset()  # registered model names
        self.models = ModelCache(
            self._load_version,
            self._make_batcher,
            max_cold=settings.max_cold_versions,
            max_cold_bytes=settings.max_cold_bytes,
        )
        self.started = False
        self.draining = False  # SIGTERM came: out of rotation, still answering (`drain_seconds`)
        self._plans_at: float | None = None
        self._unreachable_since: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._refreshing = asyncio.Lock()
        self._rng = random.Random()
        self._background: set[asyncio.Task[Any]] = set()
        self._outputs: dict[tuple[str, int], tuple[str, list[Any] | None]] = {}

    # -- features from the store ----------------------------------------------------------------

    def with_features(self, served: ServedModel, records: Any) -> Any:
        """`records` with the version's store features filled in from the online store (the
        store's values replace any the caller sent), as the views' policies say for missing
        and stale values."""
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            return records  # the signature check says what is wrong with them
        if self.features is None:
            raise ModelUnavailable(
                f"{served.name}:{served.version} takes features from the feature store, which "
                "this process does not open"
            )
        return self.features.serve(records, served.feature_refs)

    # -- loading --------------------------------------------------------------------------------

    def _load_version(self, name: str, version: int) -> ServedModel:
        return self.registry.load(name, version)

    def _make_batcher(self, served: ServedModel) -> Batcher:
        s = self.settings
        return Batcher(
            served.predictor,
            max_rows=s.batch_max_rows,
            max_wait=s.batch_max_wait_ms / 1e3,
            max_queue_rows=s.queue_max_rows,
            name=f"{served.name}:{served.version}",
        )

    def output_of(self, name: str, version: int) -> tuple[str, list[Any] | None]:
        """What `name:version` answers: its task and classes (labels are checked against
        them). Read once per version: a registered version never changes."""
        key = (name, version)
        found = self._outputs.get(key)
        if found is None:
            served = self.cached(name, version)
            if served is not None:
                found = (served.task, served.classes)
            else:
                try:
                    record = self.registry.get_version(name, version)
                    classes = self.registry.classes(name, version)
                    found = (record.task, classes)
                except NotFound:  # deleted since it answered: nothing left to check against
                    return ("", None)
            if len(self._outputs) >= 4096:
                self._outputs.clear()
            self._outputs[key] = found
        return found

    def audit_label_changes(self, changes: list[dict[str, Any]], actor: str) -> None:
        """One audit event per model version whose labels a request changed, listing them
        (at most 1,000 per event; the label log keeps every label with its time)."""
        by_version: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for change in changes:
            by_version.setdefault((change["model"], change["version"]), []).append(
                {k: change[k] for k in ("prediction_id", "before", "after")}
            )
        with self.registry.database.transaction() as conn:
            for (model, version), listed in by_version.items():
                record_audit(
                    conn, actor, "label.changed", model, version,
                    {"changed": len(listed), "labels": listed[:1000]},
                )  # fmt: skip

    def cached(self, name: str, version: int) -> ServedModel | None:
        return self.models.get(name, version)

    def load(self, name: str, version: int) -> ServedModel:
        """The loaded model, loading (and verifying) its bundle the first time. Blocking."""
        return self.models.load(name, version)

    def loaded(self) -> list[ServedModel]:
        return self.models.loaded()

    def batchers(self) -> dict[tuple[str, int], Batcher]:
        return self.models.batchers()

    def load_plan(self) -> tuple[dict[str, Deployment], list[str]]:
        """Read the serving plan and load every version it names. Blocking."""
        plans = self.registry.serving_plan(self.settings.serving_alias)
        # what serves now and what is about to: neither may be evicted while this loads
        self.models.keep(_versions(self.plans) | _versions(plans))
        problems = []
        for name, plan in plans.items():
            for variant in plan.variants:
                try:
                    self.load(name, variant.version)
                except DatabaseUnavailable:
                    raise
                except ShipyardError as error:
                    problems.append(f"{name}:{variant.version}: {error.message}")
                    log.error("cannot load %s:%s: %s", name, variant.version, error.message)
        return plans, problems

    def _read_state(self) -> tuple[dict[str, Deployment], list[str], frozenset[str]]:
        if self.auth is not None and self.auth.enabled:
            self.auth.refresh()
        names = frozenset(m.name for m in self.registry.list_models())
        plans, problems = self.load_plan()
        return plans, problems, names

    async def refresh(self) -> None:
        """Re-read keys and plan; swap in the plan once its versions are loaded. One refresh
        at a time: an older read never replaces a newer plan."""
        async with self._refreshing:
            await self._refresh()

    async def _refresh_soon(self) -> None:
        """Refresh for a request that names a model the plan lacks, unless a refresh just
        finished (so such requests cannot make the server re-read everything each time)."""
        if self.clock() - (self._plans_at or 0.0) < MIN_REQUESTED_REFRESH_SECONDS:
            return
        async with self._refreshing:
            if self.clock() - (self._plans_at or 0.0) >= MIN_REQUESTED_REFRESH_SECONDS:
                await self._refresh()

    async def _refresh(self) -> None:
        plans, problems, names = await anyio.to_thread.run_sync(self._read_state)
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
        self.known = names
        self.models.keep(_versions(self.plans))
        self._plans_at = self.clock()
        if self._unreachable_since is not None:
            log.warning(
                "the metadata database answers again after %.0f s; keys and deployments are "
                "current again",
                self.clock() - self._unreachable_since,
            )
            self._unreachable_since = None

    async def start(self) -> None:
        await self.refresh()
        self.started = True
        if self.settings.refresh_seconds > 0:
            self._task = asyncio.get_running_loop().create_task(self._refresh_forever())

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.refresh_seconds)
            try:
                await self.refresh()
            except DatabaseUnavailable as error:
                if self._unreachable_since is None:  # one line per outage, not one per refresh
                    self._unreachable_since = self.clock()
                    log.warning(
                        "%s; serving the deployments and API keys read %.0f s ago for up to "
                        "%.0f s (SHIPYARD_MAX_STALE_SECONDS)",
                        error.message, self.plan_age, self.settings.max_stale_seconds,
                    )  # fmt: skip
            except Exception:
                log.exception("cannot refresh the serving plan; serving the previous one")

    async def stop(self) -> None:
        self.started = False
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        self.models.close()

    # -- freshness and readiness ----------------------------------------------------------------

    @property
    def plan_age(self) -> float:
        """Seconds since the plan was last read."""
        return float("inf") if self._plans_at is None else self.clock() - self._plans_at

    def check_fresh(self) -> None:
        """Refuse to answer from a plan older than the staleness bound (a server that never
        refreshes, `SHIPYARD_REFRESH_SECONDS=0`, serves the plan it started with)."""
        if self.settings.refresh_seconds > 0 and self.plan_age > self.settings.max_stale_seconds:
            raise DatabaseUnavailable(
                f"deployments could not be re-read for {self.plan_age:.0f} s, longer than the "
                f"{self.settings.max_stale_seconds:.0f} s they are trusted for "
                "(SHIPYARD_MAX_STALE_SECONDS); the metadata database does not answer",
                retry_after=5.0,
            )

    def readiness(self) -> Readiness:
        """Ready when started, every planned version is loaded, plan and keys are within the
        staleness bound and the prediction log can be written."""
        problems: list[str] = []
        degraded: list[str] = []
        if not self.started:
            problems.append("starting up")
        if self.draining:
            problems.append("draining: the server was told to stop (SIGTERM)")
        problems += self.problems
        missing = [
            f"{name}:{v.version} is not loaded"
            for name, plan in self.plans.items()
            for v in plan.variants
            if (name, v.version) not in self.models
        ]
        problems += missing
        stale = (
            self.settings.refresh_seconds > 0 and self.plan_age > self.settings.max_stale_seconds
        )
        if stale:
            problems.append(f"the serving plan is {self.plan_age:.0f} s old (database unreachable)")
        elif self._unreachable_since is not None:
            degraded.append(
                f"the metadata database does not answer since {self.clock() - self._unreachable_since:.0f} s; "
                f"serving the deployments and API keys read {self.plan_age:.0f} s ago "
                f"(trusted for {self.settings.max_stale_seconds:.0f} s)"
            )
        if self.auth is not None and not self.auth.fresh:
            problems.append(f"the API keys are {self.auth.age:.0f} s old (database unreachable)")
        if self.writer is not None and self.writer.unwritable is not None:
            problems.append(f"the prediction log cannot be written: {self.writer.unwritable}")
        return Readiness(not problems, problems, degraded)

    @property
    def ready(self) -> bool:
        return self.readiness().ready

    # -- which version --------------------------------------------------------------------------

    async def plan_for(self, name: str) -> Deployment:
        """What `name` serves now."""
        self.check_fresh()
        plan = self.plans.get(name)
        if plan is None:
            # registered or deployed since the last refresh, or unknown: the registry says which
            await anyio.to_thread.run_sync(
                lambda: self.registry.resolve(f"{name}:{self.settings.serving_alias}")
            )
            await self._refresh_soon()
            plan = self.plans.get(name)
            if plan is None:
                raise ModelUnavailable(
                    f"model {name!r} does not serve: its deployment was stopped, or its versions "
                    f"do not load (GET /v1/serving says which); deploy a version with "
                    f"`shipyard deploy {name} --version N`"
                )
        return plan

    async def variant(
        self, plan: Deployment, routing_key: str | None
    ) -> tuple[Variant, ServedModel]:
        """The live variant that answers this routing key, loaded."""
        variant = choose(plan, routing_key, self._rng)
        served = self.models.get(plan.name, variant.version)
        if served is None:
            served = await anyio.to_thread.run_sync(self.load, plan.name, variant.version)
        return variant, served

    async def pinned(self, name: str, version: int) -> ServedModel:
        self.check_fresh()
        served = self.models.get(name, version)
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

    def routing_key(
        self, header: str | None, body: Mapping[str, Any], plan: Deployment
    ) -> str | None:
        """The sticky-routing key: the `X-Routing-Key` header, a `routing_key` field of the
        body (of its `parameters` in the V2 protocol), or the deployment's routing field in
        the first record."""
        if header:
            return header[:256]
        if not isinstance(body, Mapping):
            return None
        value = body.get("routing_key")
        parameters = body.get("parameters")
        if value is None and isinstance(parameters, Mapping):
            value = parameters.get("routing_key")
        if value is None and plan.routing_field:
            instances = body.get("instances")
            first = instances[0] if isinstance(instances, list) and instances else None
            value = first.get(plan.routing_field) if isinstance(first, dict) else None
        if value is None or isinstance(value, dict | list):
            return None
        return str(value)[:256]

    def deadline(self, header: str | None) -> float:
        """When the answer must be ready: `X-Deadline-Ms` (up to 60 s) or the server's default."""
        budget = self.settings.deadline_ms
        if header is not None:
            try:
                budget = float(header)
            except ValueError:
                raise MalformedRequest(
                    f"X-Deadline-Ms must be a number of milliseconds, got {header[:40]!r}"
                ) from None
            if not 0 < budget <= MAX_DEADLINE_MS:  # NaN fails this too
                raise MalformedRequest(
                    f"X-Deadline-Ms must be between 0 and {MAX_DEADLINE_MS:.0f}, got {header[:40]}"
                )
        return time.monotonic() + budget / 1e3

    # -- scoring --------------------------------------------------------------------------------

    def check_batch(self, rows: int) -> None:
        if rows == 0:
            raise MalformedRequest("no records to score; send at least one record")
        limit = self.settings.max_batch_records
        if rows > limit:
            raise PayloadTooLarge(
                f"{rows} records in one request is over the limit of {limit}; split the "
                "batch or raise SHIPYARD_MAX_BATCH_RECORDS (`shipyard predict NAME -i FILE` scores a "
                "file of any size)"
            )

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
        batcher = self.models.batcher(served)
        if batcher is not None:
            raw = await batcher.predict(columns, rows, deadline)
        else:  # the version was unloaded while this request held it: score it directly
            raw = await anyio.to_thread.run_sync(_predict_quietly, served, columns)
        return shape_prediction(served, raw, (time.perf_counter() - started) * 1e3, variant)

    async def explain(
        self, served: ServedModel, columns: Columns, rows: int, deadline: float
    ) -> Attributions:
        """Each row's per-feature contributions to the answer (off the event loop: exact methods
        take well under a millisecond a row, a sampled one its budget)."""
        self.check_explain(rows)
        left = deadline - time.monotonic()
        budget = max(0.0, min(self.settings.explain_budget_ms / 1e3, left * 0.8))
        return await anyio.to_thread.run_sync(_explain_quietly, served, columns, budget)

    def check_explain(self, rows: int) -> None:
        """Refuse, before anything is scored, more records than a request may have explained."""
        limit = self.settings.explain_max_records
        if rows > limit:
            raise PayloadTooLarge(
                f"{rows} records asked to be explained; explanations are given for up to "
                f"{limit} records per request: send fewer with explain, or raise "
                "SHIPYARD_EXPLAIN_MAX_RECORDS"
            )

    def explain_now(self, served: ServedModel, columns: Columns) -> Attributions:
        """Explain in the calling thread (the CLI, tests)."""
        return _explain_quietly(served, columns, self.settings.explain_budget_ms / 1e3)

    def score_now(self, served: ServedModel, columns: Columns, rows: int) -> PredictionResult:
        """Score in the calling thread, without batching (the CLI, tests)."""
        self.check_batch(rows)
        started = time.perf_counter()
        with np.errstate(all="ignore"):  # non-finite outputs are refused by `shape`
            raw = served.predictor.predict(columns)
        return shape_prediction(served, raw, (time.perf_counter() - started) * 1e3)

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
        routing_key: str | None = None,
    ) -> None:
        """Append answered predictions to the prediction log (a no-op without a writer), with
        the sticky-routing key that chose the variant (the log keeps a hash of it, see
        `shipyard.logstore.routing_key_hash`). Raises `LogUnavailable` when the log cannot be
        written: the answer is then refused."""
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
            routing_key=routing_key,
        )

    def metric_model(self, name: str) -> str:
        """`name` as a metric label: registered models by name, anything else as one label, so
        names an outsider makes up never create new series."""
        return name if name in self.known or name in self.plans else OTHER_MODEL

    def log_refusal(
        self,
        name: str,
        version: int | None,
        variant: str | None,
        error: ShipyardError,
        key_id: str | None,
        request_id: str | None,
    ) -> None:
        """Log a refused or failed prediction request of a registered model when it matters to
        its monitoring (bad input, overload, failures; not authentication), with the fields a
        schema error named."""
        status = status_of(error)
        if (
            self.writer is None
            or status not in LOGGED_STATUSES
            or name not in self.known
            or isinstance(error, LogUnavailable)  # the log is what failed
        ):
            return
        fields = sorted(
            {
                str(d["loc"][-1])
                for d in error.details()
                if d.get("loc") and isinstance(d["loc"][-1], str)
            }
        )
        # best effort: an unwritable log loses only this entry (the writer said so, and counts it)
        with contextlib.suppress(ShipyardError):
            self.writer.log_error(
                model=name,
                version=version,
                variant=variant,
                status=status,
                error=type(error).__name__,
                fields=fields,
                key_id=key_id,
                request_id=request_id,
            )

    async def shadow(
        self,
        plan: Deployment,
        columns: Columns,
        rows: int,
        key_id: str | None,
        request_id: str | None,
        routing_key: str | None = None,
    ) -> None:
        """Send a copy of an answered request to the plan's shadows, in the background."""
        for variant in plan.shadows:
            task = asyncio.get_running_loop().create_task(
                self._shadow_one(plan.name, variant, columns, rows, key_id, request_id, routing_key)
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
        routing_key: str | None,
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
                routing_key=routing_key,
            )
        except Exception as error:
            SHADOW_FAILURES.labels(name, str(variant.version)).inc()
            log.warning(
                "shadow %s:%s failed (the caller was not affected): %s",
                name,
                variant.version,
                error,
            )


def _versions(plans: Mapping[str, Deployment]) -> set[tuple[str, int]]:
    return {(name, v.version) for name, plan in plans.items() for v in plan.variants}


def _explain_quietly(served: ServedModel, columns: Columns, budget: float) -> Attributions:
    explainer = served.explainer()
    try:
        with np.errstate(all="ignore"):
            return explainer.explain(columns, budget=budget)
    except Exception as error:  # the model failed on the rows an explanation mixes
        log.exception("explaining %s:%s failed", served.name, served.version)
        raise ModelUnavailable(
            f"{served.name}:{served.version} failed while explaining ({type(error).__name__}: "
            f"{error}); the server log has the details"
        ) from None


def _predict_quietly(served: ServedModel, columns: Columns) -> np.ndarray:
    with np.errstate(all="ignore"):  # non-finite outputs are refused by `shape`
        return served.predictor.predict(columns)

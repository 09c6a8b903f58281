"""Scoring: resolve which version answers, keep loaded models warm, validate, predict, shape."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from shipyard.core import Columns, Settings, Signature, new_id
from shipyard.core.errors import MalformedRequest, PayloadTooLarge, ShipyardError
from shipyard.registry import ModelVersion, Registry
from shipyard.runtime import Predictor

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


class PredictionService:
    """Answers predictions for any registered version, loading each once per process.

    `name` alone resolves through the serving alias (`production`), re-read at most every
    `alias_refresh_seconds`, so an alias move reaches running servers without a restart.
    """

    def __init__(self, registry: Registry, settings: Settings) -> None:
        self.registry = registry
        self.settings = settings
        self._models: dict[tuple[str, int], ServedModel] = {}
        self._aliases: dict[tuple[str, str], tuple[int, float]] = {}
        self._locks: dict[tuple[str, int], threading.Lock] = {}
        self._guard = threading.Lock()

    # -- which version ----------------------------------------------------------------------

    def resolve_version(self, name: str, version: int | None) -> int:
        if version is not None:
            return version
        alias = self.settings.serving_alias
        key = (name, alias)
        cached = self._aliases.get(key)
        now = time.monotonic()
        if cached is not None and cached[1] > now:
            return cached[0]
        record = self.registry.resolve(f"{name}:{alias}")
        self._aliases[key] = (record.version, now + self.settings.alias_refresh_seconds)
        return record.version

    def cached(self, name: str, version: int) -> ServedModel | None:
        return self._models.get((name, version))

    def load(self, name: str, version: int) -> ServedModel:
        """The loaded model, loading (and verifying) its bundle the first time."""
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
                    name,
                    version,
                    served.predictor.runtime,
                    (time.perf_counter() - started) * 1e3,
                )
        return served

    def loaded(self) -> list[ServedModel]:
        return list(self._models.values())

    def warm_up(self) -> list[str]:
        """Load every version a serving alias points at; returns the problems met."""
        problems = []
        for model in self.registry.list_models():
            version = model.aliases.get(self.settings.serving_alias)
            if version is None:
                continue
            try:
                self.load(model.name, version)
            except ShipyardError as error:
                problems.append(f"{model.name}:{version}: {error.message}")
                log.error("cannot load %s:%s: %s", model.name, version, error.message)
        return problems

    # -- scoring ----------------------------------------------------------------------------

    def predict_records(self, served: ServedModel, records: Any) -> PredictionResult:
        if isinstance(records, list):
            self.check_batch(len(records))
        return self.predict_columns(
            served, served.signature.validate_records(records), len(records)
        )

    def check_batch(self, rows: int) -> None:
        if rows == 0:
            raise MalformedRequest("no records to score; send at least one record")
        limit = self.settings.max_batch_records
        if rows > limit:
            raise PayloadTooLarge(
                f"{rows} records in one request is over the limit of {limit}; split the "
                "batch or raise SHIPYARD_MAX_BATCH_RECORDS (use `shipyard batch` for files)"
            )

    def predict_columns(self, served: ServedModel, columns: Columns, n: int) -> PredictionResult:
        started = time.perf_counter()
        self.check_batch(n)
        raw = served.predictor.predict(columns)
        latency = (time.perf_counter() - started) * 1e3
        ids = [new_id() for _ in range(n)]
        if served.task == "regression":
            return PredictionResult(
                served, ids, values=np.asarray(raw, dtype=np.float64), latency_ms=latency
            )
        classes = served.classes or []
        if served.task == "binary":
            threshold = served.record.threshold if served.record.threshold is not None else 0.5
            scores = raw[:, 1]
            negative, positive = classes[0], classes[1]
            labels = [positive if s >= threshold else negative for s in scores.tolist()]
            return PredictionResult(
                served, ids, labels=labels, scores=scores, threshold=threshold, latency_ms=latency
            )
        picked = raw.argmax(axis=1).tolist()
        labels = [classes[i] for i in picked]
        return PredictionResult(served, ids, labels=labels, probabilities=raw, latency_ms=latency)

"""A loaded version and what it answers: predictions shaped by the model's task, the same for
every way of scoring (real-time serving, batch, streams)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from shipyard.core import Signature, new_ids
from shipyard.core.errors import InvalidInput, ModelOutputInvalid, ShipyardError
from shipyard.explain import Attributions, Explainer
from shipyard.registry._records import ModelVersion
from shipyard.runtime import Predictor

if TYPE_CHECKING:
    from shipyard.registry._bundle import LoadedBundle

__all__ = ["BundleRef", "PredictionResult", "ServedModel", "feature_refs", "shape"]


class _Once:
    """A value built on first use by whichever thread asks first; the others wait for it. A
    failure is kept too: a version that cannot be explained says so without trying again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value: Any = None
        self._error: ShipyardError | None = None
        self._done = False

    def get(self, build: Callable[[], Any]) -> Any:
        if not self._done:
            with self._lock:
                if not self._done:
                    try:
                        self._value = build()
                    except ShipyardError as error:
                        self._error = error
                    self._done = True
        if self._error is not None:
            raise self._error
        return self._value


@dataclass(frozen=True)
class ServedModel:
    """A loaded version, ready to answer; `bundle` is where it was loaded from, for what its
    predictor alone cannot do (explain its answers)."""

    record: ModelVersion
    predictor: Predictor
    classes: list[Any] | None
    bundle: LoadedBundle | None = field(default=None, compare=False, repr=False)
    _explaining: _Once = field(default_factory=_Once, init=False, compare=False, repr=False)

    def explainer(self) -> Explainer:
        """How this version explains its answers, built on first use (it loads the native
        model and the reference rows) and kept while the version is loaded."""

        def build() -> Explainer:
            what = f"{self.name}:{self.version}"
            if self.bundle is None:
                raise InvalidInput(f"{what} was loaded without its bundle and cannot explain")
            return self.bundle.explainer(self.signature, what)

        explainer: Explainer = self._explaining.get(build)
        return explainer

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

    @cached_property
    def feature_refs(self) -> tuple[str, ...]:
        """The feature-store features the version was trained on (`view@version:feature`, from
        its lineage), looked up by entity keys at prediction time; empty when it takes plain
        columns only."""
        return feature_refs(self.record.lineage)

    @cached_property
    def feature_views(self) -> tuple[str, ...]:
        """The feature views those features come from (what a key limited to views needs)."""
        return tuple(
            dict.fromkeys(r.partition(":")[0].partition("@")[0] for r in self.feature_refs)
        )


@dataclass(frozen=True)
class BundleRef:
    """Where a version's verified bundle lies: enough for another process (a Spark executor, a
    Ray worker) to load the version without the metadata database. Picklable."""

    artifact_root: str
    record: ModelVersion
    metadata_sha256: str

    def load(self) -> ServedModel:
        """The version ready to answer, from its bundle (every file checked on the way)."""
        from shipyard.registry._bundle import open_bundle
        from shipyard.store import ArtifactStore

        bundle = open_bundle(
            ArtifactStore(self.artifact_root), self.record.bundle_path, self.metadata_sha256
        )
        return ServedModel(
            self.record, bundle.predictor, bundle.metadata["model"].get("classes"), bundle
        )


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
    explanation: Attributions | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def records(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per row, as `/v1/.../predict` answers (with its explanation
        when one was asked for)."""
        out: list[dict[str, Any]]
        if self.values is not None:
            out = [{"value": v} for v in self.values.tolist()]
        elif self.scores is not None:
            t = self.threshold
            out = [
                {"score": s, "label": lab, "threshold": t}
                for s, lab in zip(self.scores.tolist(), self.labels or [], strict=True)
            ]
        else:
            assert self.probabilities is not None
            classes = [str(c) for c in self.model.classes or []]
            out = [
                {
                    "label": lab,
                    "score": max(row),
                    "probabilities": dict(zip(classes, row, strict=True)),
                }
                for lab, row in zip(self.labels or [], self.probabilities.tolist(), strict=True)
            ]
        if self.explanation is not None:
            for i, record in enumerate(out):
                record["explanation"] = self.explanation.row(i)
        return out

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


def _check_finite(served: ServedModel, raw: np.ndarray) -> None:
    """A NaN or infinite output is no prediction: it must never turn into a label (NaN >= t
    is False, so it silently became the negative class)."""
    finite = np.isfinite(raw)
    if finite.all():
        return
    bad = np.flatnonzero(~finite.reshape(len(raw), -1).all(axis=1)).tolist()
    shown = ", ".join(map(str, bad[:20])) + (" ..." if len(bad) > 20 else "")
    raise ModelOutputInvalid(
        f"{served.name}:{served.version} answered NaN or infinity for record(s) {shown}; their "
        "inputs are probably far outside what the model was trained on, so no prediction is "
        "given for them (check those records' values)",
        [
            {"loc": ["instances", i], "msg": "the model's output is not a finite number"}
            for i in bad[:100]
        ],
    )


def shape(
    served: ServedModel, raw: np.ndarray, latency_ms: float, variant: str = "primary"
) -> PredictionResult:
    """Turn a model's raw output into labelled predictions with fresh ids."""
    raw = np.asarray(raw)
    if raw.dtype.kind == "f":
        _check_finite(served, raw)
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


def feature_refs(lineage: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The store features in a version's lineage (`lineage["feature_store"]` as
    `TrainingSet.lineage` gives it), as `view@version:feature`: a model is served the values
    of the view version it was trained on, not those of a later definition."""
    found = (lineage or {}).get("feature_store") or {}
    refs = found.get("features") if isinstance(found, Mapping) else None
    if not isinstance(refs, list):
        return ()
    return tuple(dict.fromkeys(str(ref) for ref in refs))

"""A loaded version and what it answers: predictions shaped by the model's task, the same for
every way of scoring (real-time serving, batch, streams)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from shipyard.core import Signature, new_ids
from shipyard.core.errors import ModelOutputInvalid
from shipyard.registry._records import ModelVersion
from shipyard.runtime import Predictor

__all__ = ["BundleRef", "PredictionResult", "ServedModel", "feature_refs", "shape"]


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

    @cached_property
    def feature_refs(self) -> tuple[str, ...]:
        """The feature-store features the version was trained on (`view:feature`, from its
        lineage), looked up by entity keys at prediction time; empty when it takes plain
        columns only."""
        return feature_refs(self.record.lineage)


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
        return ServedModel(self.record, bundle.predictor, bundle.metadata["model"].get("classes"))


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
    """`view:feature` of each store feature in a version's lineage (`lineage["feature_store"]`
    as `TrainingSet.lineage` gives it: `view@version:feature`), latest versions served."""
    found = (lineage or {}).get("feature_store") or {}
    refs = found.get("features") if isinstance(found, Mapping) else None
    if not isinstance(refs, list):
        return ()
    out = []
    for ref in refs:
        view, _, feature = str(ref).partition(":")
        out.append(f"{view.split('@')[0]}:{feature}")
    return tuple(dict.fromkeys(out))

"""Why a model got worse: the inputs that moved, and the segments where quality fell."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import cast

import pyarrow as pa

from shipyard.core.errors import ShipyardError
from shipyard.explain import attribution_shift
from shipyard.logstore import LogReader
from shipyard.monitoring._drift import DriftReport
from shipyard.monitoring._logs import LogQueries, Period
from shipyard.monitoring._report import (
    Attributed,
    AttributionShift,
    MovedFeature,
    RootCause,
    Segment,
)
from shipyard.registry import LoadedBundle, ModelVersion

__all__ = ["attributions", "root_cause"]

log = logging.getLogger("shipyard.monitoring")


EXPLAINED_ROWS = 200  # rows of the reference and of the window explained for the root cause


def attributions(
    open_bundle: Callable[[], LoadedBundle],
    record: ModelVersion,
    current: pa.Table,
    *,
    budget: float = 1.0,
) -> Attributed:
    """How the model's reasons moved: contributions explained on the version's reference rows
    and on the window's logged inputs, the features whose mean contribution moved most first.
    A feature can drift without mattering (its contribution stays small), and a small drift in
    a feature the model leans on can move many answers: this ranks by effect on the output."""
    if current.num_rows == 0 or "features" not in current.column_names:
        return {"unavailable": "no logged inputs in the window"}
    try:
        bundle = open_bundle()
        reference = bundle.reference(record.signature, EXPLAINED_ROWS)
        if reference is None:
            return {"unavailable": f"{record.ref} has no reference rows to compare with"}
        logged = pa.Table.from_struct_array(current.column("features").combine_chunks())
        logged = logged.slice(0, EXPLAINED_ROWS)
        missing = [n for n in record.signature.names if n not in logged.column_names]
        if missing:
            return {"unavailable": f"the log lacks input column(s) {', '.join(missing[:5])}"}
        window = record.signature.validate_frame(logged.select(record.signature.names).to_pandas())
        explainer = bundle.explainer(record.signature, record.ref)
        before = explainer.explain(reference, budget=budget)
        now = explainer.explain(window, budget=budget)
    except ShipyardError as error:
        return {"unavailable": error.message}
    except Exception as error:  # the model's own code on mixed rows: the report still comes
        log.warning("explaining %s for the root cause failed: %s", record.ref, error)
        return {"unavailable": f"explaining failed: {type(error).__name__}: {error}"}
    shifted = cast(list[AttributionShift], attribution_shift(before, now))
    return {
        "method": now.method,
        "space": now.space,
        "reference_rows": len(before.values),
        "current_rows": len(now.values),
        "shifted": shifted,
    }


def root_cause(
    reader: LogReader,
    record: ModelVersion,
    drift: DriftReport | None,
    period: Period,
    positive: str | None,
    attributed: Attributed | None = None,
) -> RootCause:
    """What moved: the features that drifted most, and the categorical segments whose quality
    dropped most between the earlier windows and the last (accuracy, or the mean absolute error
    of a regressor), weighted by their share of the last window's labels; and, given
    `attributed`, the features whose contributions to the answers moved most."""
    name = record.name
    moved: list[MovedFeature] = []
    if drift is not None:
        for column in drift.ranked()[:5]:
            if column.status != "ok":
                moved.append(
                    {
                        "feature": column.column,
                        "status": column.status,
                        "effect": column.effect,
                        "effect_size": column.effect_size,
                        "reason": column.reason,
                    }
                )
    segments: list[Segment] = []
    current = Period(period.end - period.step, period.end, period.step)
    baseline = Period(period.start, period.end - period.step, period.step)
    for spec in record.signature.columns:
        if spec.type != "string":
            continue
        now_rows = {
            s["segment"]: s
            for s in LogQueries(reader, name, current).segments(record.version, spec.name, positive)
        }
        before_rows = {
            s["segment"]: s
            for s in LogQueries(reader, name, baseline).segments(
                record.version, spec.name, positive
            )
        }
        total = sum(s["labelled"] for s in now_rows.values()) or 1
        for segment, now in now_rows.items():
            before = before_rows.get(segment)
            if before is None or now["labelled"] < 20 or before["labelled"] < 20:
                continue
            found: Segment = {
                "feature": spec.name,
                "segment": segment,
                "labelled": now["labelled"],
                "impact": 0.0,
            }
            if record.task == "regression":
                if now["mae"] is None or before["mae"] is None:
                    continue
                # how much of the window's mean absolute error this segment's rise adds
                drop = now["mae"] - before["mae"]
                found["mae_before"], found["mae_now"] = before["mae"], now["mae"]
            else:
                drop = before["accuracy"] - now["accuracy"]
                found["accuracy_before"], found["accuracy_now"] = (
                    before["accuracy"],
                    now["accuracy"],
                )
                found["recall_before"], found["recall_now"] = before["recall"], now["recall"]
            found["impact"] = drop * now["labelled"] / total
            segments.append(found)
    segments.sort(key=lambda s: -s["impact"])
    cause: RootCause = {
        "features": moved,
        "segments": [s for s in segments if s["impact"] > 0][:5],
    }
    if attributed is not None:
        cause["attributions"] = attributed
    return cause

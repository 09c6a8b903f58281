"""Why a model got worse: the inputs that moved, and the segments where quality fell."""

from __future__ import annotations

from shipyard.logstore import LogReader
from shipyard.monitoring._drift import DriftReport
from shipyard.monitoring._logs import LogQueries, Period
from shipyard.monitoring._report import MovedFeature, RootCause, Segment
from shipyard.registry import ModelVersion

__all__ = ["root_cause"]


def root_cause(
    reader: LogReader,
    record: ModelVersion,
    drift: DriftReport | None,
    period: Period,
    positive: str | None,
) -> RootCause:
    """What moved: the features that drifted most, and the categorical segments whose quality
    dropped most between the earlier windows and the last (accuracy, or the mean absolute error
    of a regressor), weighted by their share of the last window's labels."""
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
    return {"features": moved, "segments": [s for s in segments if s["impact"] > 0][:5]}

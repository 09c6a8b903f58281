"""Ground truth that arrives after the prediction: find each id's prediction, then log labels.

Feedback happens in steps so that access control and the model's output type can sit
between them:

    resolve_feedback(pairs, writer, reader)  -> which model version each id's prediction is of
    (the caller checks its key may label those models)
    type_labels(resolved, output_of)         -> each label as the version's output type (a
                                                class it knows, a number for a regressor), or
                                                `InvalidLabels` naming every bad one
    label_changes(resolved, reader)          -> labels that replace a different earlier one
                                                (the caller audits them)
    record_feedback(resolved, writer, ...)   -> the labels logged, and what was refused

An id is looked up in this process's unwritten log and in the Parquet logs, and one found in
neither among the predictions devices uploaded (`uploaded`: their ids are the devices' own,
any text). A well-formed id younger than the horizon (a few flush intervals) may still sit in
another replica's spool: its label is stored as pending and joined once the prediction lands.
A key bound to one model cannot have labels stored for predictions whose model is not known
yet: those are refused with a reason, to be sent again in a few seconds.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from shipyard.core.errors import BackendUnavailable, InvalidLabels, MalformedRequest
from shipyard.core.values import category_text, typed_label
from shipyard.logstore._reader import LogReader, id_time
from shipyard.logstore._writer import LogWriter

__all__ = [
    "FeedbackResult",
    "ResolvedFeedback",
    "Uploaded",
    "horizon_seconds",
    "label_changes",
    "parse_feedback",
    "record_feedback",
    "resolve_feedback",
    "type_labels",
]

log = logging.getLogger("shipyard.logstore")

MAX_ITEMS = 10_000
MAX_ID_CHARS = 128  # shipyard's ids are 32 hex digits; a device's own (uploaded) up to 128
MAX_LABEL_CHARS = 256

Uploaded = Callable[[Sequence[str]], Mapping[str, Sequence[tuple[str, int, datetime]]]]
"""Ids -> the uploaded predictions with each id: (model, version, when it was made); one per
model that has one (a device's id is unique per model, not across models)."""


@dataclass
class FeedbackResult:
    """What happened to each label: stored (verified or pending) or refused with a reason."""

    accepted: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    unknown: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "accepted": len(self.accepted) + len(self.pending),
            "pending": self.pending,
            "unknown": self.unknown,
        }


@dataclass(frozen=True)
class _Item:
    prediction_id: str
    label: Any
    model: str | None  # the model of a logged prediction; None while it is not found yet
    refused: str | None = None  # why the label cannot be stored
    version: int | None = None  # the version that made the prediction, when known
    made: datetime | None = None  # when an uploaded prediction was made (its id does not say)


@dataclass(frozen=True)
class ResolvedFeedback:
    """Labels with the model of each prediction they are for, as far as it is known."""

    items: list[_Item]

    @property
    def models(self) -> set[str]:
        """The models whose predictions these labels are for."""
        return {i.model for i in self.items if i.model is not None}


def horizon_seconds(writer: LogWriter) -> float:
    """How young an id must be to count as a prediction still on its way to the Parquet logs
    (in some replica's spool): a few flush intervals, and at least 30 s."""
    return max(30.0, 3 * writer.flush_seconds)


def parse_feedback(body: Any) -> list[tuple[str, Any]]:
    """`{"prediction_id", "label"}`, a list of them, or `{"feedback": [...]}` -> pairs."""
    items = (
        body.get("feedback", body)
        if isinstance(body, dict) and "prediction_id" not in body
        else body
    )
    if isinstance(items, dict):
        items = [items]
    if not isinstance(items, list) or not items:
        raise MalformedRequest(
            'send {"prediction_id": "...", "label": ...}, a list of those, or {"feedback": [...]}'
        )
    if len(items) > MAX_ITEMS:
        raise MalformedRequest(
            f"{len(items)} labels in one request is over the limit of {MAX_ITEMS}; split them"
        )
    pairs = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "prediction_id" not in item or "label" not in item:
            raise MalformedRequest(f"feedback[{i}] needs both 'prediction_id' and 'label'")
        pid, label = item["prediction_id"], item["label"]
        if not isinstance(pid, str) or len(pid) > MAX_ID_CHARS:
            raise MalformedRequest(
                f"feedback[{i}].prediction_id must be a string (a prediction id: 32 hex digits, "
                f"or a device's own of at most {MAX_ID_CHARS} characters)"
            )
        if label is None or isinstance(label, list | dict):
            raise MalformedRequest(f"feedback[{i}].label must be a number, string or boolean")
        if isinstance(label, str) and len(label) > MAX_LABEL_CHARS:
            raise MalformedRequest(
                f"feedback[{i}].label is longer than {MAX_LABEL_CHARS} characters"
            )
        if isinstance(label, float) and not math.isfinite(label):
            raise MalformedRequest(f"feedback[{i}].label must be a finite number")
        if isinstance(label, int) and not isinstance(label, bool) and not -(2**63) <= label < 2**63:
            raise MalformedRequest(f"feedback[{i}].label is an integer out of the 64-bit range")
        pairs.append((pid, label))
    return pairs


def resolve_feedback(
    pairs: list[tuple[str, Any]],
    writer: LogWriter,
    reader: LogReader,
    *,
    horizon: float | None = None,
    now: datetime | None = None,
    uploaded: Uploaded | None = None,
) -> ResolvedFeedback:
    """Find the prediction (and so the model) each label is for; refuse ids that cannot be.

    `horizon`: seconds an id not found yet still counts as pending (default: `horizon_seconds`).
    `uploaded`: looks up ids found nowhere else among devices' uploaded predictions.
    """
    moment = now or datetime.now(UTC)
    horizon = horizon_seconds(writer) if horizon is None else horizon
    local = writer.pending_predictions()
    made = {pid: id_time(pid) for pid, _ in pairs}
    candidates = [
        pid
        for pid, _ in pairs
        if pid not in local and (t := made[pid]) is not None and t <= moment + timedelta(seconds=5)
    ]
    found = reader.predictions_of(candidates) if candidates else {}
    missing = [pid for pid, _ in pairs if pid not in local and pid not in found]
    edge, edge_away = _uploaded(uploaded, missing)
    items = []
    for pid, label in pairs:
        when = made[pid]
        model, version = local.get(pid) or found.get(pid) or (None, None)
        at = None
        refused = None
        if model is None and len(edge.get(pid, ())) > 1:
            refused = (
                "predictions of several models were uploaded with this id, so the label cannot "
                "be told which it is for (a device's ids must be unique)"
            )
        elif model is None and pid in edge:
            model, version, at = edge[pid][0]
        elif model is None and when is None:
            refused = "not a shipyard prediction id (32 hex digits)"
            if edge_away is not None:
                refused = edge_away
            elif uploaded is not None:
                refused += ", nor one a device uploaded"
        elif model is None and when is not None and when > moment + timedelta(seconds=5):
            refused = "the id is from the future"
        elif model is None and when is not None and (moment - when).total_seconds() > horizon:
            refused = "no logged prediction has this id"
        items.append(_Item(pid, label, model, refused, version, at))
    return ResolvedFeedback(items)


def _uploaded(
    uploaded: Uploaded | None, ids: list[str]
) -> tuple[Mapping[str, Sequence[tuple[str, int, datetime]]], str | None]:
    """The uploaded predictions of `ids`, and the reason to give for ids it could not look up
    (None: it could). A database that does not answer must not stop labels for the server's own
    predictions, which need no look-up."""
    if uploaded is None or not ids:
        return {}, None
    try:
        return uploaded(ids), None
    except BackendUnavailable as error:
        log.warning("cannot look up uploaded predictions for labels: %s", error.message)
        return {}, (
            "uploaded predictions cannot be looked up now (the metadata database does not "
            "answer); send it again shortly"
        )


# (model, version) -> (task, classes), e.g. ("multiclass", ["setosa", ...])
OutputOf = Callable[[str, int], tuple[str, list[Any] | None]]


def type_labels(resolved: ResolvedFeedback, output_of: OutputOf) -> ResolvedFeedback:
    """Each label as the output type of the version that made its prediction; raises
    `InvalidLabels` naming every label that is not (nothing of the request is stored then).
    A label whose prediction is not found yet cannot be checked: it is stored as sent, and a
    retrain that cannot use it counts and reports it."""
    problems = []
    items = []
    for index, item in enumerate(resolved.items):
        if item.refused is not None or item.model is None or item.version is None:
            items.append(item)
            continue
        task, classes = output_of(item.model, item.version)
        value, problem = typed_label(item.label, task, classes)
        if problem is not None:
            problems.append({
                "loc": ["body", index, "label"], "prediction_id": item.prediction_id,
                "label": item.label if not isinstance(item.label, str) else item.label[:64],
                "msg": f"{item.model}:{item.version} is a {task} model: {problem}",
            })  # fmt: skip
        items.append(replace(item, label=value))
    if problems:
        shown = "; ".join(f"{p['prediction_id']}: {p['msg']}" for p in problems[:3])
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise InvalidLabels(
            f"{len(problems)} label(s) do not fit their model, nothing was stored: {shown}{more}",
            problems[:1000],
        )
    return ResolvedFeedback(items)


def label_changes(resolved: ResolvedFeedback, reader: LogReader) -> list[dict[str, Any]]:
    """Labels that replace a different one logged earlier for the same prediction, with the
    model, version, and the label before and after (a label sent again within a flush interval
    is still in the spool, not in the logs, and is not seen here)."""
    known = [i for i in resolved.items if i.refused is None and i.model is not None]
    if not known:
        return []
    made = {i.prediction_id: i.made for i in known if i.made is not None}
    before = reader.labels_of([i.prediction_id for i in known], made=made)
    changes = []
    for item in resolved.items:
        old = before.get(item.prediction_id)
        new = category_text(item.label)
        if item.refused is None and old is not None and old != new:
            changes.append({"prediction_id": item.prediction_id, "model": item.model,
                            "version": item.version, "before": old, "after": new})  # fmt: skip
    return changes


def record_feedback(
    resolved: ResolvedFeedback,
    writer: LogWriter,
    *,
    key_id: str | None = None,
    bound_to: str | None = None,
) -> FeedbackResult:
    """Log the labels that can be stored; report the others with the reason.

    `bound_to` is the model the calling key is bound to, if any: a label for a prediction
    whose model is not known yet cannot be checked against it, so it is refused (for now).
    """
    result = FeedbackResult()
    keep_ids: list[str] = []
    keep_labels: list[Any] = []
    for item in resolved.items:
        refused = item.refused
        if refused is None and item.model is None and bound_to is not None:
            refused = (
                "the prediction is not in the logs yet, so this key (bound to model "
                f"{bound_to!r}) cannot be checked against its model; send it again in a few "
                "seconds"
            )
        if refused is not None:
            result.unknown.append({"prediction_id": item.prediction_id, "reason": refused})
            continue
        (result.accepted if item.model is not None else result.pending).append(item.prediction_id)
        keep_ids.append(item.prediction_id)
        keep_labels.append(item.label)
    if keep_ids:
        writer.log_labels(keep_ids, keep_labels, key_id=key_id, at=time.time())
    return result

"""Predictions devices made offline and upload later (`POST /v1/logs/upload`), logged like the
server's own: Parquet segments with `source = edge`, the device as `job_id`, each row at the
time the device made it; monitored, labelled and retrained on like any other prediction.

    check the upload against its version: ids unique in it, times plausible, the inputs by the
    version's signature, the outputs by its task (a binary score, multiclass probabilities, a
    regression value; a label one of its classes)
    one database transaction:
        claim the ids (INSERT ... ON CONFLICT DO NOTHING into `uploaded_predictions`)
        write one Parquet segment per UTC day of the rows claimed now
        commit

Exactly once, across retries and crashes: an id the model has already is a duplicate and is not
logged again. A segment that cannot be written rolls the claims back (503: send the upload
again). A crash after the write and before the commit leaves a segment whose ids were never
claimed; segments are named after what they hold (a digest of the model, version, day and the
sorted ids), so the retry claims the same ids and writes the same segment in its place.
Overlapping uploads at once: on PostgreSQL the second waits on the first's uncommitted ids (the
primary key) and then skips them; SQLite runs one writing transaction at a time (`BEGIN
IMMEDIATE`).

A device's prediction ids must be unique per model (a UUID each, or `shipyard.core.new_id()`):
an id another device uploaded first is not logged and comes back as a conflict. Labels for
uploaded predictions go to `POST /v1/feedback` with the device's ids.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import numpy as np
import pyarrow as pa
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    field_validator,
)

from shipyard.core import MAX_VERSION, Columns, Signature
from shipyard.core.errors import LogUnavailable, PayloadTooLarge, SchemaViolation
from shipyard.core.values import category_text, typed_label
from shipyard.logstore import write_block
from shipyard.registry import ModelVersion, Registry
from shipyard.serving import _repository as repo
from shipyard.store import utcnow

__all__ = [
    "MAX_ROWS",
    "EdgeUploads",
    "PredictionUpload",
    "UploadResult",
    "UploadedPrediction",
]

log = logging.getLogger("shipyard.serving")

MAX_ROWS = 10_000
MAX_ID_CHARS = 128
AHEAD = timedelta(minutes=5)  # a device's clock may run this far ahead of the server's
MAX_AGE = timedelta(days=365)  # older: a clock that was never set (1970), not a prediction
_SUM_TOLERANCE = 0.01  # probabilities rounded on a device still sum to 1 within this
_MAX_DETAILS = 100
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_OUTPUT_FIELDS = ("score", "label", "value", "probabilities")

_PRINTABLE = r"^[^\x00-\x1f\x7f-\x9f]+$"  # no control characters
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
Text = Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS, pattern=_PRINTABLE)]
Probability = Annotated[float, Field(strict=True, ge=0.0, le=1.0)]
Label = StrictBool | StrictInt | StrictFloat | Annotated[str, Field(max_length=256)]


class UploadedPrediction(BaseModel):
    """One prediction a device made: its id, when, the inputs and what the model answered."""

    model_config = ConfigDict(extra="forbid")

    prediction_id: Text = Field(
        description="the device's id for it, unique per model (a UUID); labels name it"
    )
    ts: AwareDatetime = Field(
        description="when the device made it, with its time zone (e.g. 2026-11-30T08:15:00Z)"
    )
    inputs: dict[str, Any] = Field(
        max_length=10_000, description="the version's signature columns, as /predict takes them"
    )
    score: Probability | None = Field(
        default=None, description="binary: the positive class's probability"
    )
    label: Label | None = Field(
        default=None,
        description="classifiers: the class decided (default: by the version's threshold, or "
        "the most probable class)",
    )
    value: Annotated[float, Field(strict=True, allow_inf_nan=False)] | None = Field(
        default=None, description="regression: the predicted value"
    )
    probabilities: (
        Annotated[list[Probability], Field(min_length=2, max_length=10_000)]
        | Annotated[dict[str, Probability], Field(min_length=2, max_length=10_000)]
        | None
    ) = Field(
        default=None,
        description="multiclass: one per class, in the version's class order or by class",
    )


class PredictionUpload(BaseModel):
    """Predictions one device made with one version, uploaded together."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(max_length=128, pattern=_NAME, description="the model's name")
    version: StrictInt = Field(ge=1, le=MAX_VERSION, description="the version that predicted")
    device_id: Text = Field(description="the device that made the predictions")
    predictions: list[UploadedPrediction] = Field(
        min_length=1,
        max_length=MAX_ROWS,
        description=f"1 to {MAX_ROWS:,} predictions; ids unique within the upload",
    )

    @field_validator("predictions", mode="before")
    @classmethod
    def _within_limit(cls, value: Any) -> Any:
        if isinstance(value, list) and len(value) > MAX_ROWS:
            raise PayloadTooLarge(
                f"{len(value)} predictions in one upload is over the limit of {MAX_ROWS:,}; "
                "split them (shipyard.Client.upload_predictions does)"
            )
        return value


@dataclass
class UploadResult:
    """What an upload logged: `accepted` new predictions; `duplicates` already uploaded (a
    retry); `conflicts`, ids another device uploaded first (not logged)."""

    model: str
    version: int
    accepted: int = 0
    duplicates: int = 0
    conflicts: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "conflicts": self.conflicts,
            "model": self.model,
            "version": self.version,
        }


@dataclass
class _Rows:
    """An upload checked against its version, as columns ready for the log."""

    ids: list[str]
    times: np.ndarray  # epoch microseconds
    days: list[str]
    features: dict[str, pa.Array]
    outputs: dict[str, pa.Array]

    def take(
        self, rows: list[int]
    ) -> tuple[pa.Array, pa.Array, dict[str, pa.Array], dict[str, pa.Array]]:
        at = pa.array(rows, pa.int64())
        return (
            pa.array([self.ids[i] for i in rows], pa.string()),
            pa.array(self.times[rows]),
            {name: values.take(at) for name, values in self.features.items()},
            {name: values.take(at) for name, values in self.outputs.items()},
        )


class EdgeUploads:
    """Logs predictions devices uploaded, each once; see the module docstring.

    Args:
        registry: the versions (signature, task, classes), the database that holds the claimed
            ids, and the artifact store the logs go to.
        clock: now, for checking the devices' times (tests set their own).
    """

    def __init__(self, registry: Registry, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.registry = registry
        self.clock = clock
        self._classes: dict[tuple[str, int], list[Any] | None] = {}

    def upload(self, batch: PredictionUpload, *, key_id: str | None = None) -> UploadResult:
        """Log the predictions of `batch` not uploaded before; see the module docstring.

        Raises:
            ModelNotFound, VersionNotFound: no such model or version.
            SchemaViolation: predictions that do not fit the version, each named.
            LogUnavailable: the log could not be written; nothing was recorded (send it again).
        """
        record = self.registry.get_version(batch.model, batch.version)
        rows = self._check(batch, record)
        result = UploadResult(record.name, record.version)
        now = self.clock()
        with self.registry.database.transaction() as conn:
            claimed = repo.claim(
                conn, record.name, record.version, batch.device_id,
                [(p.prediction_id, p.ts.astimezone(UTC)) for p in batch.predictions], now,
            )  # fmt: skip
            rest = [pid for pid in rows.ids if pid not in claimed]
            taken = repo.owners(conn, record.name, rest) if rest else {}
            result.conflicts = [pid for pid in rest if taken.get(pid) != batch.device_id]
            result.duplicates = len(rest) - len(result.conflicts)
            result.accepted = len(claimed)
            if claimed:
                self._write(record, batch.device_id, rows, claimed, key_id)
        if claimed:
            log.debug(
                "logged %d predictions %s:%d uploaded from %s (%d duplicates)",
                len(claimed), record.name, record.version, batch.device_id, result.duplicates,
            )  # fmt: skip
        return result

    def find(self, ids: Sequence[str]) -> dict[str, list[tuple[str, int, datetime]]]:
        """The uploaded predictions with each of `ids`: (model, version, when it was made), one
        per model that has the id (for `shipyard.logstore.resolve_feedback`)."""
        return self.registry.database.read(lambda conn: repo.find(conn, list(ids)))

    # -- checks ---------------------------------------------------------------------------------

    def _check(self, batch: PredictionUpload, record: ModelVersion) -> _Rows:
        """The upload as log columns, or `SchemaViolation` naming every prediction that does
        not fit the version."""
        problems: list[dict[str, Any]] = []
        predictions = batch.predictions
        problems += _repeated_ids(predictions)
        problems += _implausible_times(predictions, self.clock())
        features = _inputs(record.signature, predictions, problems)
        classes = self._classes_of(record)
        outputs = _outputs(record, classes, predictions, problems)
        if problems:
            shown = "; ".join(f"{_where(p['loc'])}: {p['msg']}" for p in problems[:3])
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            raise SchemaViolation(
                f"the upload does not fit {record.ref}, nothing was logged: {shown}{more}",
                problems[:_MAX_DETAILS],
            )
        assert features is not None
        assert outputs is not None
        microsecond = timedelta(microseconds=1)
        times = np.array([(p.ts - _EPOCH) // microsecond for p in predictions], np.int64)
        return _Rows(
            [p.prediction_id for p in predictions],
            times,
            [p.ts.astimezone(UTC).strftime("%Y-%m-%d") for p in predictions],
            features,
            outputs,
        )

    def _classes_of(self, record: ModelVersion) -> list[Any] | None:
        """A classifier's classes (read once per version: a version never changes)."""
        if record.task not in ("binary", "multiclass"):
            return None
        key = (record.name, record.version)
        if key not in self._classes:
            classes = self.registry.classes(record.name, record.version)
            if len(self._classes) >= 4096:
                self._classes.clear()
            self._classes[key] = (
                classes if classes else ([0, 1] if record.task == "binary" else None)
            )
        return self._classes[key]

    # -- the log --------------------------------------------------------------------------------

    def _write(
        self,
        record: ModelVersion,
        device_id: str,
        rows: _Rows,
        claimed: set[str],
        key_id: str | None,
    ) -> None:
        """One segment per UTC day of the claimed rows, named after the ids it holds."""
        by_day: dict[str, list[int]] = defaultdict(list)
        for i, (pid, day) in enumerate(zip(rows.ids, rows.days, strict=True)):
            if pid in claimed:
                by_day[day].append(i)
        for day, indices in sorted(by_day.items()):
            ids, times, features, outputs = rows.take(indices)
            try:
                write_block(
                    self.registry.artifacts,
                    name=_segment_name(record, day, [rows.ids[i] for i in indices]),
                    model=record.name,
                    version=record.version,
                    ids=ids,
                    at=datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC),
                    source="edge",
                    job_id=device_id,
                    variant="edge",
                    features=features,
                    outputs=outputs,
                    times=times,
                    key_id=key_id,
                )
            except OSError as error:
                log.warning(
                    "cannot write uploaded predictions of %s to the log (%s); the upload is "
                    "refused and nothing of it recorded", record.ref, error,
                )  # fmt: skip
                raise LogUnavailable(
                    f"the prediction log cannot be written ({type(error).__name__}: "
                    f"{error.strerror or error}); nothing of this upload was recorded: send it "
                    "again shortly",
                    retry_after=5.0,
                ) from None


def _segment_name(record: ModelVersion, day: str, ids: list[str]) -> str:
    """`edge-<digest>`: the same ids of one version and day always name the same segment."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{record.name}\0{record.version}\0{day}".encode())
    for pid in sorted(ids):
        digest.update(b"\0" + pid.encode())
    return f"edge-{digest.hexdigest()}"


def _problem(loc: Sequence[str | int], message: str) -> dict[str, Any]:
    return {"loc": list(loc), "msg": message}


def _where(loc: Sequence[str | int]) -> str:
    return "".join(
        f"[{p}]" if isinstance(p, int) else (f".{p}" if i else p) for i, p in enumerate(loc)
    )


def _repeated_ids(predictions: Sequence[UploadedPrediction]) -> list[dict[str, Any]]:
    counts = Counter(p.prediction_id for p in predictions)
    if len(counts) == len(predictions):
        return []
    first: dict[str, int] = {}
    problems = []
    for i, p in enumerate(predictions):
        pid = p.prediction_id
        if counts[pid] < 2:
            continue
        if pid not in first:
            first[pid] = i
            continue
        message = (
            f"{pid[:64]!r} appears {counts[pid]} times in this upload (first at "
            f"predictions[{first[pid]}]); give each prediction its own id"
        )
        problems.append(_problem(["predictions", i, "prediction_id"], message))
    return problems


def _implausible_times(
    predictions: Sequence[UploadedPrediction], now: datetime
) -> list[dict[str, Any]]:
    latest, earliest = now + AHEAD, now - MAX_AGE
    problems = []
    for i, p in enumerate(predictions):
        if p.ts > latest:
            message = (
                f"{p.ts.isoformat()} is {_span(p.ts - now)} ahead of the server's clock (at "
                f"most {_span(AHEAD)} is taken); set the device's clock"
            )
            problems.append(_problem(["predictions", i, "ts"], message))
        elif p.ts < earliest:
            message = (
                f"{p.ts.isoformat()} is more than {MAX_AGE.days} days ago; a device whose clock "
                "was never set sends times like this: set it"
            )
            problems.append(_problem(["predictions", i, "ts"], message))
    return problems


def _span(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    for unit, size in (("days", 86_400), ("hours", 3_600), ("minutes", 60)):
        if seconds >= size:
            return f"{seconds / size:.4g} {unit}"
    return f"{seconds:.3g} seconds"


def _inputs(
    signature: Signature, predictions: Sequence[UploadedPrediction], problems: list[dict[str, Any]]
) -> dict[str, pa.Array] | None:
    """The inputs as typed log columns, checked as `/predict` checks records (None when they
    do not fit: the problems, at the place in the upload, are added to `problems`)."""
    try:
        columns: Columns = signature.validate_records([p.inputs for p in predictions])
    except SchemaViolation as error:
        for detail in error.details():
            loc = list(detail.get("loc") or [])
            # ["instances", i, column] -> where it sits in the upload
            where = ["predictions", loc[1], "inputs", *loc[2:]] if len(loc) > 1 else ["predictions"]
            problems.append(_problem(where, str(detail.get("msg", ""))))
        return None
    types = {c.name: c.type for c in signature.columns}
    return {
        name: pa.array(values, from_pandas=True).cast(
            pa.string() if types[name] == "string" else pa.from_numpy_dtype(np.dtype(types[name]))
        )
        for name, values in columns.items()
    }


def _outputs(
    record: ModelVersion,
    classes: list[Any] | None,
    predictions: Sequence[UploadedPrediction],
    problems: list[dict[str, Any]],
) -> dict[str, pa.Array] | None:
    """The outputs as log columns (score, label, value, probabilities, as the server logs its
    own), checked against the version's task; None when any does not fit."""
    task = record.task
    wanted = {"binary": "score", "multiclass": "probabilities", "regression": "value"}.get(task)
    if wanted is None:
        problems.append(
            _problem(
                ["version"],
                f"{record.ref} is a {task!r} model, whose predictions cannot be uploaded",
            )
        )
        return None
    allowed = {"binary": {"score", "label"}, "multiclass": {"probabilities", "label", "score"}}.get(
        task, {wanted}
    )
    before = len(problems)
    scores: list[float | None] = []
    labels: list[str | None] = []
    values: list[float | None] = []
    matrix: list[list[float]] = []
    threshold = record.threshold if record.threshold is not None else 0.5
    for i, p in enumerate(predictions):
        where: list[str | int] = ["predictions", i]
        sent = {name for name in _OUTPUT_FIELDS if getattr(p, name) is not None}
        for name in sorted(sent - allowed):
            message = f"{record.ref} is a {task} model: send {_shape(task)}, not {name!r}"
            problems.append(_problem([*where, name], message))
        if wanted not in sent:
            message = f"missing; {record.ref} is a {task} model: send {_shape(task)}"
            problems.append(_problem([*where, wanted], message))
            continue
        if task == "regression":
            values.append(p.value)
            continue
        if task == "binary":
            assert p.score is not None
            decided = (classes or [0, 1])[1 if p.score >= threshold else 0]
            scores.append(p.score)
        else:
            row = _probabilities(p.probabilities, classes, [*where, "probabilities"], problems)
            if row is None:
                continue
            highest = max(row)
            if p.score is not None and not math.isclose(p.score, highest, abs_tol=1e-6):
                message = f"{p.score} is not the highest probability ({highest}), which it is"
                problems.append(_problem([*where, "score"], message))
                continue
            matrix.append(row)
            scores.append(highest)
            decided = (classes or [])[row.index(highest)]
        if p.label is not None:
            decided, problem = typed_label(p.label, task, classes)
            if problem is not None:
                problems.append(_problem([*where, "label"], f"{record.ref}: {problem}"))
        labels.append(category_text(decided))
    if len(problems) > before:
        return None
    if task == "regression":
        return {"value": pa.array(values, pa.float64())}
    outputs = {"score": pa.array(scores, pa.float64()), "label": pa.array(labels, pa.string())}
    if task == "multiclass":
        outputs["probabilities"] = pa.array(matrix, pa.list_(pa.float64()))
    return outputs


def _shape(task: str) -> str:
    return {
        "binary": "'score' (the positive class's probability) and, if you like, 'label'",
        "multiclass": "'probabilities' (one per class) and, if you like, 'label' and 'score'",
        "regression": "'value'",
    }[task]


def _probabilities(
    given: list[float] | dict[str, float] | None,
    classes: list[Any] | None,
    loc: list[str | int],
    problems: list[dict[str, Any]],
) -> list[float] | None:
    """One probability per class, in the classes' order; None (and a problem) when not."""
    if not classes:
        message = "the version does not say its classes, so its probabilities cannot be checked"
        problems.append(_problem(loc, message))
        return None
    names = [str(category_text(c)) for c in classes]
    if isinstance(given, dict):
        row = _by_class(given, classes)
        if row is None:
            message = (
                f"takes one probability for each class ({', '.join(names[:20])}), got "
                f"{', '.join(list(given)[:20])}"
            )
            problems.append(_problem(loc, message))
            return None
    else:
        row = list(given or [])
        if len(row) != len(names):
            message = (
                f"has {len(row)} values; the model has {len(names)} classes "
                f"({', '.join(names[:20])}), one each"
            )
            problems.append(_problem(loc, message))
            return None
    if not math.isclose(sum(row), 1.0, abs_tol=_SUM_TOLERANCE):
        message = (
            f"sum to {sum(row):.4g}; probabilities sum to 1 (scores before a softmax are not "
            "probabilities)"
        )
        problems.append(_problem(loc, message))
        return None
    return row


def _by_class(given: dict[str, float], classes: list[Any]) -> list[float] | None:
    """Probabilities keyed by class (as `/predict` answers them, `str(class)`, or as labels are
    compared, `1` for 1.0 and `true` for True) in the classes' order; None unless each class
    has exactly one."""
    index: dict[str, int] = {}
    for i, c in enumerate(classes):
        for name in (str(c), str(category_text(c))):
            index.setdefault(name, i)
    row: list[float | None] = [None] * len(classes)
    for key, probability in given.items():
        at = index.get(key)
        if at is None or row[at] is not None:
            return None
        row[at] = probability
    if any(p is None for p in row):
        return None
    return [float(p) for p in row if p is not None]

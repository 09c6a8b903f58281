"""Spool lines to Parquet segments: one per model version and day for predictions, one per
day for labels, named after the spool file so replaying a file rewrites the same objects.

    logs/predictions/model=<name>/date=<YYYY-MM-DD>/<spool>-v<version>.parquet
    logs/labels/date=<YYYY-MM-DD>/<spool>.parquet
    logs/errors/date=<YYYY-MM-DD>/<spool>.parquet

Prediction columns: prediction_id, ts (UTC), model, version, variant, key_id, request_id,
latency_ms, routing_key (`routing_key_hash` of the sticky-routing key; null when the request
had none, and in segments written before the column), source (`online`, `batch`, `stream` or
`edge`; null in segments written before the column: online), job_id (the batch job or stream
consumer group that scored the row, the device that uploaded it), features (a struct of the
inputs, typed by the signature), score, label, value, probabilities. Label columns:
prediction_id, label, received_at, key_id.

Batch jobs, streams and devices' uploads write their own segments, one per chunk of rows,
straight from their columns (`write_block`), never through the spool:

    logs/predictions/model=<name>/date=<YYYY-MM-DD>/<job>-<chunk>-v<version>.parquet
    logs/predictions/model=<name>/date=<YYYY-MM-DD>/edge-<digest of the ids>-v<version>.parquet
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from itertools import groupby
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from shipyard.core.values import category_text
from shipyard.store import ArtifactStore

__all__ = [
    "ERROR_SCHEMA",
    "LABEL_SCHEMA",
    "PREDICTION_SCHEMA_BASE",
    "TypesOf",
    "routing_key_hash",
    "write_block",
    "write_segments",
]

log = logging.getLogger("shipyard.logstore")

TypesOf = Callable[[str, int], dict[str, str] | None]
"""Signature column types of a model version (name -> float64/int64/.../string), if known."""

_ARROW = {
    "float64": pa.float64(),
    "float32": pa.float32(),
    "int64": pa.int64(),
    "int32": pa.int32(),
    "bool": pa.bool_(),
    "string": pa.string(),
}
PREDICTION_SCHEMA_BASE = pa.schema(
    [
        ("prediction_id", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("model", pa.string()),
        ("version", pa.int32()),
        ("variant", pa.string()),
        ("key_id", pa.string()),
        ("request_id", pa.string()),
        ("latency_ms", pa.float64()),
        ("routing_key", pa.string()),
        ("source", pa.string()),
        ("job_id", pa.string()),
    ]
)
_OUTPUTS = [
    ("score", pa.float64()),
    ("label", pa.string()),
    ("value", pa.float64()),
    ("probabilities", pa.list_(pa.float64())),
]
ERROR_SCHEMA = pa.schema(
    [
        ("ts", pa.timestamp("us", tz="UTC")),
        ("model", pa.string()),
        ("version", pa.int32()),
        ("variant", pa.string()),
        ("status", pa.int32()),
        ("error", pa.string()),
        ("fields", pa.list_(pa.string())),
        ("key_id", pa.string()),
        ("request_id", pa.string()),
    ]
)
LABEL_SCHEMA = pa.schema(
    [
        ("prediction_id", pa.string()),
        ("label", pa.string()),
        ("received_at", pa.timestamp("us", tz="UTC")),
        ("key_id", pa.string()),
    ]
)


def routing_key_hash(key: str) -> str:
    """What the log keeps of a sticky-routing key: its BLAKE2b digest (8 bytes, 16 hex digits),
    never the key itself (often a customer id). Enough to group a customer's predictions
    (sticky routing puts them on one variant, and they are correlated); two keys share a
    digest about once in 2^64."""
    return hashlib.blake2b(key.encode(), digest_size=8).hexdigest()


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def label_text(value: Any) -> str | None:
    """Labels are stored as text so any class type (0/1, 'fraud', true) compares alike: the
    one normaliser of category values, `shipyard.core.values.category_text`."""
    return category_text(value)


def _label_texts(values: Any) -> list[str | None]:
    """`label_text` of each value, worked out once per distinct value (bool and 1 apart)."""
    memo: dict[tuple[type, Any], str | None] = {}
    out = []
    for value in values.tolist() if isinstance(values, np.ndarray) else values:
        key = (type(value), value)
        if key not in memo:
            memo[key] = label_text(value)
        out.append(memo[key])
    return out


def read_entries(data: bytes) -> Iterator[dict[str, Any]]:
    """Parsed spool entries: a JSON line each; an entry with `"raw": true` is followed by the
    raw bytes of the columns it marks `{"raw": [dtype, nbytes]}` (in order, "in" before
    "out"), which become numpy arrays.

    A torn tail (a write cut off by a crash; its request was never answered) is skipped
    quietly; unreadable bytes in the middle of a file are skipped and reported.
    """
    view = memoryview(data)
    size = len(data)
    pos = 0
    bad_from: int | None = None  # start of a run of unreadable bytes
    while pos < size:
        end = data.find(b"\n", pos)
        end = size if end < 0 else end
        entry = _entry(view[pos:end])
        start, pos = pos, min(end + 1, size)
        if entry is None:
            bad_from = start if bad_from is None else bad_from
            continue
        if entry.pop("raw", False):
            pos = _attach_raw(entry, view, pos)
            if pos > size:  # its raw bytes were cut off
                bad_from = start if bad_from is None else bad_from
                break
        if bad_from is not None:
            log.error(
                "skipping a corrupt spool line (%d bytes) in the middle of a file", start - bad_from
            )
            bad_from = None
        yield entry


def _entry(line: memoryview) -> dict[str, Any] | None:
    if not line:
        return None
    try:
        entry = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return entry if isinstance(entry, dict) and "k" in entry else None


def _attach_raw(entry: dict[str, Any], view: memoryview, pos: int) -> int:
    """Replace an entry's raw-column markers by arrays over the bytes at `pos`; returns the end."""
    for section in ("in", "out"):
        columns = entry.get(section) or {}
        for name, value in columns.items():
            if isinstance(value, dict) and "raw" in value:
                dtype, nbytes = value["raw"]
                if pos + nbytes > len(view):
                    return len(view) + 1
                columns[name] = np.frombuffer(view[pos : pos + nbytes], dtype=np.dtype(dtype))
                pos += nbytes
    return pos


class _Chunks:
    """One column across spool entries: runs of Python values and numpy arrays, in order."""

    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: list[list[Any] | np.ndarray] = []

    def add(self, values: list[Any] | np.ndarray) -> None:
        if isinstance(values, list) and self.parts and isinstance(self.parts[-1], list):
            self.parts[-1].extend(values)
        else:
            self.parts.append(values if isinstance(values, np.ndarray) else list(values))

    def array(self, arrow_type: pa.DataType | None) -> pa.Array:
        if not self.parts:
            return pa.array([], type=arrow_type or pa.null())
        arrays = []
        for is_array, run in groupby(self.parts, key=lambda part: isinstance(part, np.ndarray)):
            if is_array:  # neighbouring arrays joined first: one Arrow call per run, not per entry
                # from_pandas: a NaN a nullable column was given as (a JSON null) is a null again
                arrays.append(
                    pa.array(np.concatenate(list(run)), type=arrow_type, from_pandas=True)
                )
            else:  # add() already merged neighbouring lists: one part
                arrays.extend(pa.array(part, type=arrow_type) for part in run)
        if len({a.type for a in arrays}) > 1:  # untyped column whose parts inferred differently
            return pa.array([v for part in self.parts for v in list(part)])
        return arrays[0] if len(arrays) == 1 else pa.concat_arrays(arrays)


class _PredictionGroup:
    def __init__(self) -> None:
        self.meta: dict[str, list[Any]] = defaultdict(list)
        self.features: dict[str, _Chunks] = {}
        self.outputs: dict[str, _Chunks] = {name: _Chunks() for name, _ in _OUTPUTS}
        self.rows = 0

    def add(self, entry: dict[str, Any]) -> None:
        ids = entry["ids"]
        n = len(ids)
        self.meta["prediction_id"].extend(ids)
        self.meta["ts"].extend([round(entry["t"] * 1e6)] * n)  # epoch microseconds
        for column, value in (
            ("model", entry["m"]),
            ("version", entry["v"]),
            ("variant", entry["r"]),
            ("key_id", entry.get("key")),
            ("request_id", entry.get("rid")),
            ("latency_ms", entry.get("lat")),
            ("routing_key", entry.get("rk")),
            ("source", entry.get("src", "online")),
            ("job_id", entry.get("job")),
        ):
            self.meta[column].extend([value] * n)
        inputs = entry["in"]
        # in the order the inputs came (a set would shuffle the struct's fields per process)
        for name in inputs:
            if name not in self.features:
                self.features[name] = _Chunks()
                if self.rows:
                    self.features[name].add([None] * self.rows)
        for name, chunks in self.features.items():
            values = inputs.get(name)
            chunks.add(values if values is not None else [None] * n)
        out = entry["out"]
        for name, chunks in self.outputs.items():
            values = out.get(name)
            if values is None:
                chunks.add([None] * n)
            elif name == "label":
                chunks.add(_label_texts(values))
            else:
                chunks.add(values)
        self.rows += n

    def table(self, types: dict[str, str] | None) -> pa.Table:
        arrays = []
        for f in PREDICTION_SCHEMA_BASE:
            if f.name == "ts":
                arrays.append(pa.array(self.meta["ts"], type=pa.int64()).cast(f.type))
            else:
                arrays.append(pa.array(self.meta[f.name], type=f.type))
        fields = list(PREDICTION_SCHEMA_BASE)
        feature_arrays = []
        feature_fields = []
        for name, chunks in self.features.items():
            array = chunks.array(_ARROW.get((types or {}).get(name, "")))
            feature_arrays.append(array)
            feature_fields.append(pa.field(name, array.type))
        if feature_arrays:
            arrays.append(pa.StructArray.from_arrays(feature_arrays, fields=feature_fields))
            fields.append(pa.field("features", arrays[-1].type))
        for name, arrow_type in _OUTPUTS:
            arrays.append(self.outputs[name].array(arrow_type))
            fields.append(pa.field(name, arrow_type))
        return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _dictionary_columns(schema: pa.Schema) -> list[str]:
    """Text columns that repeat (model, variant, label, string features): dictionary-encoded.

    Numbers and unique ids are not: trying a dictionary on every float column cost 4x the
    write time (100k rows x 30 floats: 239 vs 60 ms) for larger files.
    """
    paths = []
    for field in schema:
        if pa.types.is_string(field.type) and field.name != "prediction_id":
            paths.append(field.name)
        elif pa.types.is_struct(field.type):
            paths.extend(
                f"{field.name}.{child.name}"
                for child in field.type
                if pa.types.is_string(child.type)
            )
    return paths


# byte-stream-split floats; a float16 stays plain: DuckDB, which reads the log, cannot read a
# split 2-byte column ("only supported for FLOAT, DOUBLE, INT32 or INT64", DuckDB 2.0)
_SPLIT_FLOATS = (pa.float32(), pa.float64())


def _encodings(schema: pa.Schema) -> dict[str, str]:
    """Float columns byte-stream-split, prediction ids delta-encoded.

    Splitting a float's bytes into streams lets zstd find what repeats in them: 50k rows x 30
    floats wrote in 23-54 ms instead of 53-106 ms, in a smaller file for normal or integral
    values (10.9 against 11.6 MB, 2.3 against 2.5 MB), a larger one for prices in cents (8.1
    against 4.8 MB). Ids that share their first characters (a job's, a stream's) are stored
    as what differs from the one before: 50k batch ids in kilobytes instead of 90 kB.
    """
    encodings = {}
    for field in schema:
        if field.type in _SPLIT_FLOATS:
            encodings[field.name] = "BYTE_STREAM_SPLIT"
        elif pa.types.is_struct(field.type):
            for child in field.type:
                if child.type in _SPLIT_FLOATS:
                    encodings[f"{field.name}.{child.name}"] = "BYTE_STREAM_SPLIT"
        elif field.name == "prediction_id" and pa.types.is_string(field.type):
            encodings[field.name] = "DELTA_BYTE_ARRAY"
    return encodings


def _parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(
        table,
        sink,
        compression="zstd",
        use_dictionary=_dictionary_columns(table.schema),
        column_encoding=_encodings(table.schema),
    )
    return sink.getvalue()


def write_segments(store: ArtifactStore, stem: str, data: bytes, types_of: TypesOf | None) -> int:
    """Write the Parquet segments of one spool file's bytes; returns the rows written."""
    predictions: dict[tuple[str, int, str], _PredictionGroup] = defaultdict(_PredictionGroup)
    labels: dict[str, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    errors: dict[str, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for entry in read_entries(data):
        if entry.get("k") == "p":
            predictions[(entry["m"], int(entry["v"]), _day(entry["t"]))].add(entry)
        elif entry.get("k") == "l":
            label_group = labels[_day(entry["t"])]
            n = len(entry["ids"])
            label_group["prediction_id"].extend(entry["ids"])
            label_group["label"].extend(label_text(v) for v in entry["labels"])
            label_group["received_at"].extend([datetime.fromtimestamp(entry["t"], UTC)] * n)
            label_group["key_id"].extend([entry.get("key")] * n)
        elif entry.get("k") == "e":
            error_group = errors[_day(entry["t"])]
            for column, value in (
                ("ts", datetime.fromtimestamp(entry["t"], UTC)),
                ("model", entry["m"]),
                ("version", entry.get("v")),
                ("variant", entry.get("r")),
                ("status", entry["s"]),
                ("error", entry.get("err")),
                ("fields", entry.get("f") or []),
                ("key_id", entry.get("key")),
                ("request_id", entry.get("rid")),
            ):
                error_group[column].append(value)
    rows = 0
    for (model, version, day), group in predictions.items():
        types = types_of(model, version) if types_of is not None else None
        path = f"logs/predictions/model={model}/date={day}/{stem}-v{version}.parquet"
        store.put_bytes(path, _parquet(group.table(types)))
        rows += group.rows
    for day, columns in errors.items():
        table = pa.Table.from_pydict(dict(columns), schema=ERROR_SCHEMA)
        store.put_bytes(f"logs/errors/date={day}/{stem}.parquet", _parquet(table))
        rows += table.num_rows
    for day, columns in labels.items():
        table = pa.Table.from_pydict(dict(columns), schema=LABEL_SCHEMA)
        store.put_bytes(f"logs/labels/date={day}/{stem}.parquet", _parquet(table))
        rows += table.num_rows
    return rows


def write_block(
    store: ArtifactStore,
    *,
    name: str,
    model: str,
    version: int,
    ids: pa.Array,
    at: datetime,
    source: str,
    job_id: str,
    variant: str,
    features: dict[str, pa.Array],
    outputs: dict[str, pa.Array],
    times: pa.Array | None = None,
    key_id: str | None = None,
) -> str:
    """Write one block of predictions made together (a batch job's chunk, a stream's
    micro-batch) as one segment named `name` in the day of `at`; returns its path. Writing
    the same block again replaces it: a chunk scored again after a crash is logged once.

    `outputs` holds any of score, label (text), value, probabilities; `at` is the time every
    row of the block carries (when its job started: a job is one event in the monitor's time)
    unless `times` gives each row's own (a stream's events); the day folder is `at`'s.
    `key_id`: the API key that sent the rows (a device's upload), if any.
    """
    n = len(ids)
    columns: dict[str, pa.Array] = {
        "prediction_id": ids,
        "ts": (
            times.cast(pa.timestamp("us", tz="UTC"))
            if times is not None
            else pa.array(np.full(n, round(at.timestamp() * 1e6), np.int64)).cast(
                pa.timestamp("us", tz="UTC")
            )
        ),
        "model": pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), [model]),
        "version": pa.array(np.full(n, version, np.int32)),
        "variant": pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), [variant]),
        "key_id": (
            pa.nulls(n, pa.string())
            if key_id is None
            else pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), [key_id])
        ),
        "request_id": pa.nulls(n, pa.string()),
        "latency_ms": pa.nulls(n, pa.float64()),
        "routing_key": pa.nulls(n, pa.string()),
        "source": pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), [source]),
        "job_id": pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), [job_id]),
    }
    arrays = [
        columns[f.name]
        if not pa.types.is_dictionary(columns[f.name].type)
        else columns[f.name].cast(f.type)
        for f in PREDICTION_SCHEMA_BASE
    ]
    fields = list(PREDICTION_SCHEMA_BASE)
    if features:
        struct = pa.StructArray.from_arrays(list(features.values()), names=list(features))
        arrays.append(struct)
        fields.append(pa.field("features", struct.type))
    for output, arrow_type in _OUTPUTS:
        given = outputs.get(output)
        arrays.append(pa.nulls(n, arrow_type) if given is None else given.cast(arrow_type))
        fields.append(pa.field(output, arrow_type))
    path = (
        f"logs/predictions/model={model}/date={at.strftime('%Y-%m-%d')}/{name}-v{version}.parquet"
    )
    store.put_bytes(path, _parquet(pa.Table.from_arrays(arrays, schema=pa.schema(fields))))
    return path

"""Spool lines to Parquet segments: one per model version and day for predictions, one per
day for labels, named after the spool file so replaying a file rewrites the same objects.

    logs/predictions/model=<name>/date=<YYYY-MM-DD>/<spool>-v<version>.parquet
    logs/labels/date=<YYYY-MM-DD>/<spool>.parquet
    logs/errors/date=<YYYY-MM-DD>/<spool>.parquet

Prediction columns: prediction_id, ts (UTC), model, version, variant, key_id, request_id,
latency_ms, features (a struct of the inputs, typed by the signature), score, label, value,
probabilities. Label columns: prediction_id, label, received_at, key_id.
"""

from __future__ import annotations

import io
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from shipyard.store import ArtifactStore

__all__ = ["ERROR_SCHEMA", "LABEL_SCHEMA", "PREDICTION_SCHEMA_BASE", "TypesOf", "write_segments"]

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


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def label_text(value: Any) -> str | None:
    """Labels are stored as text so any class type (0/1, 'fraud', true) compares alike."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def read_lines(data: bytes) -> Iterable[dict[str, Any]]:
    """Parsed spool lines; a torn last line (a write cut off by a crash) is skipped."""
    lines = data.split(b"\n")
    for i, line in enumerate(lines):
        if not line:
            continue
        try:
            yield orjson.loads(line)
        except orjson.JSONDecodeError:
            if i < len(lines) - 1 and any(lines[i + 1 :]):
                log.error(
                    "skipping a corrupt spool line (%d bytes) in the middle of a file", len(line)
                )
            # else: the last line, cut off mid-write; its request was never answered


class _PredictionGroup:
    def __init__(self) -> None:
        self.meta: dict[str, list[Any]] = defaultdict(list)
        self.features: dict[str, list[Any]] = defaultdict(list)
        self.outputs: dict[str, list[Any]] = defaultdict(list)
        self.rows = 0

    def add(self, entry: dict[str, Any]) -> None:
        ids = entry["ids"]
        n = len(ids)
        ts = datetime.fromtimestamp(entry["t"], UTC)
        self.meta["prediction_id"].extend(ids)
        for column, value in (
            ("ts", ts),
            ("model", entry["m"]),
            ("version", entry["v"]),
            ("variant", entry["r"]),
            ("key_id", entry.get("key")),
            ("request_id", entry.get("rid")),
            ("latency_ms", entry.get("lat")),
        ):
            self.meta[column].extend([value] * n)
        # in the order the inputs came (a set would shuffle the struct's fields per process)
        for name in [*self.features, *(n for n in entry["in"] if n not in self.features)]:
            values = entry["in"].get(name)
            if name not in self.features and self.rows:
                self.features[name].extend([None] * self.rows)
            self.features[name].extend(values if values is not None else [None] * n)
        out = entry["out"]
        for name, _ in _OUTPUTS:
            values = out.get(name)
            if name == "label" and values is not None:
                values = [label_text(v) for v in values]
            self.outputs[name].extend(values if values is not None else [None] * n)
        self.rows += n

    def table(self, types: dict[str, str] | None) -> pa.Table:
        arrays = [pa.array(self.meta[f.name], type=f.type) for f in PREDICTION_SCHEMA_BASE]
        fields = list(PREDICTION_SCHEMA_BASE)
        feature_arrays = []
        feature_fields = []
        for name, values in self.features.items():
            arrow_type = _ARROW.get((types or {}).get(name, ""))
            array = (
                pa.array(values, type=arrow_type) if arrow_type is not None else pa.array(values)
            )
            feature_arrays.append(array)
            feature_fields.append(pa.field(name, array.type))
        if feature_arrays:
            arrays.append(pa.StructArray.from_arrays(feature_arrays, fields=feature_fields))
            fields.append(pa.field("features", arrays[-1].type))
        for name, arrow_type in _OUTPUTS:
            arrays.append(pa.array(self.outputs[name], type=arrow_type))
            fields.append(pa.field(name, arrow_type))
        return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def write_segments(store: ArtifactStore, stem: str, data: bytes, types_of: TypesOf | None) -> int:
    """Write the Parquet segments of one spool file's bytes; returns the rows written."""
    predictions: dict[tuple[str, int, str], _PredictionGroup] = defaultdict(_PredictionGroup)
    labels: dict[str, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    errors: dict[str, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for entry in read_lines(data):
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
        store.write_bytes(path, _parquet(group.table(types)))
        rows += group.rows
    for day, columns in errors.items():
        table = pa.Table.from_pydict(dict(columns), schema=ERROR_SCHEMA)
        store.write_bytes(f"logs/errors/date={day}/{stem}.parquet", _parquet(table))
        rows += table.num_rows
    for day, columns in labels.items():
        table = pa.Table.from_pydict(dict(columns), schema=LABEL_SCHEMA)
        store.write_bytes(f"logs/labels/date={day}/{stem}.parquet", _parquet(table))
        rows += table.num_rows
    return rows

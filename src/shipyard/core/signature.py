"""A model's input signature: column names, types and nullability, and validation against it.

The signature is inferred from a training sample at registration and stored with the version.
Every request is checked against it before the model sees a value, so a bad record is a 422
naming the field instead of a stack trace from deep inside a model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import chain
from operator import itemgetter
from typing import Any, Literal, get_args

import numpy as np

from shipyard.core.errors import InvalidInput, SchemaViolation

__all__ = ["ColumnSpec", "ColumnType", "Columns", "Signature"]

ColumnType = Literal["float64", "float32", "int64", "int32", "bool", "string"]
COLUMN_TYPES: tuple[str, ...] = get_args(ColumnType)

Columns = dict[str, np.ndarray]
"""Validated input: one numpy array per signature column, all of the same length."""

_MAX_REPORTED_ERRORS = 20
_FLOAT_KINDS = frozenset({int, float, type(None)})
_STRING_KINDS = frozenset({str, type(None)})
_MISSING = object()
_NUMBER_TYPES = frozenset({int, float})
_JSON_TYPE_NAMES = {
    str: "string",
    bool: "boolean",
    int: "integer",
    float: "number",
    list: "array",
    dict: "object",
    type(None): "null",
}


@dataclass(frozen=True)
class ColumnSpec:
    """One input column."""

    name: str
    type: ColumnType
    nullable: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "nullable": self.nullable}

    @property
    def is_numeric(self) -> bool:
        return self.type in ("float64", "float32", "int64", "int32")


class _Errors:
    """Collects schema problems and raises them together."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.count = 0

    def add(self, loc: Sequence[str | int], msg: str) -> None:
        self.count += 1
        if len(self.items) < _MAX_REPORTED_ERRORS:
            self.items.append({"loc": list(loc), "msg": msg})

    def raise_if_any(self) -> None:
        if not self.items:
            return
        shown = "; ".join(f"{_loc_text(e['loc'])}: {e['msg']}" for e in self.items[:3])
        more = f" (and {self.count - 3} more)" if self.count > 3 else ""
        raise SchemaViolation(
            f"input does not match the model's signature: {shown}{more}", self.items
        )


def _nulls_allowed(matrix: np.ndarray, specs: list[ColumnSpec]) -> bool:
    """Whether every column holding a None may."""
    return all(
        spec.nullable or not any(v is None for v in matrix[:, j]) for j, spec in enumerate(specs)
    )


def _nans_are_allowed_nulls(rows: list[Any], nans: np.ndarray, specs: list[ColumnSpec]) -> bool:
    """NaNs that came from JSON nulls, each in a nullable column (a NaN sent as a float is not)."""
    nulls = sum(v is None for row in rows for v in row)
    if nulls != int(nans.sum()):
        return False
    bad = [bool(nans[:, j].any()) for j in range(nans.shape[1])]
    return all(spec.nullable for spec, has_nan in zip(specs, bad, strict=True) if has_nan)


def _loc_text(loc: Sequence[str | int]) -> str:
    return "".join(
        f"[{p}]" if isinstance(p, int) else (f".{p}" if i else p) for i, p in enumerate(loc)
    )


def _describe(value: Any) -> str:
    kind = _JSON_TYPE_NAMES.get(type(value), type(value).__name__)
    text = repr(value)
    return f"{kind} {text[:40]}" if kind not in ("null", "array", "object") else kind


@dataclass(frozen=True)
class Signature:
    """The ordered input columns a model takes."""

    columns: tuple[ColumnSpec, ...]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @cached_property
    def by_name(self) -> dict[str, ColumnSpec]:
        """Each column's spec by its name."""
        return {c.name: c for c in self.columns}

    def to_dict(self) -> dict[str, Any]:
        return {"columns": [c.to_dict() for c in self.columns]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Signature:
        columns = []
        for item in data["columns"]:
            if item["type"] not in COLUMN_TYPES:
                raise InvalidInput(
                    f"column {item['name']!r} has type {item['type']!r}; "
                    f"use one of {', '.join(COLUMN_TYPES)}"
                )
            columns.append(ColumnSpec(item["name"], item["type"], bool(item.get("nullable"))))
        return cls(tuple(columns))

    @classmethod
    def infer(cls, sample: Any) -> Signature:
        """Infer the signature from a training sample.

        Accepts a pandas DataFrame, a pyarrow Table, a mapping of column name to values, a
        list of records (dicts) or a 2-D numpy array (columns named `x0`, `x1`, ...). A column
        is nullable when the sample has a missing value in it.
        """
        import pandas as pd

        frame = _to_frame(sample, pd)
        columns = []
        for name in frame.columns:
            series = frame[name]
            columns.append(
                ColumnSpec(str(name), _infer_type(str(name), series, pd), bool(series.isna().any()))
            )
        if not columns:
            raise InvalidInput("the sample has no columns; pass the training features (X)")
        return cls(tuple(columns))

    def placeholder_rows(self, rows: int = 8) -> Any:
        """A DataFrame of `rows` neutral values per column (0, False, ""): enough to prove a
        model scores, never a reference for drift."""
        import pandas as pd

        neutral = {"bool": False, "string": ""}
        data = {c.name: [neutral.get(c.type, 0)] * rows for c in self.columns}
        frame = pd.DataFrame(data)
        for c in self.columns:
            if c.is_numeric:
                frame[c.name] = frame[c.name].astype(c.type)
        return frame

    def validate_records(self, records: Any, *, loc: str = "instances") -> Columns:
        """Check JSON-like records against the signature and return them as columns.

        Raises:
            SchemaViolation: naming each record and field that is wrong (up to 20).
        """
        errors = _Errors()
        if not isinstance(records, list):
            raise SchemaViolation(
                f"'{loc}' must be a list of records (objects), got {_describe(records)}",
                [{"loc": [loc], "msg": "must be a list of objects"}],
            )
        # well-formed input (nearly all of it): one conversion per column type, measured faster
        # than column by column at every size (1 record: 16 vs 32 us; 100 x 30 floats: 250 vs 450)
        fast = self._fast_records(records)
        if fast is not None:
            return fast
        for i, record in enumerate(records):
            if not isinstance(record, dict):
                errors.add([loc, i], f"must be an object of field values, got {_describe(record)}")
        errors.raise_if_any()
        columns: Columns = {}
        for spec in self.columns:
            name = spec.name
            values = [r.get(name, _MISSING) for r in records]
            columns[name] = _column_array(spec, values, errors, lambda i, name=name: [loc, i, name])
        errors.raise_if_any()
        return columns

    @cached_property
    def _groups(self) -> list[tuple[str, list[ColumnSpec], Any]]:
        """Columns grouped by type, each with a C-level getter of its fields from a record."""
        groups: dict[str, list[ColumnSpec]] = {}
        for spec in self.columns:
            groups.setdefault(spec.type, []).append(spec)
        out = []
        for dtype, specs in groups.items():
            getter = itemgetter(*(s.name for s in specs))
            # itemgetter of one name returns the value, not a 1-tuple: wrap it
            out.append((dtype, specs, getter if len(specs) > 1 else (lambda r, g=getter: (g(r),))))
        return out

    def _fast_records(self, records: list[Any]) -> Columns | None:
        """Columns from records that are entirely well-formed, or None to take the slow path.

        Most requests are valid: a C-level getter and one numpy conversion per column type
        replace per-value checks. Anything unusual (a missing field, a wrong type, a NaN sent
        as a float, an out-of-range integer) goes to the slow path, which accepts exactly the
        same input and names every problem.
        """
        columns: Columns = {}
        n = len(records)
        try:
            for dtype, specs, getter in self._groups:
                rows = list(map(getter, records))
                kinds = set(map(type, chain.from_iterable(rows)))
                if dtype == "string":
                    if not kinds <= _STRING_KINDS:
                        return None
                    matrix = np.empty((n, len(specs)), dtype=object)
                    matrix[:] = rows
                    if type(None) in kinds and not _nulls_allowed(matrix, specs):
                        return None
                elif dtype == "bool":
                    if kinds != {bool}:
                        return None
                    matrix = np.array(rows, dtype=bool)
                elif dtype in ("int64", "int32"):
                    if kinds != {int}:
                        return None
                    matrix = np.array(rows, dtype=dtype)
                else:
                    if not kinds <= _FLOAT_KINDS:
                        return None
                    matrix = np.array(rows, dtype=dtype)
                    if type(None) in kinds or float in kinds:
                        nans = np.isnan(matrix)
                        if nans.any() and not _nans_are_allowed_nulls(rows, nans, specs):
                            return None
                by_column = np.ascontiguousarray(matrix.T)
                for j, spec in enumerate(specs):
                    columns[spec.name] = by_column[j]
        except (KeyError, TypeError, ValueError, OverflowError):
            return None
        return {spec.name: columns[spec.name] for spec in self.columns}

    def validate_columns(
        self, data: Mapping[str, Sequence[Any] | np.ndarray], *, loc: str = "inputs"
    ) -> Columns:
        """Check column-wise values (e.g. Open Inference Protocol inputs) against the signature."""
        errors = _Errors()
        missing = [s.name for s in self.columns if s.name not in data and not s.nullable]
        if missing:
            raise SchemaViolation(
                f"missing input(s) {', '.join(repr(m) for m in missing)}; "
                f"the model takes {', '.join(self.names)}",
                [{"loc": [loc, m], "msg": "missing"} for m in missing],
            )
        lengths = {len(v) for v in data.values()}
        if len(lengths) > 1:
            raise SchemaViolation(
                "inputs have different lengths; every input needs one value per row",
                [{"loc": [loc, k], "msg": f"{len(v)} values"} for k, v in data.items()],
            )
        n = lengths.pop() if lengths else 0
        fast = self._fast_arrays(data)
        if fast is not None:
            return fast
        columns: Columns = {}
        for spec in self.columns:
            given = data.get(spec.name)
            if isinstance(given, np.ndarray) and given.dtype.kind in "biuf":
                # typed already (binary tensor data): one conversion, checked as a whole
                columns[spec.name] = _typed_array(spec, given, errors, [loc, spec.name])
                continue
            values = list(given) if given is not None else [None] * n
            columns[spec.name] = _column_array(
                spec, values, errors, lambda i, s=spec.name: [loc, s, i]
            )
        errors.raise_if_any()
        return columns

    def _fast_arrays(self, data: Mapping[str, Any]) -> Columns | None:
        """Columns from typed numpy arrays (binary tensor data) that are entirely well-formed,
        converted one block per column type; None to take the column-by-column path, which
        accepts exactly the same input and names every problem."""
        columns: Columns = {}
        for dtype, specs, _ in self._groups:
            arrays: list[Any] = [data.get(spec.name) for spec in specs]
            if not all(
                isinstance(a, np.ndarray) and a.ndim == 1 and a.dtype.kind in "biuf" for a in arrays
            ):
                return None
            if dtype in ("float64", "float32"):
                block = np.array(arrays, dtype=dtype)
                # one reduction finds a NaN (inf - inf too, which the precise check clears)
                if math.isnan(block.sum()):
                    nans = np.isnan(block).any(axis=1)
                    if any(
                        has and not spec.nullable for spec, has in zip(specs, nans, strict=True)
                    ):
                        return None
            elif dtype in ("int64", "int32"):
                kinds = {a.dtype for a in arrays}
                if len(kinds) != 1 or kinds.pop().kind not in "iu":
                    return None
                block = np.array(arrays)
                info = np.iinfo(dtype)
                if block.size and (block.min() < info.min or block.max() > info.max):
                    return None
                block = block.astype(dtype, copy=False)
            elif dtype == "bool" and all(a.dtype.kind == "b" for a in arrays):
                block = np.array(arrays, dtype=bool)
            else:
                return None
            for j, spec in enumerate(specs):
                columns[spec.name] = block[j]
        return {spec.name: columns[spec.name] for spec in self.columns}

    def validate_frame(self, frame: Any) -> Columns:
        """Check a pandas DataFrame (or anything `infer` takes) and return it as columns."""
        import pandas as pd

        df = _to_frame(frame, pd)
        missing = [s.name for s in self.columns if s.name not in df.columns]
        if missing:
            raise SchemaViolation(
                f"missing column(s) {', '.join(repr(m) for m in missing)}; "
                f"the model takes {', '.join(self.names)}",
                [{"loc": ["columns", m], "msg": "missing"} for m in missing],
            )
        data = {
            s.name: df[s.name].astype(object).where(df[s.name].notna(), None).tolist()
            for s in self.columns
        }
        return self.validate_columns(data, loc="columns")


def _to_frame(sample: Any, pd: Any) -> Any:
    if isinstance(sample, pd.DataFrame):
        return sample
    if isinstance(sample, np.ndarray):
        if sample.ndim != 2:
            raise InvalidInput(
                f"a numpy sample must be 2-D (rows x features), got shape {sample.shape}"
            )
        return pd.DataFrame(sample, columns=[f"x{i}" for i in range(sample.shape[1])])
    if hasattr(sample, "to_pandas") and hasattr(sample, "schema"):  # pyarrow Table
        return sample.to_pandas()
    if isinstance(sample, Mapping):
        return pd.DataFrame(dict(sample))
    if isinstance(sample, list) and all(isinstance(r, Mapping) for r in sample):
        return pd.DataFrame.from_records(sample)
    raise InvalidInput(
        f"cannot read a sample from {type(sample).__name__}; pass a pandas DataFrame, a pyarrow "
        "Table, a dict of columns, a list of records or a 2-D numpy array"
    )


def _infer_type(name: str, series: Any, pd: Any) -> ColumnType:
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_float_dtype(dtype):
        return "float32" if dtype == np.float32 else "float64"
    if pd.api.types.is_integer_dtype(dtype):
        return "int32" if dtype in (np.int32, np.int16, np.int8, np.uint8, np.uint16) else "int64"
    if (
        isinstance(dtype, pd.CategoricalDtype)
        or pd.api.types.is_string_dtype(dtype)
        or pd.api.types.is_object_dtype(dtype)
    ):
        values = series.dropna()
        if all(isinstance(v, str) for v in values):
            return "string"
        if all(isinstance(v, bool) for v in values):
            return "bool"
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            return "float64"
        raise InvalidInput(
            f"column {name!r} mixes value types ({', '.join(sorted({type(v).__name__ for v in values}))}); "
            "give it one type before registering"
        )
    raise InvalidInput(
        f"column {name!r} has dtype {dtype}, which a model signature cannot hold; convert it to a "
        "number, boolean or string (e.g. a timestamp to epoch seconds) before registering"
    )


def _typed_array(
    spec: ColumnSpec, given: np.ndarray, errors: _Errors, loc: list[Any]
) -> np.ndarray:
    """A numeric numpy column as `spec` takes it: floats from any number (NaN is a missing
    value), integers only from integral values in range, booleans only from booleans."""
    kind = given.dtype.kind
    if spec.type in ("float64", "float32") and kind in "biuf":
        array = given.astype(spec.type)
        if not spec.nullable and np.isnan(array).any():
            errors.add([*loc, int(np.flatnonzero(np.isnan(array))[0])], "is missing (NaN)")
        return array
    if spec.type in ("int64", "int32"):
        info = np.iinfo(spec.type)
        if kind in "iu" or (
            kind == "f" and np.isfinite(given).all() and (given == np.round(given)).all()
        ):
            if given.size and (given.min() < info.min or given.max() > info.max):
                errors.add(loc, f"holds values outside the {spec.type} range")
                return np.zeros(0, dtype=spec.type)
            return given.astype(spec.type)
        errors.add(loc, f"must hold whole numbers for a {spec.type} column")
        return np.zeros(0, dtype=spec.type)
    if spec.type == "bool" and kind == "b":
        return given.astype(bool)
    errors.add(loc, f"holds {given.dtype} values; the model takes {spec.type} for it")
    return np.zeros(0, dtype=object)


def _column_array(spec: ColumnSpec, values: list[Any], errors: _Errors, loc: Any) -> np.ndarray:
    """Turn one column of JSON values into a numpy array, or record why not."""
    kinds = set(map(type, values))
    if spec.type in ("float64", "float32"):
        if kinds <= _NUMBER_TYPES:
            array = np.array(values, dtype=spec.type)
            if not np.isnan(array).any():
                return array
        return _slow_column(spec, values, errors, loc, _check_number, np.dtype(spec.type))
    if spec.type in ("int64", "int32"):
        if kinds <= {int}:
            try:
                return np.array(values, dtype=spec.type)
            except OverflowError:
                pass
        bits = 32 if spec.type == "int32" else 64
        check = lambda v: _check_integer(v, bits)  # noqa: E731
        return _slow_column(spec, values, errors, loc, check, np.dtype(spec.type))
    if spec.type == "bool":
        if kinds <= {bool}:
            return np.array(values, dtype=bool)
        return _slow_column(spec, values, errors, loc, _check_bool, np.dtype(bool))
    if kinds <= {str}:
        return np.array(values, dtype=object)
    return _slow_column(spec, values, errors, loc, _check_string, np.dtype(object))


def _slow_column(
    spec: ColumnSpec,
    values: list[Any],
    errors: _Errors,
    loc: Any,
    check: Any,
    dtype: np.dtype[Any],
) -> np.ndarray:
    has_null = False
    out: list[Any] = []
    for i, value in enumerate(values):
        if value is _MISSING or value is None:
            if not spec.nullable:
                what = "is missing" if value is _MISSING else "is null"
                errors.add(
                    loc(i),
                    f"{what}; the model was trained without missing values in {spec.name!r}, "
                    f"so send a {_type_word(spec)}",
                )
            has_null = True
            out.append(None)
            continue
        problem = check(value)
        if problem:
            errors.add(loc(i), f"{problem}, got {_describe(value)}")
            out.append(None)
            continue
        out.append(int(value) if spec.type in ("int64", "int32") else value)
    if errors.items:
        return np.empty(0)
    if not has_null:
        return np.array(out, dtype=dtype)
    if spec.is_numeric:
        return np.array([math.nan if v is None else v for v in out], dtype=np.float64)
    return np.array(out, dtype=object)


def _type_word(spec: ColumnSpec) -> str:
    return {"bool": "boolean", "string": "string"}.get(spec.type, "number")


def _check_number(value: Any) -> str | None:
    if type(value) in _NUMBER_TYPES:
        return (
            None
            if not (type(value) is float and math.isnan(value))
            else "must be a number, not NaN"
        )
    return "must be a number"


def _check_integer(value: Any, bits: int) -> str | None:
    if type(value) is float and value.is_integer():
        value = int(value)
    if type(value) is not int:
        return "must be an integer"
    if not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
        return f"is out of the {bits}-bit integer range"
    return None


def _check_bool(value: Any) -> str | None:
    return None if type(value) is bool else "must be true or false"


def _check_string(value: Any) -> str | None:
    return None if type(value) is str else "must be a string"

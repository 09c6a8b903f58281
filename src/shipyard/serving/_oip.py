"""The Open Inference Protocol (KServe V2) request and response shapes.

Inputs arrive either one per signature column (`shape [n]` or `[n, 1]`), or as one
`[n, k]` tensor whose columns are the signature's, in order. Tensor data may be flat
(row-major, as the spec says) or nested (as many clients send it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from shipyard.core import Columns, Signature
from shipyard.core.errors import MalformedRequest, SchemaViolation

__all__ = [
    "DATATYPES",
    "binary_outputs",
    "check_outputs",
    "decode_inputs",
    "encode_outputs",
    "metadata_tensors",
    "output_names",
    "requested_outputs",
    "v2_decoder",
]

DATATYPES = {
    "float64": "FP64",
    "float32": "FP32",
    "int64": "INT64",
    "int32": "INT32",
    "bool": "BOOL",
    "string": "BYTES",
}
_KNOWN = {
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
}
_NUMERIC = _KNOWN - {"BOOL", "BYTES"}


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    if not any(isinstance(x, list) for x in data):
        return data
    out: list[Any] = []
    stack = [data]
    while stack:  # iterative flatten keeps deep nesting from exhausting the stack
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            out.append(item)
    return out


_FIELDS = frozenset(("name", "shape", "datatype", "data"))


def _tensor(item: Any, index: int) -> tuple[str, list[int], str, Any]:
    if isinstance(item, dict) and item.keys() >= _FIELDS:
        name, shape, datatype, data = item["name"], item["shape"], item["datatype"], item["data"]
        if (
            type(name) is str
            and isinstance(shape, list)
            and type(datatype) is str
            and datatype in _KNOWN
            and _is_shape(shape)
        ):
            binary = isinstance(data, np.ndarray)  # from the binary extension: typed already
            flat = data if binary else _flatten(data)
            expected = math.prod(shape)
            if len(flat) != expected:
                raise MalformedRequest(
                    f"input {name!r} has shape {shape} ({expected} values) but {len(flat)} "
                    "values in data"
                )
            if not binary:
                _check_values(name, datatype, flat)
            return name, shape, datatype, flat
    raise MalformedRequest(_what_is_wrong(item, index))


def _is_shape(shape: list[Any]) -> bool:
    return all(type(d) is int and d >= 0 for d in shape)


def _what_is_wrong(item: Any, index: int) -> str:
    """Why `item` is not a V2 input tensor."""
    where = f"inputs[{index}]"
    if not isinstance(item, dict):
        return f"{where} must be an object with name, shape, datatype and data"
    missing = [k for k in ("name", "shape", "datatype", "data") if k not in item]
    if missing:
        return f"{where} lacks {', '.join(missing)}; each input needs name, shape, datatype, data"
    name, shape, datatype = item["name"], item["shape"], item["datatype"]
    if not isinstance(name, str):
        return f"{where}.name must be a string"
    if not isinstance(shape, list) or not _is_shape(shape):
        return f"{where}.shape must be a list of non-negative integers, got {shape!r}"
    shown = datatype if isinstance(datatype, str) else type(datatype).__name__
    return (
        f"{where}.datatype {str(shown)[:40]!r} is not a V2 datatype; use one of "
        f"{', '.join(sorted(_KNOWN))}"
    )


_INT_RANGES = {
    "INT8": (-(2**7), 2**7 - 1),
    "INT16": (-(2**15), 2**15 - 1),
    "INT32": (-(2**31), 2**31 - 1),
    "INT64": (-(2**63), 2**63 - 1),
    "UINT8": (0, 2**8 - 1),
    "UINT16": (0, 2**16 - 1),
    "UINT32": (0, 2**32 - 1),
    "UINT64": (0, 2**64 - 1),
}
_FLOAT_MAX = {"FP16": 65504.0, "FP32": float(np.finfo(np.float32).max), "FP64": math.inf}


def _check_values(name: str, datatype: str, flat: list[Any]) -> None:
    """The values of a JSON tensor must be what its datatype says (the spec's rule): integers
    in range for INT/UINT, numbers for FP, booleans for BOOL, strings for BYTES. null stands
    for a missing value and is judged by the model's signature."""
    kinds = set(map(type, flat)) - {type(None)}
    if datatype == "BYTES":
        ok = kinds <= {str}
    elif datatype == "BOOL":
        ok = kinds <= {bool}
    elif datatype in _INT_RANGES:
        low, high = _INT_RANGES[datatype]
        ok = kinds <= {int} and all(low <= v <= high for v in flat if v is not None)
    else:
        ok = kinds <= {int, float} and all(
            abs(v) <= _FLOAT_MAX[datatype] for v in flat if v is not None
        )
    if not ok:
        bad = next((i, v) for i, v in enumerate(flat) if v is not None and not _fits(datatype, v))
        raise SchemaViolation(
            f"input {name!r} is {datatype} but value [{bad[0]}] is {bad[1]!r}",
            [{"loc": ["inputs", name, bad[0]], "msg": f"not a {datatype} value"}],
        )


def _fits(datatype: str, value: Any) -> bool:
    if datatype == "BYTES":
        return isinstance(value, str)
    if datatype == "BOOL":
        return type(value) is bool
    if datatype in _INT_RANGES:
        low, high = _INT_RANGES[datatype]
        return type(value) is int and low <= value <= high
    return type(value) in (int, float) and abs(value) <= _FLOAT_MAX[datatype]


def _check_datatype(signature: Signature, name: str, datatype: str) -> None:
    spec = signature.by_name.get(name)
    if spec is None:
        return
    ok = (
        (spec.type == "string" and datatype == "BYTES")
        or (spec.type == "bool" and datatype == "BOOL")
        or (spec.is_numeric and datatype in _NUMERIC)
    )
    if not ok:
        raise SchemaViolation(
            f"input {name!r} has datatype {datatype} but the model takes {DATATYPES[spec.type]} for it",
            [
                {
                    "loc": ["inputs", name],
                    "msg": f"datatype {datatype}, expected {DATATYPES[spec.type]}",
                }
            ],
        )


def decode_inputs(body: Any, signature: Signature) -> tuple[Columns, int]:
    """Validated columns and the row count from a V2 inference request body."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or not body["inputs"]:
        raise MalformedRequest(
            "a V2 inference request is an object with a non-empty 'inputs' list of "
            "{name, shape, datatype, data} tensors"
        )
    request_id = body.get("id")
    if request_id is not None and (not isinstance(request_id, str) or len(request_id) > 256):
        raise MalformedRequest("'id' must be a string of at most 256 characters")
    if not isinstance(body.get("parameters", {}), dict):
        raise MalformedRequest("'parameters' must be an object")
    tensors = [_tensor(item, i) for i, item in enumerate(body["inputs"])]
    seen: set[str] = set()
    for tensor in tensors:
        if tensor[0] in seen:
            raise MalformedRequest(f"input {tensor[0]!r} is given twice; send each input once")
        seen.add(tensor[0])
    names = signature.by_name
    if len(tensors) == 1 and tensors[0][0] not in names and len(tensors[0][1]) == 2:
        name, shape, datatype, flat = tensors[0]
        rows, width = shape
        if width != len(names):
            raise MalformedRequest(
                f"input {name!r} has {width} columns but the model takes {len(names)} "
                f"({', '.join(names)}); send one input per column or a [rows, {len(names)}] tensor"
            )
        for column in names:
            _check_datatype(signature, column, datatype)
        if isinstance(flat, np.ndarray):  # binary: one reshape, then a view per column
            matrix = flat.reshape(rows, width)
            split: dict[str, Any] = {column: matrix[:, j] for j, column in enumerate(names)}
        else:
            split = {column: flat[j::width] for j, column in enumerate(names)}
        return signature.validate_columns(split), rows
    data: dict[str, Any] = {}
    for name, shape, datatype, flat in tensors:
        if name not in names:
            raise MalformedRequest(
                f"unknown input {name!r}; the model takes {', '.join(signature.names)}"
            )
        if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
            raise MalformedRequest(
                f"input {name!r} must have shape [rows] or [rows, 1], got {shape}"
            )
        _check_datatype(signature, name, datatype)
        data[name] = flat
    columns = signature.validate_columns(data)
    rows = len(next(iter(columns.values()))) if columns else 0
    return columns, rows


def _label_datatype(labels: list[Any]) -> str:
    if all(type(v) is bool for v in labels):
        return "BOOL"
    if all(type(v) is int for v in labels):
        return "INT64"
    if all(isinstance(v, int | float) for v in labels):
        return "FP64"
    return "BYTES"


def encode_outputs(task: str, result: Any, wanted: list[str] | None) -> list[dict[str, Any]]:
    """Output tensors for a prediction result, limited to `wanted` names when given. Numeric
    data stays a numpy array: the JSON encoder and the binary extension both take it as is."""
    n = len(result)
    tensors = []
    if task == "regression":
        tensors.append({"name": "value", "datatype": "FP64", "shape": [n], "data": result.values})
    else:
        if task == "binary":
            tensors.append(
                {"name": "score", "datatype": "FP64", "shape": [n], "data": result.scores}
            )
        else:
            probs = result.probabilities
            tensors.append(
                {
                    "name": "probabilities",
                    "datatype": "FP64",
                    "shape": list(probs.shape),
                    "data": np.ascontiguousarray(probs).ravel(),
                }
            )
        labels = list(result.labels)
        datatype = _label_datatype(labels)
        data = [str(v) for v in labels] if datatype == "BYTES" else labels
        tensors.append({"name": "label", "datatype": datatype, "shape": [n], "data": data})
    tensors.append({"name": "prediction_id", "datatype": "BYTES", "shape": [n], "data": result.ids})
    explained = result.explanation
    if explained is not None:
        f = len(explained.features)
        tensors += [
            {
                "name": "contributions",
                "datatype": "FP64",
                "shape": [n, f],
                "data": np.ascontiguousarray(explained.values, dtype=np.float64).ravel(),
            },
            {"name": "base_value", "datatype": "FP64", "shape": [n], "data": explained.base},
            {
                "name": "explained_features",
                "datatype": "BYTES",
                "shape": [f],
                "data": list(explained.features),
            },
        ]
        if explained.error is not None:
            tensors.append(
                {
                    "name": "contribution_errors",
                    "datatype": "FP64",
                    "shape": [n, f],
                    "data": np.ascontiguousarray(explained.error, dtype=np.float64).ravel(),
                }
            )
    if wanted is None:
        return tensors
    available = {t["name"]: t for t in tensors}
    unknown = [w for w in wanted if w not in available]
    if unknown:
        raise MalformedRequest(
            f"unknown output(s) {', '.join(map(repr, unknown))}; this model returns {', '.join(available)}"
        )
    return [available[w] for w in wanted]


EXPLANATION_OUTPUTS = ["contributions", "base_value", "explained_features", "contribution_errors"]


def output_names(task: str, *, explain: bool = False) -> list[str]:
    """The output tensors a model of `task` answers (and those an explanation adds)."""
    if task == "regression":
        names = ["value", "prediction_id"]
    elif task == "binary":
        names = ["score", "label", "prediction_id"]
    else:
        names = ["probabilities", "label", "prediction_id"]
    return names + EXPLANATION_OUTPUTS if explain else names


def wants_explanation(body: Any) -> bool:
    """Whether a V2 request asks for explanations: `parameters.explain`."""
    parameters = body.get("parameters") if isinstance(body, dict) else None
    flag = parameters.get("explain", False) if isinstance(parameters, dict) else False
    if not isinstance(flag, bool):
        raise MalformedRequest(
            f"'parameters.explain' must be true or false, got {str(flag)[:40]!r}"
        )
    return flag


def explanation_parameters(result: Any) -> dict[str, Any]:
    """What a V2 answer says about its explanation, as response parameters."""
    explained = result.explanation
    if explained is None:
        return {}
    out: dict[str, Any] = {
        "explanation_method": explained.method,
        "explanation_space": explained.space,
    }
    if explained.target is not None:
        out["explained_class"] = ",".join(str(t) for t in dict.fromkeys(explained.target))
    if explained.samples is not None:
        out["explanation_samples"] = int(explained.samples)
    return out


def check_outputs(body: dict[str, Any], task: str) -> None:
    """Refuse unknown requested outputs before anything is scored or logged."""
    wanted = requested_outputs(body)
    if wanted is None:
        return
    available = output_names(task, explain=wants_explanation(body))
    unknown = [w for w in wanted if w not in available]
    if unknown:
        raise MalformedRequest(
            f"unknown output(s) {', '.join(map(repr, unknown))}; this model returns "
            f"{', '.join(available)}"
        )


def binary_outputs(body: dict[str, Any], names: list[str]) -> set[str]:
    """The outputs to answer as binary data: `binary_data_output` on the request makes every
    output binary; `parameters.binary_data` on a requested output decides for that one."""
    parameters = body.get("parameters")
    every = isinstance(parameters, dict) and parameters.get("binary_data_output") is True
    chosen = set(names) if every else set()
    for output in body.get("outputs") or []:
        flag = (output.get("parameters") or {}).get("binary_data")
        if flag is True:
            chosen.add(output["name"])
        elif flag is False:
            chosen.discard(output["name"])
    return chosen & set(names)


def requested_outputs(body: dict[str, Any]) -> list[str] | None:
    outputs = body.get("outputs")
    if outputs is None:
        return None
    if (
        not isinstance(outputs, list)
        or not outputs
        or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs)
    ):
        raise MalformedRequest(
            "'outputs' must be a non-empty list of {\"name\": ...} objects (leave it out for "
            "every output)"
        )
    return [o["name"] for o in outputs]


def metadata_tensors(
    signature: Signature, task: str, classes: list[Any] | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The input and output tensor descriptions of a model, for V2 model metadata."""
    inputs = [
        {"name": c.name, "datatype": DATATYPES[c.type], "shape": [-1]} for c in signature.columns
    ]
    outputs: list[dict[str, Any]]
    if task == "regression":
        outputs = [{"name": "value", "datatype": "FP64", "shape": [-1]}]
    else:
        label = {"name": "label", "datatype": _label_datatype(list(classes or [])), "shape": [-1]}
        if task == "binary":
            outputs = [{"name": "score", "datatype": "FP64", "shape": [-1]}, label]
        else:
            outputs = [
                {"name": "probabilities", "datatype": "FP64", "shape": [-1, len(classes or [])]},
                label,
            ]
    outputs.append({"name": "prediction_id", "datatype": "BYTES", "shape": [-1]})
    return inputs, outputs


def v2_decoder(body: Any, service: Any = None) -> Callable[[Any], tuple[Columns, int]]:
    """A V2 request body's decoder for the model that will answer it (the inputs are checked
    against its signature, the requested outputs against its task, before anything is
    scored or logged)."""
    if not isinstance(body, dict):
        raise MalformedRequest(
            "a V2 inference request is an object with a non-empty 'inputs' list of "
            "{name, shape, datatype, data} tensors"
        )

    def decode(served: Any) -> tuple[Columns, int]:
        check_outputs(body, served.task)
        return decode_inputs(body, served.signature)

    return decode

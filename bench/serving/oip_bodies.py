"""Open Inference Protocol request bodies for the benchmark, and the scores read back from
answers: the binary tensor extension over HTTP and `ModelInferRequest` over gRPC.

Binary HTTP body (`POST /v2/models/<name>/infer`): the JSON inference header, then the raw
little-endian bytes of each input, in input order; each input says its byte count in
`parameters.binary_data_size` and has no `data`. The request carries
`Content-Type: application/octet-stream` and `Inference-Header-Content-Length: <header bytes>`
and asks for every output in binary (`parameters.binary_data_output`), which is what
`tritonclient.http` sends when no outputs are named.

gRPC body (what h2load posts): gRPC's length-prefixed message, i.e. one byte 0 (not
compressed), the message length as 4 big-endian bytes, then the serialized
`inference.ModelInferRequest` with the tensor bytes in `raw_input_contents`.

Inputs are laid out one of two ways: one `[n, k]` matrix tensor (`input-0`) whose columns are
the model's inputs in signature order, or one `[n]` tensor per input, named after it.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "Tensor",
    "binary_body",
    "binary_scores",
    "column_tensors",
    "grpc_body",
    "grpc_message",
    "grpc_request",
    "grpc_scores",
    "matrix_tensors",
]

DTYPES = {"FP32": "<f4", "FP64": "<f8"}
MATRIX_NAME = "input-0"
SCORE = "score"


class Tensor(NamedTuple):
    name: str
    datatype: str
    shape: list[int]
    raw: bytes


def _datatype(tensor: Mapping[str, Any]) -> str:
    datatype = str(tensor["datatype"])
    if datatype not in DTYPES:
        raise SystemExit(
            f"input {tensor['name']!r} is {datatype}; the benchmark's bodies carry "
            f"{' or '.join(DTYPES)} only"
        )
    return datatype


def matrix_tensors(
    records: Sequence[Mapping[str, Any]], inputs: Sequence[Mapping[str, Any]]
) -> list[Tensor]:
    """One `[n, k]` tensor, columns in the order of `inputs` (the model metadata's): FP32 when
    every input is FP32, else FP64."""
    kinds = {_datatype(t) for t in inputs}
    datatype = "FP32" if kinds == {"FP32"} else "FP64"
    names = [t["name"] for t in inputs]
    matrix = np.array([[r[n] for n in names] for r in records], dtype=DTYPES[datatype])
    return [Tensor(MATRIX_NAME, datatype, list(matrix.shape), matrix.tobytes())]


def column_tensors(
    records: Sequence[Mapping[str, Any]], inputs: Sequence[Mapping[str, Any]]
) -> list[Tensor]:
    """One `[n]` tensor per input, each of the datatype the model metadata gives it."""
    out = []
    for t in inputs:
        datatype = _datatype(t)
        column = np.array([r[t["name"]] for r in records], dtype=DTYPES[datatype])
        out.append(Tensor(t["name"], datatype, [len(records)], column.tobytes()))
    return out


def binary_body(tensors: Sequence[Tensor]) -> tuple[bytes, dict[str, str]]:
    """The binary extension's body for `tensors`, and the HTTP headers it needs."""
    header = {
        "inputs": [
            {
                "name": t.name,
                "shape": t.shape,
                "datatype": t.datatype,
                "parameters": {"binary_data_size": len(t.raw)},
            }
            for t in tensors
        ],
        "parameters": {"binary_data_output": True},
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(head)),
    }
    return head + b"".join(t.raw for t in tensors), headers


def binary_scores(body: bytes, header_length: str | None) -> np.ndarray:
    """The `score` output of a V2 answer: binary (`header_length` given) or plain JSON."""
    if header_length is None:
        outputs = json.loads(body)["outputs"]
        return np.asarray(next(o["data"] for o in outputs if o["name"] == SCORE), dtype="<f8")
    length = int(header_length)
    offset = length
    for output in json.loads(body[:length])["outputs"]:
        size = (output.get("parameters") or {}).get("binary_data_size")
        if output["name"] == SCORE:
            if size is None:
                return np.asarray(output["data"], dtype="<f8")
            dtype = np.dtype(DTYPES[output["datatype"]])
            return np.frombuffer(body, dtype=dtype, count=size // dtype.itemsize, offset=offset)
        offset += size or 0
    raise ValueError(f"no {SCORE!r} output in {body[:length]!r}")


def grpc_request(model_name: str, tensors: Sequence[Tensor]) -> Any:
    """`inference.ModelInferRequest` for `tensors`, their bytes in `raw_input_contents`."""
    from tritonclient.grpc import service_pb2  # the messages shipyard's gRPC service uses

    request = service_pb2.ModelInferRequest(model_name=model_name)
    for t in tensors:
        request.inputs.add(name=t.name, datatype=t.datatype, shape=t.shape)
        request.raw_input_contents.append(t.raw)
    return request


def grpc_body(request: Any) -> bytes:
    """A message as gRPC sends it on the wire: uncompressed flag, 4-byte length, message."""
    message = request.SerializeToString()
    return b"\x00" + struct.pack(">I", len(message)) + message


def grpc_message(body: bytes) -> Any:
    """The `ModelInferRequest` inside a body written by `grpc_body`."""
    from tritonclient.grpc import service_pb2

    (length,) = struct.unpack(">I", body[1:5])
    if body[0] != 0 or length != len(body) - 5:
        raise ValueError("not one uncompressed gRPC message")
    return service_pb2.ModelInferRequest.FromString(body[5:])


def grpc_scores(response: Any) -> np.ndarray:
    """The `score` output of a `ModelInferResponse` (numbers in `raw_output_contents`)."""
    for index, output in enumerate(response.outputs):
        if output.name == SCORE:
            return np.frombuffer(response.raw_output_contents[index], dtype=DTYPES[output.datatype])
    raise ValueError(f"no {SCORE!r} output in the response")

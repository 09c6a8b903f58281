"""The Open Inference Protocol's binary tensor data extension (what `tritonclient.http` sends
by default).

A request body is a JSON inference header of `Inference-Header-Content-Length` bytes, then
the raw bytes of each input whose `parameters.binary_data_size` says so, in input order:
little-endian numbers, one byte per BOOL, and for BYTES each element as a 4-byte little-endian
length and its bytes. A response does the same for outputs asked for in binary
(`parameters.binary_data` on an output, or `binary_data_output` on the request).
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson

from shipyard.core.errors import MalformedRequest

__all__ = ["BINARY_DTYPES", "binary_response", "decode_bytes", "encode_bytes", "split_request"]

BINARY_DTYPES: dict[str, str] = {
    "BOOL": "|b1",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}

_NUMPY_DTYPES = {name: np.dtype(code) for name, code in BINARY_DTYPES.items()}
_LENGTH = struct.Struct("<I")


def split_request(raw: bytes, header_length: str) -> Any:
    """The inference header of a binary request, each binary input's data in place (a numpy
    array, or a list of strings for BYTES)."""
    if not header_length.isdigit() or int(header_length) > len(raw):
        raise MalformedRequest(
            f"Inference-Header-Content-Length {header_length[:20]!r} must be the byte length of "
            f"the JSON header at the start of the body (the body has {len(raw)} bytes)"
        )
    length = int(header_length)
    try:
        header = orjson.loads(raw[:length])
    except orjson.JSONDecodeError as error:
        raise MalformedRequest(f"the inference header is not valid JSON: {error}") from None
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise MalformedRequest("the inference header must be an object with an 'inputs' list")
    offset = length
    view = memoryview(raw)
    for index, tensor in enumerate(header["inputs"]):
        parameters = tensor.get("parameters") if isinstance(tensor, dict) else None
        size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
        if size is None:
            continue
        if type(size) is not int or size < 0 or offset + size > len(raw):
            raise MalformedRequest(
                f"inputs[{index}].parameters.binary_data_size {size!r} does not fit the "
                f"{len(raw) - offset} bytes left in the body"
            )
        if "data" in tensor:
            raise MalformedRequest(f"inputs[{index}] has both 'data' and binary data; send one")
        tensor["data"] = _decode(tensor.get("datatype"), view, offset, size, index)
        offset += size
    if offset != len(raw):
        raise MalformedRequest(
            f"{len(raw) - offset} bytes after the last binary input; binary_data_size of each "
            "input must add up to the body after the header"
        )
    return header


def _decode(datatype: Any, raw: memoryview, offset: int, size: int, index: int) -> Any:
    """One input's binary data, from `size` bytes at `offset` (numbers: a view, not a copy)."""
    dtype = _NUMPY_DTYPES.get(datatype) if type(datatype) is str else None
    if dtype is None:
        if datatype == "BYTES":
            return decode_bytes(bytes(raw[offset : offset + size]), index)
        raise MalformedRequest(
            f"inputs[{index}].datatype {str(datatype)[:20]!r} cannot carry binary data; use one "
            f"of {', '.join([*BINARY_DTYPES, 'BYTES'])}"
        )
    if size % dtype.itemsize:
        raise MalformedRequest(
            f"inputs[{index}] has {size} bytes, not a whole number of {datatype} values"
        )
    return np.frombuffer(raw, dtype=dtype, count=size // dtype.itemsize, offset=offset)


def decode_bytes(data: bytes, index: int = 0) -> list[str]:
    """BYTES elements: each a 4-byte little-endian length, then that many UTF-8 bytes."""
    values: list[str] = []
    offset = 0
    while offset < len(data):
        if offset + 4 > len(data):
            raise MalformedRequest(f"inputs[{index}]: a BYTES element is cut short")
        (size,) = struct.unpack_from("<I", data, offset)
        offset += 4
        if offset + size > len(data):
            raise MalformedRequest(f"inputs[{index}]: a BYTES element is cut short")
        try:
            values.append(data[offset : offset + size].decode())
        except UnicodeDecodeError:
            raise MalformedRequest(f"inputs[{index}]: a BYTES element is not UTF-8 text") from None
        offset += size
    return values


def encode_bytes(values: list[Any]) -> bytes:
    """BYTES elements as `decode_bytes` reads them."""
    encoded = [str(value).encode() for value in values]
    pack = _LENGTH.pack
    return b"".join([part for e in encoded for part in (pack(len(e)), e)])


def _as_bytes(tensor: dict[str, Any]) -> bytes:
    data = tensor["data"]
    if tensor["datatype"] == "BYTES":
        return encode_bytes(list(data))
    return np.ascontiguousarray(np.asarray(data), dtype=BINARY_DTYPES[tensor["datatype"]]).tobytes()


def binary_response(response: dict[str, Any], binary: set[str]) -> tuple[bytes, int]:
    """The response body with the outputs named in `binary` as raw bytes after the JSON header;
    returns the body and the header's length."""
    chunks = []
    for tensor in response["outputs"]:
        if tensor["name"] not in binary:
            continue
        data = _as_bytes(tensor)
        del tensor["data"]
        tensor["parameters"] = {**tensor.get("parameters", {}), "binary_data_size": len(data)}
        chunks.append(data)
    header = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
    return b"".join([header, *chunks]), len(header)

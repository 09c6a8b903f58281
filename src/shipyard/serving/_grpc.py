"""The Open Inference Protocol over gRPC: the V2 `inference.GRPCInferenceService`, beside the
HTTP API in each server worker (`shipyard server --grpc-port`), and gRPC's health service.

The service is the one KServe publishes (`grpc_predict_v2.proto`); the messages come from
`tritonclient`'s generated code, whose Triton service is a superset of it with the same
field numbers, so KServe and Triton clients both talk to it. Calls go through the same
authorisation step as HTTP (the key in `authorization: Bearer <key>` or `x-api-key`
metadata), the same routing (`x-routing-key` metadata or a `routing_key` parameter), scoring,
logging and limits; a call's deadline is the request's; errors are gRPC status codes. Methods
of Triton's superset that are not V2 (model repository, shared memory) answer UNIMPLEMENTED.

Needs `pip install 'shipyard[grpc]'`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np

from shipyard.access import Authorizer, client_key
from shipyard.core import new_id, parse_version
from shipyard.core.errors import MalformedRequest, ShipyardError, missing_extra
from shipyard.core.status import status_of
from shipyard.core.version import __version__
from shipyard.serving._binary import BINARY_DTYPES, decode_bytes, encode_bytes
from shipyard.serving._oip import (
    encode_outputs,
    explanation_parameters,
    metadata_tensors,
    requested_outputs,
    v2_decoder,
    wants_explanation,
)
from shipyard.serving._scoring import PREDICT, PREDICT_OR_READ, Scoring
from shipyard.serving._service import MAX_DEADLINE_MS, PredictionService

__all__ = ["GrpcServer"]

log = logging.getLogger("shipyard.serving.grpc")

SERVICE = "inference.GRPCInferenceService"
EXTENSIONS = ["binary_tensor_data"]

# which typed `contents` field carries each datatype
_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def _modules() -> tuple[Any, Any, Any, Any, Any, Any, Any]:
    try:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc
        from grpc_health.v1.health import aio as health
        from tritonclient.grpc import service_pb2, service_pb2_grpc
    except ImportError:
        raise missing_extra("grpcio", "grpc", "The gRPC inference service") from None
    return grpc, service_pb2, service_pb2_grpc, health, health_pb2, health_pb2_grpc, None


def _grpc_code(grpc: Any, status: int) -> Any:
    codes = grpc.StatusCode
    return {
        400: codes.INVALID_ARGUMENT,
        401: codes.UNAUTHENTICATED,
        403: codes.PERMISSION_DENIED,
        404: codes.NOT_FOUND,
        405: codes.UNIMPLEMENTED,
        409: codes.FAILED_PRECONDITION,
        413: codes.RESOURCE_EXHAUSTED,
        415: codes.INVALID_ARGUMENT,
        422: codes.INVALID_ARGUMENT,
        429: codes.RESOURCE_EXHAUSTED,
        503: codes.UNAVAILABLE,
        504: codes.DEADLINE_EXCEEDED,
    }.get(status, codes.INTERNAL)


def _parameter(value: Any) -> Any:
    """An `InferParameter` as a Python value."""
    kind = value.WhichOneof("parameter_choice")
    return getattr(value, kind) if kind is not None else None


def _parameters(message: Any) -> dict[str, Any]:
    return {k: _parameter(v) for k, v in message.parameters.items()}


def request_body(request: Any) -> dict[str, Any]:
    """A `ModelInferRequest` as the body `/v2/.../infer` takes (binary data as numpy arrays)."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise MalformedRequest(
            f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs; send one per input "
            "or none"
        )
    inputs = []
    for index, tensor in enumerate(request.inputs):
        datatype = tensor.datatype
        if raw and tensor.HasField("contents"):
            raise MalformedRequest(
                f"inputs[{index}] has both contents and raw_input_contents; send the data once"
            )
        if raw:
            data: Any = _decode_raw(datatype, raw[index], index)
        else:
            field = _CONTENTS.get(datatype)
            if field is None:
                raise MalformedRequest(
                    f"inputs[{index}].datatype {datatype[:20]!r} needs raw_input_contents"
                )
            values = getattr(tensor.contents, field)
            if datatype == "BYTES":
                data = decode_bytes(b"".join(_framed(v) for v in values), index)
            elif datatype == "BOOL":
                data = list(values)
            else:
                data = np.asarray(values, dtype=BINARY_DTYPES[datatype])
        inputs.append(
            {
                "name": tensor.name,
                "shape": list(tensor.shape),
                "datatype": datatype,
                "data": data,
                "parameters": _parameters(tensor),
            }
        )
    body: dict[str, Any] = {"inputs": inputs, "parameters": _parameters(request)}
    if request.id:
        body["id"] = request.id
    if request.outputs:
        body["outputs"] = [{"name": o.name, "parameters": _parameters(o)} for o in request.outputs]
    return body


def _version(text: str) -> int | None:
    """A request's model_version: empty for the serving one, else 1 to 2^31-1."""
    return parse_version(text, where=" (model_version)") if text else None


def _deadline_ms(remaining: float) -> str:
    """A call's remaining time as the budget scoring takes (at most its 60 s ceiling)."""
    return f"{min(max(remaining, 0.001) * 1e3, MAX_DEADLINE_MS):.3f}"


def _metadata(context: Any) -> dict[str, str]:
    """A call's text metadata, names lower-cased (binary `-bin` entries are not read)."""
    return {k.lower(): v for k, v in context.invocation_metadata() or () if isinstance(v, str)}


def _framed(value: bytes) -> bytes:
    return len(value).to_bytes(4, "little") + value


def _decode_raw(datatype: str, data: bytes, index: int) -> Any:
    if datatype == "BYTES":
        return decode_bytes(data, index)
    if datatype not in BINARY_DTYPES:
        raise MalformedRequest(f"inputs[{index}].datatype {datatype[:20]!r} is not a V2 datatype")
    dtype = np.dtype(BINARY_DTYPES[datatype])
    if len(data) % dtype.itemsize:
        raise MalformedRequest(
            f"inputs[{index}] has {len(data)} raw bytes, not a whole number of {datatype} values"
        )
    return np.frombuffer(data, dtype=dtype)


class _Servicer:
    """The V2 methods, over the service and behind the authorizer."""

    def __init__(self, service: PredictionService, authorizer: Authorizer, pb: Any, grpc: Any):
        self.service = service
        self.authorizer = authorizer
        self.scoring = Scoring(service)
        self.pb = pb
        self.grpc = grpc

    async def _fail(self, context: Any, error: ShipyardError) -> None:
        await context.abort(_grpc_code(self.grpc, status_of(error)), error.message)

    async def _key(self, context: Any, needed: frozenset[str], model: str) -> Any:
        metadata = _metadata(context)
        peer = context.peer() or ""
        host = peer.split(":", 1)[1].rsplit(":", 1)[0] if peer.count(":") >= 2 else peer
        key = await self.authorizer.authenticate(
            metadata.get("authorization"), metadata.get("x-api-key"), client_key(host.strip("[]"))
        )
        await self.authorizer.admit(key, needed, [model])
        return key

    async def ServerLive(self, request: Any, context: Any) -> Any:
        return self.pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:
        return self.pb.ServerReadyResponse(ready=self.service.readiness().ready)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        return self.pb.ServerMetadataResponse(
            name="shipyard", version=__version__, extensions=EXTENSIONS
        )

    async def ModelReady(self, request: Any, context: Any) -> Any:
        try:
            await self._key(context, PREDICT_OR_READ, request.name)
            version = _version(request.version)
            resolved = await asyncio.to_thread(self.service.resolve_version, request.name, version)
            await asyncio.to_thread(self.service.registry.get_version, request.name, resolved)
            try:
                await self.service.pinned(request.name, resolved)
            except ShipyardError as error:
                if status_of(error) == 404:
                    raise
                return self.pb.ModelReadyResponse(ready=False)
            return self.pb.ModelReadyResponse(ready=True)
        except ShipyardError as error:
            await self._fail(context, error)
        raise AssertionError("unreachable")  # pragma: no cover

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        try:
            await self._key(context, PREDICT_OR_READ, request.name)
            version = _version(request.version)
            resolved = await asyncio.to_thread(self.service.resolve_version, request.name, version)
            served = await self.service.pinned(request.name, resolved)
            versions = await asyncio.to_thread(self.service.registry.list_versions, request.name)
            inputs, outputs = metadata_tensors(served.signature, served.task, served.classes)
            tensor = self.pb.ModelMetadataResponse.TensorMetadata
            return self.pb.ModelMetadataResponse(
                name=served.name,
                versions=[str(v.version) for v in versions if v.status == "ready"],
                platform=f"shipyard_{served.predictor.runtime}",
                inputs=[tensor(**t) for t in inputs],
                outputs=[tensor(**t) for t in outputs],
            )
        except ShipyardError as error:
            await self._fail(context, error)
        raise AssertionError("unreachable")  # pragma: no cover

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        name = request.model_name
        metadata = _metadata(context)

        async def authorize() -> Any:
            return await self._key(context, PREDICT, name)

        async def read() -> Any:
            return request_body(request)

        try:
            version = _version(request.model_version)
            remaining = context.time_remaining()
            scored = await self.scoring.predict(
                name,
                version,
                authorize,
                read,
                v2_decoder,
                deadline=(
                    metadata.get("x-deadline-ms") if remaining is None else _deadline_ms(remaining)
                ),
                routing=metadata.get("x-routing-key"),
                request_id=(metadata.get("x-request-id") or "")[:128] or new_id(),
                explain=wants_explanation,
            )
        except ShipyardError as error:
            await self._fail(context, error)
            raise AssertionError("unreachable") from None  # pragma: no cover
        plan = scored.plan
        if plan is not None and plan.shadows:
            await self.service.shadow(
                plan,
                scored.columns,
                scored.rows,
                scored.key.id,
                scored.request_id,
                routing_key=scored.routing_key,
            )
        return self._response(scored, request)

    def _response(self, scored: Any, request: Any) -> Any:
        served, body = scored.served, scored.body
        tensors = encode_outputs(served.task, scored.result, requested_outputs(body))
        response = self.pb.ModelInferResponse(
            model_name=served.name, model_version=str(served.version), id=request.id
        )
        if scored.result.threshold is not None:
            response.parameters["threshold"].double_param = scored.result.threshold
        for key, value in explanation_parameters(scored.result).items():
            if isinstance(value, int):
                response.parameters[key].int64_param = value
            else:
                response.parameters[key].string_param = value
        # numbers as raw bytes, like Triton answers; both Triton and KServe clients read them
        for tensor in tensors:  # described here, the data in raw_output_contents, in this order
            response.outputs.add(
                name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"]
            )
            if tensor["datatype"] == "BYTES":
                response.raw_output_contents.append(encode_bytes(list(tensor["data"])))
            else:
                array = np.asarray(tensor["data"], dtype=BINARY_DTYPES[tensor["datatype"]])
                response.raw_output_contents.append(np.ascontiguousarray(array).tobytes())
        return response


class GrpcServer:
    """The gRPC server of one worker (SO_REUSEPORT: every worker binds the same port).

    Args:
        service: scores and knows readiness.
        authorizer: the same authorisation step as HTTP.
        host, port: where to listen.
    """

    def __init__(
        self, service: PredictionService, authorizer: Authorizer, host: str, port: int
    ) -> None:
        self.service = service
        self.authorizer = authorizer
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._server: Any = None
        self._health_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        grpc, pb, pb_grpc, health, health_pb2, health_pb2_grpc, _ = _modules()
        server = grpc.aio.server(options=[("grpc.so_reuseport", 1)])
        servicer = type("InferenceService", (_Servicer, pb_grpc.GRPCInferenceServiceServicer), {})
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(
            servicer(self.service, self.authorizer, pb, grpc), server
        )
        checker = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(checker, server)
        if server.add_insecure_port(self.address) == 0:
            raise OSError(f"cannot listen for gRPC on {self.address}")
        await server.start()
        self._server = server
        self._health_task = asyncio.get_running_loop().create_task(
            self._report_health(checker, health_pb2)
        )
        log.info("gRPC inference service on %s", self.address)

    async def _report_health(self, checker: Any, health_pb2: Any) -> None:
        serving = health_pb2.HealthCheckResponse.SERVING
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        while True:
            status = serving if self.service.readiness().ready else not_serving
            for name in ("", SERVICE):
                await checker.set(name, status)
            await asyncio.sleep(1.0)

    async def stop(self, grace: float = 5.0) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None

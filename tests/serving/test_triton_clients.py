"""Clients written for Triton and KServe, unchanged, against a real `shipyard server`:
`tritonclient.http` (binary tensor data by default, JSON when asked) and, with the server's
gRPC port, `tritonclient.grpc`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
import tritonclient.http as triton_http
from tests.serving.conftest import make_key
from tests.serving.servers import ServerProcess, free_port

from shipyard.core import Settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, fraud_model: Any, fraud_sample: pd.DataFrame
) -> Iterator[tuple[ServerProcess, str]]:
    """A real server with HTTP and gRPC (port in `server.grpc`), and a predict key."""
    from shipyard.registry import Registry

    settings = Settings(home=tmp_path_factory.mktemp("triton") / "home", actor="tests")
    with Registry.from_settings(settings) as registry:
        registry.register(
            fraud_model, name="fraud-detector", sample=fraud_sample, aliases=["production"]
        )
    token = make_key(settings, "predict")
    grpc_port = free_port()
    with ServerProcess(settings, env={"SHIPYARD_GRPC_PORT": str(grpc_port)}) as server:
        server.grpc = f"127.0.0.1:{grpc_port}"  # type: ignore[attr-defined]
        yield server, token
        log = server.log.read_text()
    assert "Traceback" not in log


def _inputs(frame: pd.DataFrame, *, binary: bool, fp16: bool = False) -> list[Any]:
    inputs = []
    for name in frame.columns:
        column = frame[name]
        if pd.api.types.is_float_dtype(column.dtype):
            data = column.to_numpy(np.float16 if fp16 else np.float64)
            datatype = "FP16" if fp16 else "FP64"
        elif pd.api.types.is_integer_dtype(column.dtype):
            data, datatype = column.to_numpy(np.int64), "INT64"
        else:
            data, datatype = column.to_numpy(dtype=object), "BYTES"
        tensor = triton_http.InferInput(name, [len(frame)], datatype)
        tensor.set_data_from_numpy(data, binary_data=binary)
        inputs.append(tensor)
    return inputs


def test_tritonclient_http_binary_by_default_gets_the_models_scores(
    served: tuple[ServerProcess, str], fraud_model: Any, fraud_sample: pd.DataFrame
) -> None:
    server, token = served
    rows = fraud_sample.iloc[:64].dropna()
    client = triton_http.InferenceServerClient(server.url.removeprefix("http://"))
    headers = {"Authorization": f"Bearer {token}"}
    assert client.is_server_ready()
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    result = client.infer("fraud-detector", _inputs(rows, binary=True), headers=headers)
    expected = fraud_model.predict_proba(rows)[:, 1]
    np.testing.assert_allclose(result.as_numpy("score"), expected, atol=1e-5)
    labels = result.as_numpy("label")
    assert labels.shape == (len(rows),)
    ids = result.as_numpy("prediction_id")
    assert len({i.decode() if isinstance(i, bytes) else i for i in ids}) == len(rows)


def test_tritonclient_http_json_and_binary_answer_the_same(
    served: tuple[ServerProcess, str], fraud_sample: pd.DataFrame
) -> None:
    server, token = served
    rows = fraud_sample.iloc[:32].dropna()
    client = triton_http.InferenceServerClient(server.url.removeprefix("http://"))
    headers = {"Authorization": f"Bearer {token}"}
    wanted = [triton_http.InferRequestedOutput("score", binary_data=False)]
    as_json = client.infer(
        "fraud-detector", _inputs(rows, binary=False), outputs=wanted, headers=headers
    ).as_numpy("score")
    as_binary = client.infer(
        "fraud-detector",
        _inputs(rows, binary=True),
        outputs=[triton_http.InferRequestedOutput("score", binary_data=True)],
        headers=headers,
    ).as_numpy("score")
    np.testing.assert_array_equal(as_json, as_binary)


def test_fp16_inputs_are_taken_as_the_models_float_columns(
    served: tuple[ServerProcess, str], fraud_model: Any, fraud_sample: pd.DataFrame
) -> None:
    server, token = served
    rows = fraud_sample.iloc[:32].dropna()
    client = triton_http.InferenceServerClient(server.url.removeprefix("http://"))
    result = client.infer(
        "fraud-detector",
        _inputs(rows, binary=True, fp16=True),
        headers={"Authorization": f"Bearer {token}"},
    )
    # half precision rounds the inputs: the scores are those of the rounded rows
    rounded = rows.copy()
    for name in rows.columns:
        if pd.api.types.is_float_dtype(rows[name].dtype):
            rounded[name] = rows[name].to_numpy(np.float16).astype(np.float64)
    np.testing.assert_allclose(
        result.as_numpy("score"), fraud_model.predict_proba(rounded)[:, 1], atol=1e-5
    )


def test_tritonclient_errors_arrive_as_its_exceptions_with_the_servers_message(
    served: tuple[ServerProcess, str], fraud_sample: pd.DataFrame
) -> None:
    server, token = served
    client = triton_http.InferenceServerClient(server.url.removeprefix("http://"))
    rows = fraud_sample.iloc[:4].dropna()
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException) as refused:
        client.infer("fraud-detector", _inputs(rows, binary=True))  # no key
    assert "API key" in str(refused.value)
    with pytest.raises(InferenceServerException) as unknown:
        client.infer(
            "nope", _inputs(rows, binary=True), headers={"Authorization": f"Bearer {token}"}
        )
    assert refused.value.status() == "401"
    assert unknown.value.status() == "404"


# -- gRPC -----------------------------------------------------------------------------------


def _grpc_inputs(frame: pd.DataFrame) -> list[Any]:
    import tritonclient.grpc as triton_grpc

    inputs = []
    for name in frame.columns:
        column = frame[name]
        if pd.api.types.is_float_dtype(column.dtype):
            data, datatype = column.to_numpy(np.float64), "FP64"
        elif pd.api.types.is_integer_dtype(column.dtype):
            data, datatype = column.to_numpy(np.int64), "INT64"
        else:
            data, datatype = column.to_numpy(dtype=object), "BYTES"
        tensor = triton_grpc.InferInput(name, [len(frame)], datatype)
        tensor.set_data_from_numpy(data)
        inputs.append(tensor)
    return inputs


def test_tritonclient_grpc_gets_the_models_scores(
    served: tuple[ServerProcess, str], fraud_model: Any, fraud_sample: pd.DataFrame
) -> None:
    import tritonclient.grpc as triton_grpc

    server, token = served
    client = triton_grpc.InferenceServerClient(server.grpc)  # type: ignore[attr-defined]
    assert client.is_server_live()
    assert client.is_server_ready()
    assert "binary_tensor_data" in client.get_server_metadata().extensions
    headers = {"authorization": f"Bearer {token}"}
    assert client.is_model_ready("fraud-detector", headers=headers)
    meta = client.get_model_metadata("fraud-detector", headers=headers)
    assert [i.name for i in meta.inputs] == list(fraud_sample.columns)
    rows = fraud_sample.iloc[:50].dropna()
    result = client.infer("fraud-detector", _grpc_inputs(rows), headers=headers)
    np.testing.assert_allclose(
        result.as_numpy("score"), fraud_model.predict_proba(rows)[:, 1], atol=1e-5
    )
    assert len(set(result.as_numpy("prediction_id"))) == len(rows)


def test_grpc_answers_explanations_when_the_parameters_ask(
    served: tuple[ServerProcess, str], fraud_model: Any, fraud_sample: pd.DataFrame
) -> None:
    import tritonclient.grpc as triton_grpc
    from scipy.special import logit

    server, token = served
    client = triton_grpc.InferenceServerClient(server.grpc)  # type: ignore[attr-defined]
    headers = {"authorization": f"Bearer {token}"}
    rows = fraud_sample.iloc[:20].dropna()
    result = client.infer(
        "fraud-detector", _grpc_inputs(rows), headers=headers, parameters={"explain": True}
    )
    contributions = result.as_numpy("contributions")
    assert contributions.shape == (len(rows), len(rows.columns))
    names = [n.decode() for n in result.as_numpy("explained_features")]
    assert names == list(rows.columns)
    np.testing.assert_allclose(
        result.as_numpy("base_value") + contributions.sum(axis=1),
        logit(fraud_model.predict_proba(rows)[:, 1]),
        atol=1e-6,
    )
    parameters = result.get_response().parameters
    assert parameters["explanation_method"].string_param == "linear"
    assert parameters["explanation_space"].string_param == "log-odds"
    plain = client.infer("fraud-detector", _grpc_inputs(rows), headers=headers)
    assert plain.as_numpy("contributions") is None


def test_grpc_calls_go_through_the_same_authorisation_and_errors_are_status_codes(
    served: tuple[ServerProcess, str], fraud_sample: pd.DataFrame
) -> None:
    import tritonclient.grpc as triton_grpc
    from tritonclient.utils import InferenceServerException

    server, token = served
    client = triton_grpc.InferenceServerClient(server.grpc)  # type: ignore[attr-defined]
    rows = fraud_sample.iloc[:3].dropna()
    with pytest.raises(InferenceServerException) as anonymous:
        client.infer("fraud-detector", _grpc_inputs(rows))
    assert anonymous.value.status() == "StatusCode.UNAUTHENTICATED"
    assert "API key" in anonymous.value.message()
    headers = {"authorization": f"Bearer {token}"}
    with pytest.raises(InferenceServerException) as unknown:
        client.infer("nope", _grpc_inputs(rows), headers=headers)
    assert unknown.value.status() == "StatusCode.NOT_FOUND"
    wrong = _grpc_inputs(rows)
    wrong[0] = triton_grpc.InferInput(rows.columns[0], [len(rows)], "BYTES")
    wrong[0].set_data_from_numpy(np.array(["x"] * len(rows), dtype=object))
    with pytest.raises(InferenceServerException) as invalid:
        client.infer("fraud-detector", wrong, headers=headers)
    assert invalid.value.status() == "StatusCode.INVALID_ARGUMENT"
    for version, status in (
        ("abc", "INVALID_ARGUMENT"),
        ("0", "INVALID_ARGUMENT"),
        ("99", "NOT_FOUND"),
    ):
        with pytest.raises(InferenceServerException) as versioned:
            client.infer(
                "fraud-detector", _grpc_inputs(rows), model_version=version, headers=headers
            )
        assert versioned.value.status() == f"StatusCode.{status}", versioned.value.message()
    # a client deadline beyond the server's 60 s ceiling is served within the ceiling
    result = client.infer("fraud-detector", _grpc_inputs(rows), headers=headers, client_timeout=600)
    assert len(result.as_numpy("score")) == len(rows)


def test_a_generated_v2_stub_and_the_grpc_health_service_work_too(
    served: tuple[ServerProcess, str], fraud_model: Any, fraud_sample: pd.DataFrame
) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    server, token = served
    rows = fraud_sample.iloc[:10].dropna()
    with grpc.insecure_channel(server.grpc) as channel:  # type: ignore[attr-defined]
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService")
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = service_pb2.ModelInferRequest(model_name="fraud-detector", id="req-1")
        for name in rows.columns:  # typed contents, not raw bytes: the other way V2 allows
            tensor = request.inputs.add(name=name, shape=[len(rows)])
            if pd.api.types.is_float_dtype(rows[name].dtype):
                tensor.datatype = "FP64"
                tensor.contents.fp64_contents.extend(rows[name].tolist())
            elif pd.api.types.is_integer_dtype(rows[name].dtype):
                tensor.datatype = "INT64"
                tensor.contents.int64_contents.extend(rows[name].tolist())
            else:
                tensor.datatype = "BYTES"
                tensor.contents.bytes_contents.extend(v.encode() for v in rows[name])
        answer = stub.ModelInfer(
            request, metadata=[("authorization", f"Bearer {token}")], timeout=10
        )
    assert answer.id == "req-1"
    names = [o.name for o in answer.outputs]
    scores = np.frombuffer(answer.raw_output_contents[names.index("score")], dtype="<f8")
    np.testing.assert_allclose(scores, fraud_model.predict_proba(rows)[:, 1], atol=1e-5)


def test_malformed_grpc_requests_are_invalid_argument_never_internal(
    served: tuple[ServerProcess, str], fraud_sample: pd.DataFrame
) -> None:
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    server, token = served
    rows = fraud_sample.iloc[:4].dropna()

    def request(**changes: Any) -> Any:
        message = service_pb2.ModelInferRequest(model_name="fraud-detector")
        for name in rows.columns:
            numeric = pd.api.types.is_numeric_dtype(rows[name])
            message.inputs.add(
                name=name, shape=[len(rows)], datatype="FP64" if numeric else "BYTES"
            )
            message.raw_input_contents.append(
                rows[name].to_numpy(np.float64).tobytes()
                if numeric
                else b"".join(len(v).to_bytes(4, "little") + v.encode() for v in rows[name])
            )
        for change in changes.values():
            change(message)
        return message

    def drop_raw(m: Any) -> None:
        m.raw_input_contents.pop()

    def torn_bytes(m: Any) -> None:
        index = [i.datatype for i in m.inputs].index("BYTES")
        m.raw_input_contents[index] = b"\xff\xff\xff\x7fabc"

    def odd_length(m: Any) -> None:
        m.raw_input_contents[0] = m.raw_input_contents[0][:-3]

    def bad_datatype(m: Any) -> None:
        m.inputs[0].datatype = "COMPLEX128"

    def bad_shape(m: Any) -> None:
        m.inputs[0].shape[:] = [len(rows) + 1]

    def no_inputs(m: Any) -> None:
        del m.inputs[:]
        del m.raw_input_contents[:]

    def unknown_output(m: Any) -> None:
        m.outputs.add(name="nope")

    def typed_and_raw(m: Any) -> None:
        m.inputs[0].contents.fp64_contents.append(1.0)

    cases = [drop_raw, torn_bytes, odd_length, bad_datatype, bad_shape, no_inputs, unknown_output]
    cases.append(typed_and_raw)
    metadata = [("authorization", f"Bearer {token}")]
    with grpc.insecure_channel(server.grpc) as channel:  # type: ignore[attr-defined]
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ModelInfer(request(), metadata=metadata, timeout=10).outputs
        for case in cases:
            with pytest.raises(grpc.RpcError) as refused:
                stub.ModelInfer(request(case=case), metadata=metadata, timeout=10)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (
                case.__name__,
                refused.value.details(),
            )
            assert refused.value.details(), case.__name__

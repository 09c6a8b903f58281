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
from tests.serving.servers import ServerProcess

from shipyard.core import Settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, fraud_model: Any, fraud_sample: pd.DataFrame
) -> Iterator[tuple[ServerProcess, str]]:
    from shipyard.registry import Registry

    settings = Settings(home=tmp_path_factory.mktemp("triton") / "home", actor="tests")
    with Registry.from_settings(settings) as registry:
        registry.register(
            fraud_model, name="fraud-detector", sample=fraud_sample, aliases=["production"]
        )
    token = make_key(settings, "predict")
    with ServerProcess(settings) as server:
        yield server, token


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

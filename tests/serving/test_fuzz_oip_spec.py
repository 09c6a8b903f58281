"""The Open Inference Protocol's own OpenAPI document (KServe V2 REST, as MLServer publishes
it) drives a fuzzer at a real server: whatever a V2 client may send, no answer is a 5xx, and
answers to the routes the protocol describes keep its status codes and shapes."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from tests.serving.conftest import make_key
from tests.serving.servers import ServerProcess

from shipyard.core import Settings
from shipyard.registry import Registry

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("SHIPYARD_FUZZ_EXAMPLES", "12"))
SPEC = Path(__file__).parent / "oip" / "dataplane.json"


def _document() -> dict[str, Any]:
    text = SPEC.read_text()
    # MLServer's copy says `"type": "bytes"` for raw tensor data, which is no JSON Schema type;
    # it means a string of bytes
    return dict(json.loads(text.replace('"type": "bytes"', '"type": "string"')))


# generation and streaming are parts of MLServer's document no V2 server must have
SCHEMA = schemathesis.openapi.from_dict(_document()).exclude(path_regex="generate|infer_stream")
SCHEMA.config.generation.update(modes=list(GenerationMode))


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, fraud_model: Any, fraud_sample: pd.DataFrame
) -> Iterator[tuple[str, str]]:
    config = Settings(home=tmp_path_factory.mktemp("oip") / "home", actor="fuzz")
    with Registry.from_settings(config) as registry:
        registry.register(
            fraud_model, name="fraud-detector", sample=fraud_sample, aliases=["production"]
        )
    token = make_key(config, "predict")
    with ServerProcess(config) as running:
        yield running.url, token
        log = running.log.read_text()
    assert "this is a bug in shipyard" not in log
    assert "Traceback" not in log


@SCHEMA.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_no_v2_request_the_protocol_allows_or_breaks_is_answered_with_a_5xx(
    case: Any, server: tuple[str, str]
) -> None:
    url, token = server
    if case.path_parameters and "model_name" in case.path_parameters:
        case.path_parameters["model_name"] = "fraud-detector"  # reach the model, not a 404
    case.call_and_validate(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, checks=[not_a_server_error]
    )

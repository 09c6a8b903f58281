"""Property-based fuzzing of every route from `/openapi.json` (schemathesis), with keys of each
scope, a key bound to another model, and no key: no answer is a 5xx, and every answer matches
the status codes, content types and schemas the document promises.

Bounded: a fixed number of examples per route and key (SHIPYARD_FUZZ_EXAMPLES, default 12).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from tests.conftest import records
from tests.serving.conftest import make_key
from tests.serving.servers import ServerProcess

from shipyard.app import create_app
from shipyard.core import Settings
from shipyard.registry import Registry

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("SHIPYARD_FUZZ_EXAMPLES", "12"))
CALLERS = ["anonymous", "predict", "read", "write", "admin", "admin-of-other"]
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@dataclass
class Fuzzed:
    url: str
    keys: dict[str, str]


# the document is the app's own, built without opening anything (create_app does no I/O)
SCHEMA = schemathesis.openapi.from_dict(create_app(Settings(home=Path("/nonexistent"))).openapi())
# data that fits the document, and data that breaks it on purpose (it must be refused with a 4xx)
SCHEMA.config.generation.update(modes=list(GenerationMode))


@pytest.fixture(scope="module")
def fuzzed(
    tmp_path_factory: pytest.TempPathFactory, fraud_model: Any, fraud_sample: pd.DataFrame
) -> Iterator[Fuzzed]:
    """A real `shipyard server` with two models and a key of each scope."""
    home: Path = tmp_path_factory.mktemp("fuzz")
    config = Settings(home=home, actor="fuzz")
    with Registry.from_settings(config) as registry:
        for _ in range(2):
            registry.register(fraud_model, name="fraud-detector", sample=fraud_sample)
        registry.register(fraud_model, name="other", sample=fraud_sample)
        registry.deploy("fraud-detector", 1)
        registry.deploy("other", 1)
    keys = {scope: make_key(config, scope, name=f"fuzz-{scope}") for scope in CALLERS[1:5]}
    keys["admin-of-other"] = make_key(config, "admin", model="other")
    with ServerProcess(config, env={"SHIPYARD_LOG_FLUSH_SECONDS": "0.5"}) as server:
        yield Fuzzed(server.url, keys)
        log = server.log.read_text()
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
def test_no_route_answers_5xx_or_breaks_its_documented_shape(
    case: Any, fuzzed: Fuzzed, fraud_sample: pd.DataFrame
) -> None:
    if case.path.endswith("/predict") and case.body is None:
        case.body = {"instances": records(fraud_sample.iloc[:2])}
    for caller in CALLERS:  # the same request with each kind of key, and without one
        headers = (
            {} if caller == "anonymous" else {"Authorization": f"Bearer {fuzzed.keys[caller]}"}
        )
        case.call_and_validate(base_url=fuzzed.url, headers=headers, checks=CHECKS)

"""An S3 artifact root that cannot be used (wrong or missing credentials, an endpoint nobody
answers on) is a clear error saying what to fix, from the command line and from a server
starting on it: never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import joblib
import pandas as pd
import pytest

from shipyard.core import Settings
from shipyard.registry import Registry
from tests.conftest import records
from tests.s3.conftest import S3Endpoint
from tests.serving.conftest import make_key
from tests.serving.servers import free_port

pytestmark = pytest.mark.slow

MODEL = "fraud-detector"


@pytest.fixture
def model_files(tmp_path: Path, fraud_model: Any, fraud_sample: pd.DataFrame) -> list[str]:
    """`shipyard models register` arguments for a model file and its sample."""
    joblib.dump(fraud_model, tmp_path / "model.joblib")
    fraud_sample.to_parquet(tmp_path / "sample.parquet")
    return [
        "models", "register", str(tmp_path / "model.joblib"),
        "--name", MODEL, "--sample", str(tmp_path / "sample.parquet"),
    ]  # fmt: skip


def _environment(tmp_path: Path, s3: S3Endpoint, **aws: str | None) -> dict[str, str]:
    """The environment of a shipyard process on `s3`'s bucket, with `aws` replacing (None:
    removing) AWS variables; no ~/.aws and no instance metadata to fall back on."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHIPYARD_", "AWS_"))}
    env.update(
        SHIPYARD_HOME=str(tmp_path / "home"),
        SHIPYARD_ARTIFACT_ROOT=s3.root,
        HOME=str(tmp_path),
        AWS_EC2_METADATA_DISABLED="true",
    )
    for name, value in {**s3.env, **aws}.items():
        if value is not None:
            env[name] = value
    return env


def _shipyard(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shipyard", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    "aws",
    [
        pytest.param({"AWS_SECRET_ACCESS_KEY": "not-the-secret"}, id="wrong-secret"),
        pytest.param({"AWS_ACCESS_KEY_ID": "nobody"}, id="unknown-key"),
    ],
)
def test_credentials_the_store_refuses_are_a_configuration_error_naming_them(
    tmp_path: Path, s3: S3Endpoint, model_files: list[str], aws: dict[str, str]
) -> None:
    done = _shipyard(model_files, _environment(tmp_path, s3, **aws))
    assert done.returncode == 7, done.stderr
    assert "Traceback" not in done.stderr
    message = " ".join(done.stderr.split())
    assert f"the artifact store {s3.root} refused to" in message
    assert "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY" in message
    assert not s3.fs.find(s3.bucket)  # nothing was written


def test_no_credentials_at_all_is_a_configuration_error_saying_which_to_set(
    tmp_path: Path, s3: S3Endpoint, model_files: list[str]
) -> None:
    env = _environment(tmp_path, s3, AWS_ACCESS_KEY_ID=None, AWS_SECRET_ACCESS_KEY=None)
    done = _shipyard(model_files, env)
    assert done.returncode == 7, done.stderr
    assert "Traceback" not in done.stderr
    message = " ".join(done.stderr.split())
    assert f"no credentials for the artifact store {s3.root}" in message
    assert "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in message


def test_an_endpoint_nobody_answers_on_is_a_backend_error_naming_the_endpoint_setting(
    tmp_path: Path, s3: S3Endpoint, model_files: list[str]
) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    # one attempt per call (botocore retries 5 times by default): the answer is the same
    env = _environment(tmp_path, s3, AWS_ENDPOINT_URL=nobody, AWS_MAX_ATTEMPTS="1")
    done = _shipyard(model_files, env)
    assert done.returncode == 9, done.stderr  # a part is down: retry
    assert "Traceback" not in done.stderr
    message = " ".join(done.stderr.split())
    assert f"the artifact store {s3.root} cannot be reached" in message
    assert nobody in message
    assert "AWS_ENDPOINT_URL" in message


def test_a_server_started_with_wrong_credentials_says_why_it_is_not_ready(
    tmp_path: Path, s3: S3Endpoint, sqlite_settings: Settings, fraud_sample: pd.DataFrame,
    fraud_model: Any,
) -> None:  # fmt: skip
    on_s3 = sqlite_settings.model_copy(update={"artifact_root": s3.root})
    with Registry.from_settings(on_s3) as registry:
        registry.register(fraud_model, name=MODEL, sample=fraud_sample, aliases=["production"])
    token = make_key(on_s3, "admin")
    env = _environment(tmp_path, s3, AWS_SECRET_ACCESS_KEY="not-the-secret")
    # a new machine: the same database, no local copy of the bundle
    env.update(
        SHIPYARD_HOME=str(tmp_path / "new-machine"),
        SHIPYARD_DATABASE_URL=on_s3.resolved_database_url,
    )
    port = free_port()
    log = tmp_path / "server.log"
    with log.open("wb") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "shipyard", "server", "--port", str(port)],
            env=env, stdout=subprocess.DEVNULL, stderr=sink, start_new_session=True,
        )  # fmt: skip
    try:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers) as client:
            deadline = time.monotonic() + 60
            while True:
                assert server.poll() is None, f"the server exited:\n{log.read_text()[-3000:]}"
                try:
                    if client.get("/v2/health/live", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, f"not live in 60 s:\n{log.read_text()}"
                time.sleep(0.1)
            ready = client.get("/v2/health/ready")
            serving = client.get("/v1/serving").json()
            answer = client.post(
                f"/v1/models/{MODEL}/predict", json={"instances": records(fraud_sample.iloc[:1])}
            )
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert ready.status_code == 503
    why = " ".join(serving["problems"])
    assert f"the artifact store {s3.root} refused to read models/{MODEL}/1/" in why
    assert "AWS_SECRET_ACCESS_KEY" in why
    assert answer.status_code == 503
    assert "refused to read" in answer.json()["error"]["message"]
    assert "Traceback" not in log.read_text()

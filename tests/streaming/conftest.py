"""A home with models to stream through, and helpers to run `shipyard stream` as a process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from shipyard.core import Settings
from shipyard.registry import Registry
from tests.serving.slow_model import SlowClassifier

REDIS_URL = os.environ.get("SHIPYARD_TEST_REDIS_URL")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`fast:1` scores at once; `slow:1` sleeps 0.1 s per batch (to be killed mid-stream).
    Both score x0 through a logistic: score = 1 / (1 + exp(-x0))."""
    home = tmp_path_factory.mktemp("stream-home")
    X = pd.DataFrame({"x0": [-1.0, 1.0], "x1": [0.0, 0.0]})
    with Registry.from_settings(Settings(home=home, auto_migrate=True, actor="t")) as registry:
        registry.register(SlowClassifier(delay=0.0).fit(X, [0, 1]), name="fast", sample=X)
        registry.register(SlowClassifier(delay=0.1).fit(X, [0, 1]), name="slow", sample=X)
    return home


@pytest.fixture
def redis_client() -> Iterator[Any]:
    if not REDIS_URL:
        pytest.skip("SHIPYARD_TEST_REDIS_URL is not set; stream tests need a Redis server")
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def names(redis_client: Any) -> Iterator[Callable[[str], str]]:
    """Unique stream names for a test, deleted (with their dedup keys) afterwards."""
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    yield lambda name: f"{prefix}-{name}"
    for key in redis_client.scan_iter(f"*{prefix}*"):
        redis_client.delete(key)


def url(stream: str) -> str:
    assert REDIS_URL is not None
    return f"{REDIS_URL.rsplit('/', 1)[0]}/{stream}"


def events(n: int, *, start: int = 0, seed: int = 1) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    return [
        {"event_id": f"e{i}", "device": f"d{i % 7}", "x0": float(rng.normal()), "x1": 0.5}
        for i in range(start, start + n)
    ]


def produce(client: Any, stream: str, rows: list[Any]) -> None:
    pipe = client.pipeline()
    for row in rows:
        pipe.xadd(stream, {"data": row if isinstance(row, str | bytes) else json.dumps(row)})
    pipe.execute()


def results(client: Any, stream: str) -> list[dict[str, Any]]:
    return [json.loads(fields[b"data"]) for _, fields in client.xrange(stream)]


def command(home: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "shipyard", "--home", str(home), "stream", *args]


def env() -> dict[str, str]:
    out = {**os.environ, "SHIPYARD_ACTOR": "stream-tester", "COLUMNS": "200"}
    out.pop("SHIPYARD_DATABASE_URL", None)
    return out


def shipyard(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(home, *args), env=env(), capture_output=True, text=True, timeout=timeout
    )


def start(home: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        command(home, *args), env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def wait_for(
    condition: Callable[[], bool],
    seconds: float,
    what: str,
    process: subprocess.Popen[str] | None = None,
) -> None:
    """Until `condition` holds; fails at the deadline, or at once if `process` exits first."""
    deadline = time.monotonic() + seconds
    while not condition():
        if process is not None and process.poll() is not None:
            _, err = process.communicate()
            raise AssertionError(f"the consumer exited ({process.returncode}) before {what}: {err}")
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)


def wait_ready(process: subprocess.Popen[str], seconds: float = 60) -> None:
    """Until the consumer says it is scoring (its first line on stderr)."""
    assert process.stderr is not None
    found: list[str] = []
    reader = threading.Thread(target=lambda: found.append(process.stderr.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(seconds)
    if not found or "scoring" not in found[0]:
        raise AssertionError(f"the consumer did not start: {found}")

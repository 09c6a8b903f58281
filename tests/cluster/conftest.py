"""A small production on one machine: three serving replicas, each in its own network namespace
with its own address, HAProxy in front of them, an operator's host for the CLI, all sharing
this machine's PostgreSQL and Redis and one S3 bucket (SeaweedFS), each reached through the
bridge as across a network."""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from shipyard.access import KeyStore
from shipyard.core import Settings
from shipyard.registry import Registry
from tests.cluster.network import Host, Lab, Process, netns_unavailable
from tests.s3.conftest import SeaweedFS, forget_s3_clients
from tests.serving.slow_model import SlowClassifier

POSTGRES_URL = os.environ.get("SHIPYARD_TEST_POSTGRES_URL")
REDIS_URL = os.environ.get("SHIPYARD_TEST_REDIS_URL")
REPLICA_PORT = 8000
BALANCER_PORT = 18080
REFRESH_SECONDS = 1.0
REDIS_DB = 11  # the cluster's own Redis database, flushed at the start
FEATURES = ["amount", "age"]
DRAIN_SECONDS = 2.0  # what a replica told to stop keeps answering while out of rotation
SLOW_SECONDS = 1.0  # each call of the `slow` model

pytestmark = pytest.mark.slow


@dataclass
class Cluster:
    """What the tests drive: the balancer's URL, the replicas, an operator host, keys."""

    lab: Lab
    url: str
    replicas: list[Host]
    servers: dict[str, Process]
    ops: Host
    settings: Settings  # the same state, as seen from the test's own (root) namespace
    env: dict[str, str]  # what a process on a lab host is started with
    folder: Path
    tokens: dict[str, str] = field(default_factory=dict)

    def replica_url(self, host: Host) -> str:
        return f"http://{host.address}:{REPLICA_PORT}"

    def start_server(self, host: Host) -> Process:
        env = {**self.env, "SHIPYARD_HOME": str(self.folder / host.name)}
        process = host.spawn(
            "server",
            [sys.executable, "-m", "shipyard", "server", "--host", "0.0.0.0",
             "--port", str(REPLICA_PORT), "--workers", "1", "--log-format", "json"],
            env, self.folder / host.name / "server.log",
        )  # fmt: skip
        self.servers[host.name] = process
        wait_ready(self.replica_url(host), process)
        return process

    def cli(self, *args: str) -> Any:
        """`shipyard ...` run on the operator's host."""
        env = {**self.env, "SHIPYARD_HOME": str(self.folder / "ops")}
        return self.ops.run([sys.executable, "-m", "shipyard", *args], env)


def wait_ready(url: str, process: Process, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if not process.alive():
            raise AssertionError(f"{process.name} exited while starting:\n{process.tail()}")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{process.name} was not ready in {timeout} s:\n{process.tail()}")
        time.sleep(0.1)


def _database(lab_host: str) -> tuple[str, str, Any]:
    """A fresh PostgreSQL database: its URL from here and from the lab's hosts, and a dropper."""
    from sqlalchemy import create_engine, make_url, text
    from sqlalchemy.pool import NullPool

    assert POSTGRES_URL is not None
    admin_url = make_url(POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://", 1))
    name = f"shipyard_cluster_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    here = admin_url.set(database=name)
    there = here.set(host=lab_host, port=5432)
    return (
        here.render_as_string(hide_password=False),
        there.render_as_string(hide_password=False),
        drop,
    )


def _redis(lab_host: str) -> tuple[str, str]:
    """The cluster's own Redis database (flushed): its URL from here and from the lab's hosts."""
    from urllib.parse import urlsplit, urlunsplit

    import redis

    assert REDIS_URL is not None
    client = redis.Redis.from_url(REDIS_URL, db=REDIS_DB)
    client.flushdb()
    client.close()
    parts = urlsplit(REDIS_URL)
    here = urlunsplit(parts._replace(path=f"/{REDIS_DB}"))
    there = urlunsplit(
        parts._replace(netloc=f"{lab_host}:{parts.port or 6379}", path=f"/{REDIS_DB}")
    )
    return here, there


def _port(url: str) -> int:
    from urllib.parse import urlsplit

    return urlsplit(url).port or 6379


def _model(seed: int) -> tuple[Any, pd.DataFrame]:
    import numpy as np

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"amount": rng.lognormal(3, 1, 800), "age": rng.integers(18, 90, 800)})
    label = (frame["amount"] > frame["amount"].quantile(0.8)).astype(int)
    return LogisticRegression(max_iter=300).fit(frame[FEATURES], label), frame


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    why = netns_unavailable()
    if why is not None:
        pytest.skip(f"several hosts on one machine need network namespaces: {why}")
    if not (POSTGRES_URL and REDIS_URL):
        pytest.skip(
            "the cluster shares PostgreSQL and Redis: set SHIPYARD_TEST_POSTGRES_URL and SHIPYARD_TEST_REDIS_URL"
        )
    folder = tmp_path_factory.mktemp("cluster")
    store = SeaweedFS(folder / "seaweedfs").start()  # one bucket every host shares
    lab = Lab.create(folder)
    drop = None
    patch = pytest.MonkeyPatch()
    try:
        database_here, database_there, drop = _database(lab.gateway)
        redis_here, redis_there = _redis(lab.gateway)
        bucket = store.bucket()
        for name, value in bucket.env.items():  # this process reads the bucket too
            patch.setenv(name, value)
        forget_s3_clients()
        settings = Settings(
            home=folder / "tester", database_url=database_here, artifact_root=bucket.root,
            redis_url=redis_here, auto_migrate=True, actor="tester",
        )  # fmt: skip
        tokens: dict[str, str] = {}
        with Registry.from_settings(settings) as registry:
            for seed in (1, 2):
                model, frame = _model(seed)
                registry.register(model, name="fraud", sample=frame[FEATURES].head(200))
            registry.deploy("fraud", 1)
            # a model that takes its time, to have requests in flight when a replica is stopped
            rows = pd.DataFrame({"x0": [-1.0, 1.0]})
            slow = SlowClassifier(delay=SLOW_SECONDS).fit(rows, [0, 1])
            registry.register(slow, name="slow", sample=rows)
            registry.deploy("slow", 1)
            keys = KeyStore(registry.database)
            tokens["predict"] = keys.create("predict", name="checkout")[1]
            tokens["admin"] = keys.create("admin", name="operator")[1]
            limited = keys.create("predict", rate_per_second=5, burst=5, name="partner")
            tokens["limited"] = limited[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
        env.update(bucket.env)
        env.update(
            AWS_ENDPOINT_URL=f"http://{lab.gateway}:{store.s3}",  # S3 across the bridge
            SHIPYARD_DATABASE_URL=database_there, SHIPYARD_REDIS_URL=redis_there,
            SHIPYARD_ARTIFACT_ROOT=bucket.root, SHIPYARD_AUTO_MIGRATE="false",
            SHIPYARD_REFRESH_SECONDS=str(REFRESH_SECONDS), SHIPYARD_ACTOR="cluster",
            SHIPYARD_DRAIN_SECONDS=str(DRAIN_SECONDS),
        )  # fmt: skip
        replicas = [lab.host(f"r{i}") for i in (1, 2, 3)]
        ops = lab.host("ops")
        # the balancer first: it also carries the hosts' way to PostgreSQL, Redis and S3
        url = lab.balancer(
            BALANCER_PORT, replicas, REPLICA_PORT, forwards=[5432, _port(redis_here), store.s3]
        )
        cluster = Cluster(lab, url, replicas, {}, ops, settings, env, folder, tokens)
        for host in replicas:
            cluster.start_server(host)
        yield cluster
    finally:
        lab.close()
        if drop is not None:
            drop()
        store.close()
        patch.undo()
        forget_s3_clients()

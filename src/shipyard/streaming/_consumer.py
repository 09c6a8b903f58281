"""A stream consumer: events in micro-batches through one registered model, results to a sink.

    poll up to `batch_size` events (waiting at most `max_wait` for them)
      -> parse (not JSON, not an object: dead letter) -> validate (a violation: dead letter)
      -> score -> write the results to the sink (durable, idempotent by event id)
      -> raise due alerts -> write dead letters
      -> every few batches: log their predictions (`source = stream`), commit them

Nothing is committed before its results are durable, so a crash at any point loses nothing:
the batch is delivered again and scored again, and the sink, the log and the alerts (a
cooldown in the database) absorb the repeat. Results reach the sink batch by batch; the log
and the commit take several batches at once (`commit_every` events, or `commit_wait`
seconds, or a stop), so the log holds a block per few thousand events, named after
its first event, rather than a file per batch. A
prediction id is made from the group and the event id, so a repeat has the same ids.

At most one batch is in flight: a slow sink slows the reads instead of filling memory. (A
second thread finishing batch k while this one scores k+1 measured slower: the GIL, not the
broker, is the bottleneck.)
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from shipyard.core import ModelRef, Settings
from shipyard.core.errors import (
    BackendUnavailable,
    ModelOutputInvalid,
    SchemaViolation,
    ServiceUnavailable,
)
from shipyard.core.values import category_text
from shipyard.logstore import write_block
from shipyard.registry import Registry, ServedModel, shape_prediction
from shipyard.streaming._alerts import EventAlerts
from shipyard.streaming._brokers import Event, Result, Sink, Source
from shipyard.streaming._metrics import StreamMetrics

__all__ = ["StreamConsumer", "StreamStats"]

log = logging.getLogger("shipyard.streaming")

MAX_EVENT_ID = 256
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass
class StreamStats:
    """What a consumer did since it started."""

    events: int = 0
    scored: int = 0
    dead_letters: int = 0
    alerts: int = 0
    batches: int = 0
    retries: int = 0
    seconds: float = 0.0  # from the first event on
    version: int | None = None
    versions: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["events_per_second"] = round(self.events / self.seconds, 1) if self.seconds else 0.0
        return out


class StreamConsumer:
    """Scores a source's events into a sink; see the module docstring.

    Args:
        model: NAME (its serving alias, followed as it moves), NAME:ALIAS or NAME:VERSION.
        group: the consumer group (also names the consumer's log blocks and alerts).
        dead_letters: where events that cannot be scored go, with the reason.
        id_field: the event field holding its id; events without one are known by their
            position in the stream.
        keep: event fields copied into each result (default: every field the model does not
            take).
        follow_seconds: how often the alias is read again (a new version is loaded between
            batches).
        commit_every, commit_wait: delivered batches are logged (one block for all of them)
            and committed once they hold `commit_every` events, once the oldest was delivered
            `commit_wait` seconds ago (busy or quiet), and when the consumer stops.
    """

    def __init__(
        self,
        registry: Registry,
        settings: Settings,
        model: str,
        source: Source,
        sink: Sink,
        dead_letters: Sink,
        *,
        group: str,
        batch_size: int = 500,
        max_wait: float = 0.1,
        id_field: str = "event_id",
        keep: list[str] | None = None,
        alerts: EventAlerts | None = None,
        log_predictions: bool = True,
        metrics: StreamMetrics | None = None,
        follow_seconds: float = 30.0,
        commit_every: int = 5_000,
        commit_wait: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.ref = ModelRef.parse(model)
        self.source = source
        self.sink = sink
        self.dead_letters = dead_letters
        self.group = group
        self.batch_size = batch_size
        self.max_wait = max_wait
        self.id_field = id_field
        self.keep = keep
        self.alerts = alerts
        self.log_predictions = log_predictions
        self.metrics = metrics
        self.follow_seconds = follow_seconds
        self.commit_every = commit_every
        self.commit_wait = commit_wait
        self.clock = clock
        self.stats = StreamStats()
        self._lock = threading.Lock()
        self._events_in_flight = 0
        self._held: list[_Batch] = []  # delivered, not yet logged and committed
        self._held_since = 0.0
        self.served = self._load()
        self._followed_at = clock()

    # -- the model ------------------------------------------------------------------------------

    def _load(self) -> ServedModel:
        version = self.registry.resolve(self.ref, default_alias=self.settings.serving_alias).version
        served = self.registry.load(self.ref.name, version)
        self.stats.version = version
        self.stats.versions.append(version)
        log.info("scoring with %s:%s on %s", served.name, version, served.predictor.runtime)
        return served

    def _follow(self) -> None:
        if self.ref.version is not None or self.clock() - self._followed_at < self.follow_seconds:
            return
        self._followed_at = self.clock()
        try:
            version = self.registry.resolve(
                self.ref, default_alias=self.settings.serving_alias
            ).version
        except BackendUnavailable:
            return  # the database is away: keep scoring with the version we have
        if version != self.served.version:
            self.served = self._load()

    # -- the loop -------------------------------------------------------------------------------

    def run(
        self,
        stop: threading.Event | None = None,
        *,
        max_events: int | None = None,
        idle_exit: float | None = None,
    ) -> StreamStats:
        """Consume until `stop` is set (SIGTERM: the batches in hand are finished and
        committed), `max_events` are done, or nothing came for `idle_exit` seconds."""
        stop = stop or threading.Event()
        started: float | None = None  # the first event: a group's join is not work
        idle_since = self.clock()
        pending: _Batch | None = None
        backoff = 0.5
        while not stop.is_set():
            try:
                if pending is not None:
                    self.finish(pending)
                    pending = None
                    backoff = 0.5
                    idle_since = self.clock()
                    self._follow()
                    continue
                if max_events is not None and self.stats.events >= max_events:
                    break
                want = self.batch_size
                if max_events is not None:
                    want = min(want, max_events - self.stats.events)
                try:
                    events = self.source.poll(want, self.max_wait)
                except ServiceUnavailable as error:
                    log.error("%s; trying again in %.1f s", error.message, backoff)
                    stop.wait(backoff)
                    backoff = min(backoff * 2, 30.0)
                    continue
                if not events:
                    if self._held and self.clock() - self._held_since >= self.commit_wait:
                        self.flush()  # a quiet source: what is held is committed in time
                    if idle_exit is not None and self.clock() - idle_since >= idle_exit:
                        break
                    self._observe_lag()
                    continue
                if started is None:
                    started = self.clock()
                pending = self.prepare(events)
            except (ServiceUnavailable, BackendUnavailable) as error:
                # nothing held was committed: it is delivered (or logged) again, as it is
                self.stats.retries += 1
                log.error("%s; tried again in %.1f s", error.message, backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
        try:  # stopping: the batch in hand and what is held are finished and committed
            if pending is not None:
                self.finish(pending)
            self.flush()
        except (ServiceUnavailable, BackendUnavailable) as error:
            held = sum(len(b.events) for b in self._held)
            log.error(
                "%s; stopping with %d event(s) uncommitted: they are delivered again",
                error.message,
                held
                + (len(pending.events) if pending is not None and not pending.delivered else 0),
            )
        self.stats.seconds = self.clock() - started if started is not None else 0.0
        return self.stats

    def _observe_lag(self) -> None:
        if self.metrics is not None:
            self.metrics.lag(self.source.lag())

    # -- one batch ------------------------------------------------------------------------------

    def process(self, events: list[Event]) -> None:
        """Score, write, log, alert and commit one batch; see the module docstring."""
        self.finish(self.prepare(events))
        self.flush()

    def prepare(self, events: list[Event]) -> _Batch:
        """Parse and score a batch: its results and its dead letters, nothing written yet."""
        started = time.perf_counter()
        served = self.served
        parsed: list[tuple[Event, str, dict[str, Any]]] = []
        dead: list[tuple[Event, str, str]] = []
        for event in events:
            body, why = _parse(event.payload)
            if body is None:
                dead.append((event, event.position, why))
                continue
            parsed.append((event, _event_id(body, self.id_field, event), body))
        scored, columns, result = self._score(served, parsed, dead)
        results = []
        if scored:
            assert result is not None
            kept = self._kept(served)
            head = {"model": served.name, "version": served.version}
            for (event, event_id, body), pid, prediction in zip(
                scored, result.ids, result.records(), strict=True
            ):
                record = {"prediction_id": pid, **head, **prediction}
                for key in kept(body):
                    record[key] = body[key]
                results.append(Result(event_id, event.position, record))
        batch = _Batch(events, served, scored, columns, result, results, dead)
        batch.seconds = time.perf_counter() - started
        self._in_flight(len(events))
        return batch

    def finish(self, batch: _Batch) -> None:
        """Deliver a scored batch (its results to the sink, its alerts, its dead letters) and
        hold it for the next `flush`, which runs now if it is due. Every step is idempotent:
        after a failure the batch is finished again, as it is."""
        started = time.perf_counter()
        served = batch.served
        replayed = any(event.replayed for event in batch.events)
        if replayed and not batch.delivered:
            self.flush()  # a replay is logged on its own: see `_log`
        if not batch.delivered:
            if batch.results:
                self.sink.write(batch.results)
                if self.alerts is not None and not batch.alerted:
                    raised = self.alerts.check(
                        served.version,
                        [(r.event_id, r.record["prediction_id"], r.record, b) for r, (_, _, b) in zip(batch.results, batch.scored, strict=True)],
                    )  # fmt: skip
                    batch.alerted = True
                    self.stats.alerts += len(raised)
                    if self.metrics is not None:
                        self.metrics.alerts(served.name, len(raised))
            if batch.dead:
                self.dead_letters.write(
                    [
                        Result(
                            f"dead:{event.position}",
                            event.position,
                            {
                                "event_id": event_id,
                                "position": event.position,
                                "reason": why,
                                "payload": _text(event.payload),
                                "model": served.name,
                            },
                        )
                        for event, event_id, why in batch.dead
                    ]
                )
            batch.delivered = True
            if not self._held:
                self._held_since = self.clock()
            self._held.append(batch)
            self.stats.events += len(batch.events)
            self.stats.scored += len(batch.results)
            self.stats.dead_letters += len(batch.dead)
            self.stats.batches += 1
            if self.metrics is not None:
                seconds = batch.seconds + time.perf_counter() - started
                self.metrics.batch(served.name, len(batch.results), len(batch.dead), seconds)
        held = sum(len(b.events) for b in self._held)
        if (
            replayed
            or held >= self.commit_every
            or self.clock() - self._held_since >= self.commit_wait
        ):
            self.flush()

    def flush(self) -> None:
        """Log the held batches' predictions, then commit their events at the source."""
        if not self._held:
            return
        if self.log_predictions:
            self._log(self._held)
        events = [event for batch in self._held for event in batch.events]
        self.source.commit(events)
        self._held = []
        self._in_flight(-len(events))

    def _in_flight(self, change: int) -> None:
        with self._lock:
            self._events_in_flight += change
            if self.metrics is not None:
                self.metrics.in_flight(self._events_in_flight)

    def _kept(self, served: ServedModel) -> Callable[[dict[str, Any]], Any]:
        """Which of an event's fields go into its result (set operations: no call per field)."""
        if self.keep is not None:
            wanted = set(self.keep)
            return lambda body: body.keys() & wanted
        left_out = set(served.signature.names) | {
            "prediction_id", "model", "version", "score", "label", "value", "threshold",
            "probabilities",
        }  # fmt: skip
        return lambda body: body.keys() - left_out

    def _score(
        self,
        served: ServedModel,
        parsed: list[tuple[Event, str, dict[str, Any]]],
        dead: list[tuple[Event, str, str]],
    ) -> tuple[list[tuple[Event, str, dict[str, Any]]], dict[str, np.ndarray], Any]:
        """The events that could be scored, their columns and their result; the others go to
        `dead` with the reason."""
        good = list(parsed)
        while good:  # validation, then the model's output; each round drops what it refuses
            records = [body for _, _, body in good]  # fields the model does not take are ignored
            try:
                columns = served.signature.validate_records(records, loc="events")
                started = time.perf_counter()
                with np.errstate(all="ignore"):
                    raw = served.predictor.predict(columns)
                result = shape_prediction(served, raw, (time.perf_counter() - started) * 1e3)
            except (SchemaViolation, ModelOutputInvalid) as error:
                reasons: dict[int, list[str]] = defaultdict(list)
                for detail in error.details():
                    loc = detail.get("loc") or []
                    if len(loc) > 1 and isinstance(loc[1], int):
                        field_name = loc[2] if len(loc) > 2 else ""
                        reasons[loc[1]].append(f"{field_name}: {detail.get('msg')}".lstrip(": "))
                if not reasons:  # nothing names a record: the batch as a whole is refused
                    reasons = {i: [error.message] for i in range(len(good))}
                dead.extend(
                    (good[i][0], good[i][1], "; ".join(r)[:1000]) for i, r in reasons.items()
                )
                good = [g for i, g in enumerate(good) if i not in reasons]
                continue
            ids = [_prediction_id(self.group, event_id, event.at) for event, event_id, _ in good]
            return good, columns, _with_ids(result, ids)
        return [], {}, None

    def _log(self, batches: list[_Batch]) -> None:
        """Log delivered batches: a block per model version, partition and day, named after
        its first event, so that logging the same events again replaces the block instead of
        adding to it. A redelivery after a crash starts at that first event (Kafka: the
        partition's committed offset; Redis: the oldest pending entry, claimed in order and
        logged on its own), so its first block takes the old block's name, whatever the
        batches are this time; the events after it go to blocks of their own."""
        by_version: dict[int, list[_Batch]] = {}
        for batch in batches:
            if batch.results:
                by_version.setdefault(batch.served.version, []).append(batch)
        for version, group in by_version.items():
            rows = _log_rows(group)
            keys = rows["partition"] * 1_000_000 + rows["ts"] // 86_400_000_000
            for key in np.unique(keys).tolist():
                mask = keys == key
                where = None if mask.all() else pa.array(np.flatnonzero(mask))

                def part(values: Any, where: pa.Array | None = where) -> pa.Array:
                    array = values if isinstance(values, pa.Array) else pa.array(values)
                    return array if where is None else array.take(where)

                first = int(np.flatnonzero(mask)[0])
                position = rows["position"][first]
                write_block(
                    self.registry.artifacts,
                    name=f"stream-{_UNSAFE.sub('_', self.group)[:64]}-{_UNSAFE.sub('_', position)}",
                    model=group[0].served.name,
                    version=version,
                    ids=part(rows["id"]),
                    at=datetime.fromtimestamp(int(rows["ts"][first]) / 1e6, UTC),
                    source="stream",
                    job_id=self.group,
                    variant="stream",
                    features={n[2:]: part(v) for n, v in rows.items() if n.startswith("f:")},
                    outputs={n[2:]: part(v) for n, v in rows.items() if n.startswith("o:")},
                    times=part(rows["ts"]),
                )


def _log_rows(batches: list[_Batch]) -> dict[str, Any]:
    """The log rows of delivered batches of one version, gathered once per flush (a flush may
    hold hundreds of batches of a few events): id, ts (µs), position, partition, `f:`
    features, `o:` outputs."""
    scored = [item for batch in batches for item in batch.scored]
    at = np.fromiter((event.at for event, _, _ in scored), np.float64, len(scored))
    rows: dict[str, Any] = {
        "id": pa.array([i for batch in batches for i in batch.result.ids], pa.string()),
        "ts": np.round(at * 1e6).astype(np.int64),
        "position": [event.position for event, _, _ in scored],
        "partition": np.fromiter(
            (event.partition for event, _, _ in scored), np.int64, len(scored)
        ),
    }
    for name in batches[0].columns:
        rows[f"f:{name}"] = np.concatenate([batch.columns[name] for batch in batches])
    outputs = [batch.result.outputs() for batch in batches]
    for name in outputs[0]:
        if name == "label":
            values = [v for out in outputs for v in out[name]]
            texts = {value: category_text(value) for value in set(values)}
            rows["o:label"] = pa.array([texts[value] for value in values], pa.string())
        elif name == "probabilities":
            matrix = np.concatenate([np.asarray(out[name], dtype=np.float64) for out in outputs])
            rows["o:probabilities"] = pa.FixedSizeListArray.from_arrays(
                pa.array(matrix.reshape(-1)), matrix.shape[1]
            ).cast(pa.list_(pa.float64()))
        else:
            rows[f"o:{name}"] = np.concatenate(
                [np.asarray(out[name], dtype=np.float64) for out in outputs]
            )
    return rows


def _parse(payload: Any) -> tuple[dict[str, Any] | None, str]:
    """An event's fields, or None and why it is not an event."""
    if isinstance(payload, Mapping):  # Redis fields: each value JSON where it parses
        body = {}
        for key, value in payload.items():
            text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
            try:
                body[str(key)] = orjson.loads(text)
            except orjson.JSONDecodeError:
                body[str(key)] = text
        return body, ""
    if payload is None:
        return None, "the event is empty"
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError as error:
        return None, f"the event is not JSON ({error})"
    if not isinstance(body, dict):
        return None, f"the event is JSON but not an object (a {type(body).__name__})"
    return body, ""


def _event_id(body: Mapping[str, Any], id_field: str, event: Event) -> str:
    value = body.get(id_field)
    if value is None or isinstance(value, dict | list) or str(value) == "":
        return event.position
    return str(value)[:MAX_EVENT_ID]


def _prediction_id(group: str, event_id: str, at: float) -> str:
    """The event's time in milliseconds, then a digest of the group and the event id: the same
    event scored again by the group has the same id."""
    digest = hashlib.blake2b(f"{group}\0{event_id}".encode(), digest_size=10).hexdigest()
    return f"{max(0, int(at * 1000)):012x}"[-12:] + digest


def _with_ids(result: Any, ids: list[str]) -> Any:
    from dataclasses import replace

    return replace(result, ids=ids)


def _text(payload: Any) -> str:
    if isinstance(payload, bytes):
        return payload.decode(errors="replace")[:10_000]
    if isinstance(payload, Mapping):
        return json.dumps(
            {str(k): (v.decode(errors="replace") if isinstance(v, bytes) else v) for k, v in payload.items()},
            default=str,
        )[:10_000]  # fmt: skip
    return str(payload)[:10_000]


@dataclass
class _Batch:
    """A scored batch on its way to the sink."""

    events: list[Event]
    served: ServedModel
    scored: list[tuple[Event, str, dict[str, Any]]]
    columns: dict[str, np.ndarray]
    result: Any
    results: list[Result]
    dead: list[tuple[Event, str, str]]
    seconds: float = 0.0
    alerted: bool = False  # alerts are checked once: a retried batch does not count them again
    delivered: bool = False  # results, alerts and dead letters written

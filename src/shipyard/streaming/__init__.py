"""Streaming prediction: a consumer group scores events from Redis Streams or Kafka in
micro-batches, writes results to a sink once per event, sends what it cannot score to a
dead-letter stream, raises alerts once per entity per cooldown, and logs what it scored so
`monitor` covers it."""

from __future__ import annotations

from shipyard.streaming._alerts import EventAlerts, EventRule, event_alerts
from shipyard.streaming._brokers import (
    Event,
    KafkaSink,
    KafkaSource,
    ParquetSink,
    RedisSink,
    RedisSource,
    Result,
    Sink,
    Source,
    open_sink,
    open_source,
)
from shipyard.streaming._consumer import StreamConsumer, StreamStats
from shipyard.streaming._metrics import StreamMetrics

__all__ = [
    "Event",
    "EventAlerts",
    "EventRule",
    "KafkaSink",
    "KafkaSource",
    "ParquetSink",
    "RedisSink",
    "RedisSource",
    "Result",
    "Sink",
    "Source",
    "StreamConsumer",
    "StreamMetrics",
    "StreamStats",
    "event_alerts",
    "open_sink",
    "open_source",
]

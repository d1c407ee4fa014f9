"""The consumer's Prometheus metrics and heartbeat totals.

Metrics are updated once per batch, never per record, on a private registry served on
``settings.consumer_metrics_port`` (0: not served). The same numbers feed the heartbeat log line.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from iot_platform.consumer.writer import WriteResult
from iot_platform.observability.metrics_endpoint import start_metrics_server

BATCH_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass
class Totals:
    consumed: int = 0
    inserted: int = 0
    duplicates: int = 0
    replays_skipped: int = 0
    dead_lettered: int = 0
    batches: int = 0
    database_errors: int = 0
    kafka_reopened: int = 0
    expired_before_read: int = 0


class ConsumerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.totals = Totals()
        r = self.registry
        self.consumed = Counter("iot_consumer_records_consumed", "Kafka records consumed.", ["topic"], registry=r)
        self.inserted = Counter("iot_consumer_rows_inserted", "Rows inserted into iot.messages.", registry=r)
        self.duplicates = Counter(
            "iot_consumer_duplicates_skipped",
            "Records not stored again: kind=message_id (bridge produced twice), dead_letter_message_id (a bad message produced twice), replay (same Kafka record).",
            ["kind"], registry=r,
        )
        self.dead_lettered = Counter("iot_consumer_dead_letters", "Rows written to iot.dead_letters.", ["source"], registry=r)
        self.json_dropped = Counter("iot_consumer_json_dropped", "Rows stored with payload_json NULL after PostgreSQL refused it.", registry=r)
        self.database_errors = Counter("iot_consumer_database_errors", "Failed batch attempts (retried, offsets not advanced).", registry=r)
        self.kafka_reopened = Counter(
            "iot_consumer_kafka_reopened", "Kafka clients reopened after the group gave no assignment for too long.", registry=r
        )
        self.expired_before_read = Counter(
            "iot_consumer_records_expired_before_read",
            "Kafka records deleted by retention before the consumer read them (lost; ranges in iot.expired_offsets).",
            ["topic", "partition"], registry=r,
        )
        self.lag = Gauge("iot_consumer_lag", "Records in Kafka not yet stored, per partition.", ["topic", "partition"], registry=r)
        self.batch_seconds = Histogram("iot_consumer_batch_seconds", "Time to write one batch.", buckets=BATCH_BUCKETS_S, registry=r)
        self.batch_rows = Histogram(
            "iot_consumer_batch_records", "Records per batch.", buckets=(1, 10, 100, 1000, 5000, 10000, 50000), registry=r
        )

    def serve(self, port: int) -> None:
        if port:
            start_metrics_server(port, self.registry, "IOT_CONSUMER_METRICS_PORT")

    def record_consumed(self, per_topic: dict[str, int]) -> None:
        for topic, count in per_topic.items():
            self.consumed.labels(topic).inc(count)
            self.totals.consumed += count

    def record_batch(self, result: WriteResult, records: int, seconds: float) -> None:
        t = self.totals
        t.batches += 1
        t.inserted += result.inserted
        t.duplicates += result.duplicates_message_id + result.duplicate_dead_letters
        t.replays_skipped += result.replays_skipped
        self.inserted.inc(result.inserted)
        self.duplicates.labels("message_id").inc(result.duplicates_message_id)
        self.duplicates.labels("dead_letter_message_id").inc(result.duplicate_dead_letters)
        self.duplicates.labels("replay").inc(result.replays_skipped)
        self.json_dropped.inc(result.json_dropped)
        for source, count in result.dead_letters.items():
            self.dead_lettered.labels(source).inc(count)
            t.dead_lettered += count
        for gap in result.expired:
            self.expired_before_read.labels(gap.topic, str(gap.partition)).inc(gap.records)
            t.expired_before_read += gap.records
        self.batch_seconds.observe(seconds)
        self.batch_rows.observe(records)

    def record_database_error(self) -> None:
        self.totals.database_errors += 1
        self.database_errors.inc()

    def record_reopen(self) -> None:
        self.totals.kafka_reopened += 1
        self.kafka_reopened.inc()

    def set_lag(self, topic: str, partition: int, lag: int) -> None:
        self.lag.labels(topic, str(partition)).set(lag)

    def forget_lag(self, topic: str, partition: int) -> None:
        """A revoked partition's lag is another consumer's to report."""
        with contextlib.suppress(KeyError):
            self.lag.remove(topic, str(partition))

"""How long the oldest record the consumer has not stored has waited in Kafka, against the topic's retention.

Kafka deletes a record once it is older than the topic's ``retention.ms`` (whole segments at a time,
so never earlier), whether or not the consumer has read it. Reading, per partition of both topics,
the consumer's stored position (PostgreSQL) and the watermarks (as `iot-platform verify` reads
them, and counted as it counts them: :class:`iot_platform.core.completeness.PartitionPosition`), and the
timestamp of the first record not yet stored, tells how close the oldest waiting record is to that
deletion: the warning comes at half the retention, while there is still time to act. Read-only; every
call has a timeout.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from iot_platform.core.completeness import PartitionPosition
from iot_platform.devices.verify import kafka_offsets
from iot_platform.settings import Settings

TIMEOUT_S = 10.0


@dataclass(frozen=True)
class PartitionBacklog(PartitionPosition):
    """One partition's position (``stored_next`` 0 when nothing was stored) with its topic's retention and,
    when records wait, the timestamp of the first of them."""

    retention_ms: int = 0
    oldest_timestamp_ms: int | None = None  # of the first record not yet stored, when there is one

    def age_s(self, now_ms: int) -> float | None:
        if not self.waiting or self.oldest_timestamp_ms is None:
            return None
        return max(0.0, (now_ms - self.oldest_timestamp_ms) / 1000)

    def at_risk(self, now_ms: int) -> bool:
        """Its oldest waiting record is older than half the retention, or records are gone already (pure)."""
        age = self.age_s(now_ms)
        return self.already_expired > 0 or (age is not None and age > self.retention_ms / 2000)


def kafka_backlog(settings: Settings, timeout_s: float = TIMEOUT_S) -> list[PartitionBacklog]:
    """Every partition of the messages and dead-letter topics, with its oldest unconsumed record's timestamp."""
    offsets = kafka_offsets(settings, timeout_s)
    retention = _retention_ms(settings, sorted({p.topic for p in offsets}), timeout_s)
    found = [PartitionBacklog(p.topic, p.partition, p.low, p.high, p.stored_next or 0, retention[p.topic]) for p in offsets]
    consumer = Consumer({
        **settings.kafka_config(),  # the brokers and the credentials and TLS of every platform client
        "group.id": f"iot-backlog-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",  # a record deleted meanwhile: the next one still tells the age
        "socket.timeout.ms": int(timeout_s * 1000),
    })
    try:
        return _with_oldest_timestamps(consumer, found, timeout_s)
    finally:
        consumer.close()


def _retention_ms(settings: Settings, topics: list[str], timeout_s: float) -> dict[str, int]:
    admin = AdminClient({**settings.kafka_config(), "socket.timeout.ms": int(timeout_s * 1000)})
    resources = [ConfigResource(ConfigResource.Type.TOPIC, topic) for topic in topics]
    described = admin.describe_configs(resources, request_timeout=timeout_s)
    return {r.name: int(described[r].result(timeout=timeout_s)["retention.ms"].value) for r in resources}


def _with_oldest_timestamps(consumer: Consumer, partitions: list[PartitionBacklog], timeout_s: float) -> list[PartitionBacklog]:
    """Read the first not-yet-stored record of each partition that has one, for its timestamp."""
    waiting = {(p.topic, p.partition): p for p in partitions if p.waiting}
    if not waiting:
        return partitions
    consumer.assign([TopicPartition(t, n, max(p.stored_next, p.low)) for (t, n), p in waiting.items()])
    timestamps: dict[tuple[str, int], int] = {}
    deadline = time.monotonic() + timeout_s
    while len(timestamps) < len(waiting) and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None or message.error() is not None:
            continue
        key = (message.topic(), message.partition())
        if key in waiting and key not in timestamps:
            timestamps[key] = message.timestamp()[1]
    return [PartitionBacklog(**{**asdict(p), "oldest_timestamp_ms": timestamps.get((p.topic, p.partition))}) for p in partitions]

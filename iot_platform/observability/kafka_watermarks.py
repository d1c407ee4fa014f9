"""Kafka's watermarks, read one way for everyone: the consumer's lag, `iot-platform verify`, the backlog
check and the Dagster observer.

Guarantee: every broker round trip has a timeout; a reader made by :func:`watermark_reader` never
joins its group nor commits (it only asks for metadata and watermarks), and is closed on exit. The
cached reading (librdkafka's last fetched values, no round trip: the consumer's own client, once a
second) leaves out a partition it has no value for yet instead of reporting a made-up one.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from confluent_kafka import Consumer, KafkaException, TopicPartition

from iot_platform.errors import PlatformError
from iot_platform.settings import Settings

PartitionKey = tuple[str, int]  # (topic, partition)
# librdkafka logs every refused connection while it retries; a reader's caller reports the one failure
# that matters (a timeout, an unknown topic) in one line instead.
_CLIENT_LOG = logging.getLogger(f"{__name__}.librdkafka")
_CLIENT_LOG.setLevel(logging.CRITICAL)


@contextmanager
def watermark_reader(settings: Settings, purpose: str, timeout_s: float) -> Iterator[Consumer]:
    """A throwaway client for watermarks, with the platform's brokers, credentials and TLS.

    Its group id (``iot-{purpose}-{random}``) is never joined: nothing subscribes or commits.
    """
    client = Consumer({
        **settings.kafka_config(),
        "group.id": f"iot-{purpose}-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "socket.timeout.ms": int(timeout_s * 1000),
        "logger": _CLIENT_LOG,
    })
    try:
        yield client
    finally:
        client.close()


def topic_watermarks(client: Consumer, topics: Iterable[str], timeout_s: float) -> dict[PartitionKey, tuple[int, int]]:
    """(low, high) of every partition of ``topics``, asked of the brokers; a missing topic raises."""
    keys: list[PartitionKey] = []
    for topic in topics:
        metadata = client.list_topics(topic, timeout=timeout_s).topics[topic]
        if metadata.error is not None:
            # e.g. unknown: a wrong name, or not created yet (dev up and the bridge create them)
            raise PlatformError(f"Kafka has no topic {topic!r}: {metadata.error.str()} (IOT_KAFKA_TOPIC, IOT_KAFKA_DLQ_TOPIC)")
        keys.extend((topic, partition) for partition in sorted(metadata.partitions))
    return {key: client.get_watermark_offsets(TopicPartition(*key), timeout=timeout_s, cached=False) for key in keys}


def cached_high_watermarks(client: Consumer, keys: Iterable[PartitionKey]) -> dict[PartitionKey, int]:
    """The high watermark librdkafka last fetched for each of ``keys`` (partitions it reads), without a
    broker round trip; a partition without one yet is left out."""
    found = {}
    for key in keys:
        try:
            _low, high = client.get_watermark_offsets(TopicPartition(*key), cached=True)
        except KafkaException:
            continue
        if high >= 0:
            found[key] = high
    return found

"""The one watermark reader (observability/kafka_watermarks.py) against a real Kafka."""

from __future__ import annotations

from confluent_kafka import Consumer, TopicPartition

from iot_platform.errors import PlatformError
from iot_platform.observability.kafka_watermarks import cached_high_watermarks, topic_watermarks, watermark_reader
from iot_platform.settings import Settings
from iot_platform_tests.helpers import wait_for
from iot_platform_tests.integration.test_consumer import produce, telemetry


def test_watermarks_of_every_partition_missing_topics_and_the_cached_reading(settings: Settings) -> None:
    """Asked of the brokers: (low, high) of every partition of both topics, highs summing to what was
    produced, the empty dead-letter topic at (0, 0); a missing topic raises naming it. Cached: nothing for
    a partition the client has not fetched yet, then the same high as the brokers once it has read it."""
    produced = produce(settings, telemetry(settings, 300))
    with watermark_reader(settings, "test", timeout_s=10) as client:
        marks = topic_watermarks(client, [settings.kafka_topic, settings.kafka_dlq_topic], timeout_s=10)
        try:
            topic_watermarks(client, ["iot-no-such-topic"], timeout_s=10)
        except PlatformError as exc:  # one line at the command line, naming the topic and its settings
            assert "iot-no-such-topic" in str(exc) and "IOT_KAFKA_TOPIC" in str(exc)
        else:
            raise AssertionError("a missing topic gave watermarks")
    messages = {p: high for (t, p), (low, high) in marks.items() if t == settings.kafka_topic and low == 0}
    assert sum(messages.values()) == len(produced) and len(messages) > 1
    assert {(low, high) for (t, _p), (low, high) in marks.items() if t == settings.kafka_dlq_topic} == {(0, 0)}

    partition = max(messages, key=lambda p: messages[p])
    key = (settings.kafka_topic, partition)
    reader = Consumer({**settings.kafka_config(), "group.id": "iot-test-cached", "enable.auto.commit": False})
    try:
        assert cached_high_watermarks(reader, [key]) == {}  # nothing fetched yet: left out, not made up
        reader.assign([TopicPartition(settings.kafka_topic, partition, 0)])
        reader.consume(1, timeout=10)
        assert wait_for(lambda: cached_high_watermarks(reader, [key]) == {key: messages[partition]}, 20,
                        "the cached high watermark", interval_s=0.1)
    finally:
        reader.close()

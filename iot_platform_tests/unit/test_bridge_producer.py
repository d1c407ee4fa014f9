"""ReliableProducer against librdkafka's mock cluster and an unreachable broker: confirmed or retried, never dropped."""

from __future__ import annotations

import time

from iot_platform.bridge.acks import InFlightMessage
from iot_platform.bridge.producer import ReliableProducer, producer_config
from iot_platform.core.records import InboundMessage, RecordRules, build_record
from iot_platform.settings import Settings
from iot_platform.stack.ports import free_port

SETTINGS = Settings(kafka_topic="msgs", kafka_dlq_topic="dlq", bridge_id="unit", kafka_linger_ms=0)
RULES = RecordRules.from_settings(SETTINGS)


def item(seq: int, generation: int = 1) -> InFlightMessage:
    message = InboundMessage(f"mtic/msg/client/realtime/t{seq % 3}/p", f"{seq}".encode(), 1, False, 0)
    return InFlightMessage(seq, 1, generation, message, build_record(message, RULES), time.monotonic())


def test_config_is_idempotent_all_acks_and_bounded() -> None:
    """The producer is idempotent with acks=all, compression, linger and explicit timeouts."""
    config = producer_config(SETTINGS)
    assert config["enable.idempotence"] is True and config["acks"] == "all"
    assert config["compression.type"] == SETTINGS.kafka_compression
    assert config["delivery.timeout.ms"] == SETTINGS.kafka_delivery_timeout_ms
    assert config["request.timeout.ms"] == SETTINGS.kafka_request_timeout_ms
    assert config["message.max.bytes"] == SETTINGS.kafka_max_message_bytes


def test_every_record_is_confirmed_once_on_a_working_cluster() -> None:
    """On a healthy (mock) cluster each sent record is reported delivered exactly once."""
    delivered: list[int] = []
    producer = ReliableProducer(
        SETTINGS, RULES, lambda i: delivered.append(i.mid), lambda _i: False, extra_config={"test.mock.num.brokers": 1}
    )
    for seq in range(500):
        producer.send(item(seq))
    assert producer.flush(30) == 0
    producer.close()
    assert sorted(delivered) == list(range(500))


def test_failed_deliveries_are_retried_never_reported_delivered() -> None:
    """With Kafka unreachable, deliveries time out and wait for a retry: nothing is confirmed or dropped."""
    settings = SETTINGS.model_copy(
        update={"kafka_bootstrap": f"127.0.0.1:{free_port()}", "kafka_delivery_timeout_ms": 300, "kafka_request_timeout_ms": 200}
    )
    delivered: list[int] = []
    producer = ReliableProducer(settings, RULES, lambda i: delivered.append(i.mid), lambda _i: False)
    for seq in range(20):
        producer.send(item(seq))
    deadline = time.monotonic() + 10
    while producer.retries < 20 and time.monotonic() < deadline:
        producer.service(0.05)
    assert delivered == []
    assert producer.retries >= 20
    assert producer.waiting + len(producer._producer) >= 20  # noqa: SLF001 - every record is still held somewhere
    producer.close()


def test_failed_delivery_of_a_stale_connection_is_left_to_the_broker() -> None:
    """A record whose connection is gone is not re-produced: its ack would be discarded, the broker redelivers it."""
    settings = SETTINGS.model_copy(
        update={"kafka_bootstrap": f"127.0.0.1:{free_port()}", "kafka_delivery_timeout_ms": 300, "kafka_request_timeout_ms": 200}
    )
    producer = ReliableProducer(settings, RULES, lambda _i: None, lambda _i: True)
    for seq in range(5):
        producer.send(item(seq))
    deadline = time.monotonic() + 10
    while producer.stale_failures < 5 and time.monotonic() < deadline:
        producer.service(0.05)
    assert (producer.stale_failures, producer.retries, producer.waiting) == (5, 0, 0)
    producer.close()

"""Record keys on a real broker: device keys spread a fleet over every partition, each device in order."""

from __future__ import annotations

import collections
import json
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from iot_platform.bridge.producer import producer_config
from iot_platform.core.records import InboundMessage, RecordRules, build_record
from iot_platform.devices.device_topics import device_topic
from iot_platform.settings import Settings
from iot_platform.stack.kafka_topics import ensure_topics

pytestmark = pytest.mark.integration

TENANTS, PROJECTS, DEVICES, PER_DEVICE = 5, 3, 20, 10


def _produce_fleet(settings: Settings) -> None:
    """Every device's messages, interleaved as a fleet sends them, built and produced as the bridge does."""
    rules = RecordRules.from_settings(settings)
    producer = Producer(producer_config(settings))
    topics = [device_topic(settings.mqtt_topic_grammar, f"tenant{t}", f"project{p}", f"device{d:02}")
              for t in range(TENANTS) for p in range(PROJECTS) for d in range(DEVICES)]
    failures: list[object] = []
    for seq in range(PER_DEVICE):
        for topic in topics:
            record = build_record(InboundMessage(topic, json.dumps({"seq": seq}).encode(), 1, False, 0), rules)
            producer.produce(record.topic, record.value, key=record.key, headers=record.headers,
                             on_delivery=lambda err, _msg: err and failures.append(err))
        producer.poll(0)
    assert producer.flush(30) == 0 and not failures, failures


def _read_all(settings: Settings) -> list[tuple[int, bytes, int]]:
    """(partition, key, seq) of every record of the messages topic, in each partition's order."""
    consumer = Consumer({**settings.kafka_config(), "group.id": f"keys-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(settings.kafka_topic, timeout=10).topics[settings.kafka_topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(settings.kafka_topic, p), timeout=10)[1] for p in partitions}
        consumer.assign([TopicPartition(settings.kafka_topic, p, 0) for p in partitions])
        records: list[tuple[int, bytes, int]] = []
        while len(records) < sum(ends.values()):
            batch = consumer.consume(1000, timeout=10)
            assert batch, f"read {len(records)} of {sum(ends.values())} records"
            records += [(m.partition(), m.key(), json.loads(m.value())["seq"]) for m in batch if m.error() is None]
        return records
    finally:
        consumer.close()


def _per_partition(records: list[tuple[int, bytes, int]], partitions: int) -> list[int]:
    counts = collections.Counter(partition for partition, _, _ in records)
    return [counts.get(p, 0) for p in range(partitions)]


def test_device_keys_spread_a_fleet_over_every_partition_in_device_order(settings: Settings) -> None:
    """5 tenants x 3 projects x 20 devices, 10 messages each, with the default (device) keys: all 6
    partitions get records, every device stays on one partition with its messages in order, and the
    skew (max/min records per partition) is printed for docs/benchmarks.md. The same fleet keyed by
    tenant reaches at most 5 partitions: 5 keys, one per tenant."""
    assert settings.kafka_key_mode == "device"
    _produce_fleet(settings)
    records = _read_all(settings)
    assert len(records) == TENANTS * PROJECTS * DEVICES * PER_DEVICE
    counts = _per_partition(records, settings.kafka_partitions)
    assert min(counts) > 0, f"an empty partition: {counts}"
    partitions_of: dict[bytes, set[int]] = collections.defaultdict(set)
    seqs: dict[bytes, list[int]] = collections.defaultdict(list)
    for partition, key, seq in records:
        partitions_of[key].add(partition)
        seqs[key].append(seq)
    assert len(partitions_of) == TENANTS * PROJECTS * DEVICES
    assert all(len(p) == 1 for p in partitions_of.values()), "a device's messages on two partitions"
    assert all(s == list(range(PER_DEVICE)) for s in seqs.values()), "a device's messages out of order"

    by_tenant = settings.model_copy(update={"kafka_key_mode": "tenant", "kafka_topic": f"{settings.kafka_topic}-tenant"})
    ensure_topics(by_tenant)
    _produce_fleet(by_tenant)
    tenant_counts = _per_partition(_read_all(by_tenant), settings.kafka_partitions)
    assert sum(1 for c in tenant_counts if c) <= TENANTS
    print(f"\nrecords per partition, device keys: {counts} (skew {max(counts) / min(counts):.2f}); "
          f"tenant keys: {tenant_counts} (partitions used {sum(1 for c in tenant_counts if c)} of {len(tenant_counts)})")

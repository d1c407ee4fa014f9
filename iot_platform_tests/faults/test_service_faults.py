"""Faults of our own services: the bridge and the consumer SIGKILLed, a replay, a poison burst.

These tests kill only the bridge and consumer subprocesses they start, so they share the session's
Mosquitto, Kafka and PostgreSQL (each test has its own topics, group, topic namespace and database).
Every test checks the same invariant through `iot-platform verify`'s report: lost = 0, duplicates in
the database = 0, dead letters = exactly the bad messages sent, and the pipeline recovers on its own.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from iot_platform.devices.fleet import BAD_TOPIC, INVALID_ID, OVERSIZE
from iot_platform.settings import Settings
from iot_platform.storage.db import connect
from iot_platform.storage.migrate import apply_migrations
from iot_platform_tests.faults.harness import Publisher, ServiceProcess, assert_invariants, fleet_spec, pipeline, settle_and_verify

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]


def test_bridge_sigkilled_three_times(settings: Settings, tmp_path: Path) -> None:
    """Invariant: 5,000 messages at 1,000 msg/s while the bridge is SIGKILLed three times and restarted:
    nothing the broker acknowledged is lost, iot.messages holds no duplicate (a message the bridge
    produced twice is stored once by its msg_id), the dead letters are exactly the bad messages (a bad
    message produced twice is one dead letter; its copy is in iot.duplicate_dead_letters)."""
    apply_migrations(settings)
    with pipeline(settings, tmp_path / "logs") as (bridge, _consumer):
        publisher = Publisher(settings, fleet_spec(settings, bad_fraction=0.01), count=5_000, rate=1_000)
        publisher.start()
        for _ in range(3):
            time.sleep(1.2)
            assert publisher.is_alive(), "the kill must land while messages flow"
            bridge.kill()
            time.sleep(0.3)
            bridge.start()
        result = publisher.finish()
        report = settle_and_verify(settings, result)
    assert_invariants(report, result)
    assert bridge.starts == 4


def test_consumer_sigkilled_repeatedly(settings: Settings, tmp_path: Path) -> None:
    """Invariant: the consumer SIGKILLed at four random moments while 5,000 messages flow (a kill may land
    between its database commit and its Kafka commit; the next test forces that case): on restart it
    resumes from the offsets stored with the rows, so nothing is lost and nothing is stored twice."""
    apply_migrations(settings)
    rng = random.Random(7)
    with pipeline(settings, tmp_path / "logs") as (_bridge, consumer):
        publisher = Publisher(settings, fleet_spec(settings, bad_fraction=0.01), count=5_000, rate=1_000)
        publisher.start()
        for _ in range(4):
            time.sleep(rng.uniform(0.6, 1.4))
            assert publisher.is_alive(), "the kill must land while messages flow"
            consumer.kill()
            consumer.start()
        result = publisher.finish()
        report = settle_and_verify(settings, result)
    assert_invariants(report, result)
    assert consumer.starts == 5


def test_consumer_dies_between_database_commit_and_kafka_commit(settings: Settings, tmp_path: Path) -> None:
    """Invariant: the consumer dies right after a database commit and before its Kafka commit, three
    times while 3,000 messages flow over 30 s (IOT_FAULT_EXIT_AFTER_COMMITS=1). Each time Kafka's committed
    offsets trail the offsets stored with the rows, and the next consumer resumes from the stored ones:
    nothing lost, nothing stored twice, dead letters exactly the bad messages."""
    apply_migrations(settings)
    with pipeline(settings, tmp_path / "logs") as (_bridge, consumer):
        consumer.stop()
        # Slow enough that every crashing consumer finds records it has not stored yet.
        publisher = Publisher(settings, fleet_spec(settings, bad_fraction=0.01), count=3_000, rate=100)
        publisher.start()
        crashing = ServiceProcess("consumer", settings, tmp_path / "logs", {"IOT_FAULT_EXIT_AFTER_COMMITS": "1"})
        trailing = []
        try:
            for _ in range(3):
                crashing.start()
                assert crashing.process is not None
                assert crashing.process.wait(90) == 137, crashing.log_tail()
                stored = _stored_positions(settings)
                committed = _kafka_committed(settings, stored)
                trailing.append(any(committed[key] < next_offset for key, next_offset in stored.items()))
        finally:
            crashing.kill()
        consumer.start()
        result = publisher.finish()
        report = settle_and_verify(settings, result)
    assert trailing == [True, True, True], "a crash did not land between the two commits"
    assert_invariants(report, result)


def _stored_positions(settings: Settings) -> dict[tuple[str, int], int]:
    conn = connect(settings)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT topic, partition, next_offset FROM iot.ingest_offsets")
            return {(topic, partition): next_offset for topic, partition, next_offset in cur.fetchall()}
    finally:
        conn.close()


def _kafka_committed(settings: Settings, keys: dict[tuple[str, int], int]) -> dict[tuple[str, int], int]:
    """The consumer group's committed offsets (-1001 where none), read without joining the group."""
    reader = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": settings.kafka_consumer_group})
    try:
        partitions = reader.committed([TopicPartition(topic, partition) for topic, partition in keys], timeout=10)
        return {(tp.topic, tp.partition): tp.offset for tp in partitions}
    finally:
        reader.close()


def _rewind_stored_offsets(settings: Settings, total: int) -> int:
    """Move the consumer's stored next offsets back by ``total`` records spread over the partitions."""
    conn = connect(settings)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT partition, next_offset FROM iot.ingest_offsets WHERE topic = %s ORDER BY partition", (settings.kafka_topic,))
            rows = cur.fetchall()
            available = sum(next_offset for _, next_offset in rows)
            rewound = 0
            for partition, next_offset in rows:
                back = min(next_offset, round(total * next_offset / available)) if available else 0
                cur.execute(
                    "UPDATE iot.ingest_offsets SET next_offset = %s WHERE topic = %s AND partition = %s",
                    (next_offset - back, settings.kafka_topic, partition),
                )
                rewound += back
            return rewound
    finally:
        conn.close()


def _stored_rows(settings: Settings) -> int:
    conn = connect(settings)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM iot.messages")
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def test_replay_of_5000_offsets_is_harmless(settings: Settings, tmp_path: Path) -> None:
    """Invariant: after the consumer's stored offsets are moved back 5,000 records and it restarts, it
    consumes them again without storing any twice (unique Kafka coordinates), and catches up by itself."""
    apply_migrations(settings)
    with pipeline(settings, tmp_path / "logs") as (_bridge, consumer):
        publisher = Publisher(settings, fleet_spec(settings, bad_fraction=0.01), count=6_000, rate=None)
        publisher.start()
        result = publisher.finish()
        before = settle_and_verify(settings, result)
        assert_invariants(before, result)
        rows_before = _stored_rows(settings)
        consumer.stop()
        assert _rewind_stored_offsets(settings, 5_000) >= 4_990
        consumer.start()
        report = settle_and_verify(settings, result)
    assert_invariants(report, result)
    assert _stored_rows(settings) == rows_before


def test_poison_burst_is_dead_lettered_while_good_traffic_flows(settings: Settings, tmp_path: Path) -> None:
    """Invariant: a burst of 1,500 poison messages (topics outside the grammar, invalid ids) and 10
    oversize payloads, published as fast as possible beside 3,000 good messages at 1,000 msg/s: every
    poison message is exactly one dead letter, every good message is stored once, nothing is lost."""
    apply_migrations(settings)
    with pipeline(settings, tmp_path / "logs"):
        good = Publisher(settings, fleet_spec(settings, seed=1), count=3_000, rate=1_000)
        poison = Publisher(settings, fleet_spec(settings, bad_fraction=1.0, bad_categories=(BAD_TOPIC, INVALID_ID), seed=2), count=1_500, rate=None)
        oversize = Publisher(settings, fleet_spec(settings, bad_fraction=1.0, bad_categories=(OVERSIZE,), seed=3), count=10, rate=None)
        good.start()
        time.sleep(0.5)
        poison.start()
        oversize.start()
        results = [p.finish() for p in (good, poison, oversize)]
        reports = [settle_and_verify(settings, r) for r in results]
    for report, result in zip(reports, results, strict=True):
        assert_invariants(report, result)
    assert results[1].bad_acked == 1_500 and results[2].bad_acked == 10

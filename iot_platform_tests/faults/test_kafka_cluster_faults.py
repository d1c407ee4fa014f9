"""Faults of a three-broker Kafka (KRaft, every node a broker and a controller): the leader of the
busiest partition SIGKILLed mid-stream and restarted.

Invariant: lost = 0, duplicates in the database = 0, dead letters = exactly the bad messages sent, and
the bridge and the consumer ride through without a restart. Topics have three replicas,
``min.insync.replicas=2`` and no unclean leader election, so every record the bridge saw acknowledged
(``acks=all``) was on two brokers; the cluster elects a new leader among the in-sync replicas, the
idempotent producer resends what was unanswered without duplicating it, the consumer follows the new
leaders (and its group coordinator) and the restarted broker catches up into every ISR.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from iot_platform.devices.verify import kafka_offsets
from iot_platform.settings import Settings
from iot_platform_tests.faults.harness import PrivateStack, run_with_fault
from iot_platform_tests.helpers import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.timeout(420)]
_QUIET = logging.getLogger("iot_platform_tests.kafka_cluster_admin")
_QUIET.setLevel(logging.CRITICAL)


def _leaders(admin: AdminClient, topic: str) -> dict[int, int]:
    """Partition -> leader node id (-1 while it has none)."""
    return {p.id: p.leader for p in admin.list_topics(topic, timeout=10).topics[topic].partitions.values()}


def _new_leader(admin: AdminClient, topic: str, partition: int, old: int) -> int | None:
    """The partition's leader once it is a node other than ``old``; None before that, and while a metadata
    request is lost with the killed node (it then times out instead of answering)."""
    try:
        leader = _leaders(admin, topic)[partition]
    except KafkaException:
        return None
    return leader if leader not in (-1, old) else None


def _complete_isr(admin: AdminClient, topics: list[str], brokers: int) -> bool:
    metadata = admin.list_topics(timeout=10).topics
    return all(len(p.isrs) == brokers for t in topics for p in metadata[t].partitions.values())


def test_leader_of_the_busiest_partition_sigkilled_and_restarted(tmp_path: Path) -> None:
    """Invariant: the broker leading the partition with the most records is SIGKILLed while messages flow;
    another in-sync replica takes over that partition, the broker is started again once it has, rejoins
    every ISR, and nothing is lost or stored twice, with neither service restarted."""
    stack = PrivateStack(tmp_path / "stack", kafka_brokers=3).start()
    try:
        settings: Settings = stack.settings(tmp_path / "home")
        # Quiet: librdkafka logs every refused connection to the killed broker.
        admin = AdminClient({**stack.kafka.client_config(), "socket.timeout.ms": 10_000}, logger=_QUIET)
        seen: dict[str, float | int] = {}

        def fault() -> None:
            offsets = [p for p in kafka_offsets(settings) if p.topic == settings.kafka_topic]
            busiest = max(offsets, key=lambda p: p.high)
            leader = _leaders(admin, settings.kafka_topic)[busiest.partition]
            seen.update(partition=busiest.partition, records=busiest.high, leader=leader,
                        spread=sum(1 for p in offsets if p.high > 0))
            killed_at = time.monotonic()
            stack.kafka.node(leader).kill()
            new_leader = wait_for(
                lambda: _new_leader(admin, settings.kafka_topic, busiest.partition, leader),
                60, f"a new leader of partition {busiest.partition}", interval_s=0.2,
            )
            seen.update(new_leader=new_leader, failover_s=round(time.monotonic() - killed_at, 1))
            stack.kafka.node(leader).start()
            seen["restarted_after_s"] = round(time.monotonic() - killed_at, 1)

        run_with_fault(settings, tmp_path / "logs", fault, count=8_000, rate=600)
        assert seen["new_leader"] != seen["leader"], seen
        wait_for(lambda: _complete_isr(admin, [settings.kafka_topic, settings.kafka_dlq_topic], 3), 60,
                 f"broker {seen['leader']} back in every ISR")
        print(f"\nthree brokers, leader killed: {seen}")
    finally:
        stack.stop()

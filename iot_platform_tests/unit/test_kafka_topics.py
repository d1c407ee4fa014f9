"""The topics' desired shape per cluster size (pure): replicas, min ISR, no unclean leader election."""

from __future__ import annotations

import pytest

from iot_platform.settings import Settings
from iot_platform.stack.kafka_topics import configs_for_replicas, min_insync_replicas, topic_specs


@pytest.mark.parametrize(("brokers", "min_isr"), [(1, "1"), (3, "2")])
def test_topics_get_one_replica_per_broker_and_min_isr(brokers: int, min_isr: str) -> None:
    """Both topics: replication factor = brokers, min.insync.replicas 2 of 3 (1 alone), never an unclean election."""
    specs = topic_specs(Settings(kafka_brokers=brokers))
    assert [(s.name, s.partitions, s.replication_factor) for s in specs] == [
        ("iot-messages", 6, brokers), ("iot-messages-dlq", 1, brokers)]
    for spec in specs:
        assert spec.configs["min.insync.replicas"] == min_isr
        assert spec.configs["unclean.leader.election.enable"] == "false"
        assert spec.configs["retention.ms"] == "259200000"


@pytest.mark.parametrize(("replicas", "held"), [(1, "1"), (2, "2"), (3, "2"), (5, "2")])
def test_min_isr_never_exceeds_the_replicas_a_topic_has(replicas: int, held: str) -> None:
    """A topic left with fewer replicas than brokers keeps a min ISR it can meet, or acks=all would always fail."""
    spec = topic_specs(Settings(kafka_brokers=3))[0]
    configs = configs_for_replicas(spec, replicas)
    assert configs["min.insync.replicas"] == held
    assert {k: v for k, v in configs.items() if k != "min.insync.replicas"} == {
        k: v for k, v in spec.configs.items() if k != "min.insync.replicas"}


def test_min_insync_replicas() -> None:
    assert [min_insync_replicas(n) for n in (1, 3)] == [1, 2]

"""`ensure_topics` on a real broker: drifted configs set back, a replication factor it cannot raise reported."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from iot_platform.settings import Settings
from iot_platform.stack.kafka_topics import ensure_topics
from iot_platform_tests.helpers import wait_for

pytestmark = pytest.mark.integration


def _configs(admin: AdminClient, topic: str) -> dict[str, str]:
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    return {k: v.value for k, v in admin.describe_configs([resource])[resource].result(timeout=10).items()}


def test_drifted_configs_are_set_back_and_a_missing_replica_is_reported(settings: Settings) -> None:
    """Retention and unclean election drifted on the messages topic: both set back, and nothing else
    changes. Told there are 3 brokers while the topic has 1 replica (the session's broker is alone),
    it says so instead of failing, and keeps min.insync.replicas at 1 so acks=all writes still succeed."""
    admin = AdminClient(settings.kafka_config())
    resource = ConfigResource(ConfigResource.Type.TOPIC, settings.kafka_topic, incremental_configs=[
        ConfigEntry("retention.ms", "1000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("unclean.leader.election.enable", "true", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([resource])[resource].result(timeout=10)
    # The broker applies an altered config once it reads it back from the metadata log.
    wait_for(lambda: _configs(admin, settings.kafka_topic)["retention.ms"] == "1000", 10, "the drift applied", 0.1)

    changes = ensure_topics(settings)
    assert sorted(changes) == [f"{settings.kafka_topic}: retention.ms 1000 -> 259200000",
                               f"{settings.kafka_topic}: unclean.leader.election.enable true -> false"]
    wait_for(lambda: _configs(admin, settings.kafka_topic)["retention.ms"] == "259200000", 10, "the fix applied", 0.1)
    assert ensure_topics(settings) == []

    changes = ensure_topics(settings.model_copy(update={"kafka_brokers": 3}))
    assert [c.split(" (")[0] for c in changes] == [f"{topic}: replication factor 1, expected 3"
                                                    for topic in (settings.kafka_topic, settings.kafka_dlq_topic)]
    assert _configs(admin, settings.kafka_topic)["min.insync.replicas"] == "1"
    producer = Producer({**settings.kafka_config(), "acks": "all", "enable.idempotence": True})
    delivered: list[object] = []
    producer.produce(settings.kafka_topic, b"x", key=b"k", on_delivery=lambda err, msg: delivered.append(err))
    producer.flush(10)
    assert delivered == [None]

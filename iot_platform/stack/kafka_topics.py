"""The platform's Kafka topics, created idempotently and corrected when their config drifted.

Safe to run at every start: an existing topic is left alone except for the configs below, which are
set back to the settings' values, and a partition count below the setting, which is raised (Kafka
cannot lower it; a higher count is kept and logged). Topics get one replica per broker
(``IOT_KAFKA_BROKERS``: 1 or 3), ``min.insync.replicas`` 2 of 3 and never an unclean leader
election. A replication factor below that is reported, not changed (Kafka raises it only by a
partition reassignment, which our client library cannot request); ``min.insync.replicas`` then stays
within the replicas the topic has, or no ``acks=all`` write could ever succeed.
Returns once every partition has a leader and its whole replica set in sync.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
)

from iot_platform.settings import Settings

log = logging.getLogger(__name__)
TIMEOUT_S = 30.0
MIN_ISR = "min.insync.replicas"


def min_insync_replicas(brokers: int) -> int:
    """Replicas that must hold a record before ``acks=all`` is answered: 2 of 3 (one broker may be
    down, and nothing acknowledged lives on one disk only); 1 when there is one broker (pure)."""
    return 2 if brokers >= 3 else 1


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str]


def topic_specs(settings: Settings) -> list[TopicSpec]:
    configs = {
        "retention.ms": str(settings.kafka_retention_ms),
        "compression.type": settings.kafka_compression if settings.kafka_compression != "none" else "producer",
        "max.message.bytes": str(settings.kafka_max_message_bytes),
        "cleanup.policy": "delete",
        MIN_ISR: str(min_insync_replicas(settings.kafka_brokers)),
        "unclean.leader.election.enable": "false",
    }
    replicas = settings.kafka_brokers
    return [
        TopicSpec(settings.kafka_topic, settings.kafka_partitions, replicas, configs),
        # Dead letters are rare and unordered: one partition keeps them easy to read in order.
        TopicSpec(settings.kafka_dlq_topic, 1, replicas, configs),
    ]


def configs_for_replicas(spec: TopicSpec, replicas: int) -> dict[str, str]:
    """The configs to hold on a topic that has ``replicas`` replicas: ``min.insync.replicas`` never above them (pure)."""
    wanted = int(spec.configs.get(MIN_ISR, "1"))
    return spec.configs | {MIN_ISR: str(max(1, min(wanted, replicas)))}


def ensure_topics(settings: Settings) -> list[str]:
    """Create missing topics, fix drifted configs and partition counts; returns what was changed."""
    admin = AdminClient({**settings.kafka_config(), "socket.timeout.ms": 10_000})
    existing = admin.list_topics(timeout=TIMEOUT_S).topics
    changes: list[str] = []
    specs = topic_specs(settings)
    missing = [spec for spec in specs if spec.name not in existing]
    if missing:
        futures = admin.create_topics(
            [NewTopic(s.name, num_partitions=s.partitions, replication_factor=s.replication_factor, config=s.configs)
             for s in missing],
            request_timeout=TIMEOUT_S,
        )
        for name, future in futures.items():
            try:
                future.result(timeout=TIMEOUT_S)
                changes.append(f"created {name}")
            except KafkaException as exc:
                if exc.args[0].code() != 36:  # TOPIC_ALREADY_EXISTS: a concurrent creator won
                    raise
    for spec in specs:
        # A topic created just now has the right configs; describing it before its metadata
        # has propagated fails with UNKNOWN_TOPIC_OR_PART.
        if spec.name in existing:
            partitions = existing[spec.name].partitions
            replicas = min(len(p.replicas) for p in partitions.values())
            if replicas < spec.replication_factor:
                log.warning("topic has fewer replicas than brokers", extra={"topic": spec.name, "replicas": replicas})
                changes.append(f"{spec.name}: replication factor {replicas}, expected {spec.replication_factor} "
                               "(not changed: raise it with a partition reassignment, kafka-reassign-partitions)")
            changes += _fix_partitions(admin, spec, len(partitions))
            changes += _fix_configs(admin, spec, configs_for_replicas(spec, replicas))
    _wait_for_leaders(admin, specs)
    for change in changes:
        log.info("kafka topic change", extra={"change": change})
    return changes


def _wait_for_leaders(admin: AdminClient, specs: list[TopicSpec]) -> None:
    """Return once every partition of every topic has a leader and all its replicas in sync: producers
    can use them right away, and a broker may fail without taking the last copy of a record."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        topics = admin.list_topics(timeout=TIMEOUT_S).topics
        ready = all(
            spec.name in topics
            and len(topics[spec.name].partitions) >= spec.partitions
            and all(p.leader >= 0 and set(p.isrs) == set(p.replicas) for p in topics[spec.name].partitions.values())
            for spec in specs
        )
        if ready:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics {[s.name for s in specs]}: partitions without a leader or a complete ISR "
                               f"after {TIMEOUT_S:.0f} s")
        time.sleep(0.1)


def _fix_partitions(admin: AdminClient, spec: TopicSpec, current: int) -> list[str]:
    if current > spec.partitions:
        log.warning("topic has more partitions than configured", extra={"topic": spec.name, "partitions": current})
        return []
    if current == spec.partitions:
        return []
    futures = admin.create_partitions([NewPartitions(spec.name, spec.partitions)], request_timeout=TIMEOUT_S)
    futures[spec.name].result(timeout=TIMEOUT_S)
    return [f"{spec.name}: partitions {current} -> {spec.partitions}"]


def _fix_configs(admin: AdminClient, spec: TopicSpec, configs: dict[str, str]) -> list[str]:
    resource = ConfigResource(ConfigResource.Type.TOPIC, spec.name)
    described = admin.describe_configs([resource], request_timeout=TIMEOUT_S)[resource].result(timeout=TIMEOUT_S)
    drifted = {k: v for k, v in configs.items() if k not in described or described[k].value != v}
    if not drifted:
        return []
    resource = ConfigResource(
        ConfigResource.Type.TOPIC,
        spec.name,
        incremental_configs=[
            ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in drifted.items()
        ],
    )
    admin.incremental_alter_configs([resource], request_timeout=TIMEOUT_S)[resource].result(timeout=TIMEOUT_S)
    return [f"{spec.name}: {k} {described[k].value if k in described else None} -> {v}" for k, v in drifted.items()]

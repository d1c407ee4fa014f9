"""The consumer is down longer than Kafka's retention: records are deleted before it reads them.

No software here can prevent that loss; it must be loud. The topic's retention is 10 s (segments
roll every second and the test broker checks retention every second), so deletion really happens.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from iot_platform.core.records import InboundMessage, RecordRules, build_record
from iot_platform.orchestration.checks import kafka_backlog_within_half_retention, kafka_offsets_all_stored
from iot_platform.orchestration.definitions import defs
from iot_platform.orchestration.resources import platform_resources
from iot_platform.settings import Settings
from iot_platform.stack.kafka import ensure_topics
from iot_platform.stack.ports import free_port
from iot_platform.storage.audit import consumed_offsets
from iot_platform.storage.migrate import apply_migrations
from iot_platform_tests.faults.harness import ServiceProcess
from iot_platform_tests.helpers import mqtt_topic, run_cli, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]
RETENTION_MS = 10_000


def produce(settings: Settings, first_seq: int, count: int) -> None:
    """``count`` good records, built as the bridge builds them, all on partition 0."""
    rules = RecordRules.from_settings(settings)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True})
    for seq in range(first_seq, first_seq + count):
        payload = json.dumps({"msg_id": f"retention-{seq}", "seq": seq}).encode()
        record = build_record(InboundMessage(mqtt_topic(settings, "acme", "p1"), payload, 1, False, int(time.time() * 1000)), rules)
        producer.produce(record.topic, value=record.value, key=record.key, headers=record.headers, partition=0)
    assert producer.flush(30) == 0


def low_watermark(settings: Settings) -> int:
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "retention-probe"})
    try:
        return consumer.get_watermark_offsets(TopicPartition(settings.kafka_topic, 0), timeout=10, cached=False)[0]
    finally:
        consumer.close()


def stored_next(settings: Settings) -> int:
    return consumed_offsets(settings).get((settings.kafka_topic, 0), 0)


def run_checks(settings: Settings) -> dict[str, dg.AssetCheckEvaluation]:
    with dg.DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("iot_checks").execute_in_process(
            instance=instance, resources=platform_resources(settings), raise_on_error=False
        )
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_records_deleted_before_the_consumer_read_them_are_counted_logged_recorded_and_checked(
    settings: Settings, tmp_path: Path
) -> None:
    """20 records are stored; the consumer stops; 30 more wait, and the backlog check warns once the
    oldest is older than half the retention; Kafka deletes them; 10 more arrive and the consumer
    restarts. The 30 lost records (offsets 20-49) are: counted in iot_consumer_records_expired_before_read,
    logged as an ERROR with topic, partition and range, recorded in iot.expired_offsets so that
    kafka_offsets_all_stored fails naming the range, and reported by `iot-platform verify` (exit 1)."""
    settings = settings.model_copy(update={"kafka_retention_ms": RETENTION_MS, "consumer_metrics_port": free_port()})
    ensure_topics(settings)  # sets the short retention on this test's topics
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    resource = ConfigResource(ConfigResource.Type.TOPIC, settings.kafka_topic, incremental_configs=[
        ConfigEntry("segment.ms", "1000", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([resource])[resource].result(timeout=30)
    apply_migrations(settings)
    consumer = ServiceProcess("consumer", settings, tmp_path / "logs")

    produce(settings, 0, 20)
    consumer.start()
    wait_for(lambda: stored_next(settings) == 20, 90, "the first 20 records stored", interval_s=0.5)
    assert consumer.stop() == 0

    produce(settings, 20, 30)
    produced_at = time.monotonic()
    fresh = run_checks(settings)[kafka_backlog_within_half_retention.check_key.name]
    if time.monotonic() - produced_at < RETENTION_MS / 2000:  # the control is meaningful only if it ran in time
        assert fresh.passed, fresh.metadata
    time.sleep(max(0.0, produced_at + RETENTION_MS / 2000 + 1 - time.monotonic()))
    old = run_checks(settings)[kafka_backlog_within_half_retention.check_key.name]
    assert not old.passed and old.severity == dg.AssetCheckSeverity.WARN
    assert old.metadata["partition"].value == f"{settings.kafka_topic}[0]", old.metadata
    assert old.metadata["retention_seconds"].value == RETENTION_MS / 1000
    assert old.metadata["age_seconds"].value > RETENTION_MS / 2000 or old.metadata["already_expired"].value > 0

    wait_for(lambda: low_watermark(settings) >= 50, 90, "Kafka's retention deleting the 30 waiting records", interval_s=0.5)
    produce(settings, 50, 10)
    consumer.start()
    wait_for(lambda: stored_next(settings) == 60, 90, "the consumer moving past the gap", interval_s=0.5)

    def error_lines() -> list[dict]:
        return [line for line in map(json.loads, consumer.log_path.read_text().splitlines()) if line.get("level") == "error"]

    # The consumer logs the gap right after the commit that the database poll above has already seen.
    errors = wait_for(error_lines, 10, "the ERROR line of the expired range", interval_s=0.2)
    assert [(e["topic"], e["partition"], e["first_offset"], e["last_offset"], e["records"]) for e in errors] == [
        (settings.kafka_topic, 0, 20, 49, 30)
    ], errors
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{settings.consumer_metrics_port}/metrics", timeout=10).read().decode()
    assert (f'iot_consumer_records_expired_before_read_total{{partition="0",topic="{settings.kafka_topic}"}} 30.0') in metrics
    assert consumer.stop() == 0

    completeness = run_checks(settings)[kafka_offsets_all_stored.check_key.name]
    assert not completeness.passed and completeness.severity == dg.AssetCheckSeverity.ERROR
    [gap] = completeness.metadata["expired_before_read"].value
    assert (gap["topic"], gap["partition"], gap["first_offset"], gap["last_offset"], gap["records"]) == (settings.kafka_topic, 0, 20, 49, 30)

    verify = run_cli(settings.child_env(), "verify", timeout=120)
    assert verify.returncode == 1, verify.stdout + verify.stderr
    assert f"30 records of {settings.kafka_topic}[0] deleted by Kafka retention before they were read: offsets 20-49" in verify.stdout

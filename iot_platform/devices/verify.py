"""Read what the platform stored and what Kafka holds, and build the verification report.

Read-only: SELECTs on ``iot.messages``, ``iot.dead_letters``, ``iot.ingest_offsets`` and
``iot.expired_offsets`` (records Kafka deleted before the consumer read them), and a
watermark query per Kafka partition (observability/kafka_watermarks.py: a client that never joins
its group nor commits). Every call
has a timeout. ``wait_until_drained`` polls until the consumer has stored every record Kafka holds,
so a verification right after a run does not count messages still in flight as lost.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from datetime import datetime

from iot_platform.core.completeness import PartitionPosition, records_not_stored
from iot_platform.devices.verify_report import Expectation, build_report
from iot_platform.observability.kafka_watermarks import topic_watermarks, watermark_reader
from iot_platform.settings import Settings
from iot_platform.storage.audit import consumed_offsets, expired_offsets
from iot_platform.storage.db import connect

log = logging.getLogger(__name__)
KAFKA_TIMEOUT_S = 10.0

_STORED_SQL = """
SELECT tenant_id, payload_json->>'run_id', payload_json->>'device_id', (payload_json->>'seq')::bigint
FROM iot.messages
WHERE received_at >= %(since)s AND received_at < %(until)s
  AND payload_json->>'run_id' IS NOT NULL AND payload_json->>'device_id' IS NOT NULL
  AND payload_json->>'seq' ~ '^[0-9]{1,18}$'
  AND (%(run_id)s::text IS NULL OR payload_json->>'run_id' = %(run_id)s::text)
"""
_DEAD_LETTERS_SQL = """
SELECT tenant_id, reason, substring(payload from 1 for 512)
FROM iot.dead_letters
WHERE received_at >= %(since)s AND received_at < %(until)s
"""


def _window(since: datetime | None, until: datetime | None, run_id: str | None) -> dict[str, object]:
    return {"since": since or "-infinity", "until": until or "infinity", "run_id": run_id}


def stored_rows(settings: Settings, since: datetime | None, until: datetime | None, run_id: str | None) -> Iterator[tuple[str, str, str, int]]:
    conn = connect(settings)
    try:
        with conn.cursor(name=f"verify_{uuid.uuid4().hex[:8]}") as cur:
            cur.itersize = 50_000
            cur.execute(_STORED_SQL, _window(since, until, run_id))
            yield from cur
    finally:
        conn.close()


def dead_letter_rows(settings: Settings, since: datetime | None, until: datetime | None) -> list[tuple[str | None, str, bytes]]:
    conn = connect(settings)
    try:
        with conn.cursor() as cur:
            cur.execute(_DEAD_LETTERS_SQL, _window(since, until, None))
            return [(tenant, reason, bytes(prefix)) for tenant, reason, prefix in cur.fetchall()]
    finally:
        conn.close()


def kafka_offsets(settings: Settings, timeout_s: float = KAFKA_TIMEOUT_S) -> list[PartitionPosition]:
    """Low/high watermarks of both topics beside the consumer's stored next offsets."""
    topics = [settings.kafka_topic, settings.kafka_dlq_topic]
    stored = consumed_offsets(settings)
    with watermark_reader(settings, "verify", timeout_s) as client:
        watermarks = topic_watermarks(client, topics, timeout_s)
    return [PartitionPosition(topic, partition, low, high, stored.get((topic, partition)))
            for (topic, partition), (low, high) in watermarks.items()]


def wait_until_drained(settings: Settings, timeout_s: float, interval_s: float = 1.0) -> bool:
    """True once the consumer's stored offsets reach Kafka's end offsets; False after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        pending = records_not_stored(kafka_offsets(settings))
        if pending == 0:
            return True
        if time.monotonic() >= deadline:
            log.warning("consumer still behind Kafka", extra={"pending": pending})
            return False
        time.sleep(interval_s)


def verify(
    settings: Settings,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    run_id: str | None = None,
    expectation: Expectation | None = None,
    with_kafka: bool = True,
) -> dict[str, object]:
    """The report of :func:`build_report` for the window (``run_id`` narrows it to one simulator run)."""
    run_id = run_id or (next(iter(expectation.last_seq)).run_id if expectation and expectation.last_seq else None)
    dead = dead_letter_rows(settings, since, until)
    offsets = kafka_offsets(settings) if with_kafka else []
    expired = [e.as_json() for e in expired_offsets(settings, since, until)]
    report = build_report(stored_rows(settings, since, until, run_id), dead, offsets, expectation, run_id, expired)
    report["window"] = {"since": since.isoformat() if since else None, "until": until.isoformat() if until else None, "run_id": run_id}
    return report

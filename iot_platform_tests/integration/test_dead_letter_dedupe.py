"""A bad message the bridge produced twice is one dead letter, and both DLQ offsets stay accounted for."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import pytest

from iot_platform.consumer.records import DeadLetterRow
from iot_platform.consumer.writer import Batch, BatchWriter
from iot_platform.settings import Settings
from iot_platform.storage.audit import kafka_coverage
from iot_platform.storage.db import connect
from iot_platform.storage.migrate import apply_migrations

pytestmark = pytest.mark.integration
NOW_MS = int(time.time() * 1000)


def letter(settings: Settings, offset: int, payload: bytes, message_id: str | None) -> DeadLetterRow:
    return DeadLetterRow(
        reason="invalid_project_id", source="bridge", mqtt_topic="mtic/msg/client/realtime/acme/bad id",
        tenant_id=None, payload=payload, received_at_ms=NOW_MS + offset, kafka_topic=settings.kafka_dlq_topic,
        kafka_partition=0, kafka_offset=offset, message_id=message_id,
    )


def test_copies_of_a_bad_message_are_recorded_once_and_accounted(settings: Settings) -> None:
    """Offsets 0 and 2 carry the same msg_id (the bridge produced the message twice, also across two
    batches at offset 3): one dead letter, two entries in iot.duplicate_dead_letters. Offsets 1 and 4
    have no message id, so both stay dead letters. Completeness finds every DLQ offset, no gap."""
    apply_migrations(settings)
    twice = json.dumps({"msg_id": "run1:dev7:42", "temperature": 20.5}).encode()
    writer = BatchWriter(settings)
    try:
        first = writer.write(Batch([], [letter(settings, 0, twice, "run1:dev7:42"), letter(settings, 1, b"\xff\x00", None),
                                        letter(settings, 2, twice, "run1:dev7:42")], {(settings.kafka_dlq_topic, 0): 3}))
        second = writer.write(Batch([], [letter(settings, 3, twice, "run1:dev7:42"), letter(settings, 4, b"\xff\x00", None)],
                                    {(settings.kafka_dlq_topic, 0): 5}))
    finally:
        writer.close()
    assert (first.dead_letters, first.duplicate_dead_letters) == ({"bridge": 2}, 1)
    assert (second.dead_letters, second.duplicate_dead_letters) == ({"bridge": 1}, 1)
    conn = connect(settings)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT kafka_offset, message_id FROM iot.dead_letters ORDER BY kafka_offset")
            assert cur.fetchall() == [(0, "run1:dev7:42"), (1, None), (4, None)]
            cur.execute("SELECT kafka_offset FROM iot.duplicate_dead_letters ORDER BY kafka_offset")
            assert [o for (o,) in cur.fetchall()] == [2, 3]
    finally:
        conn.close()
    coverage = {c.topic: c for c in kafka_coverage(settings, datetime.now(timezone.utc) - timedelta(hours=1))}
    dlq = coverage[settings.kafka_dlq_topic]
    assert (dlq.first_offset, dlq.next_offset, dlq.found, dlq.gaps) == (0, 5, 5, ())

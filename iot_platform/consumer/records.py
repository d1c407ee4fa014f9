"""Kafka records -> rows for PostgreSQL (pure: no Kafka or database import).

Every record becomes exactly one of: a :class:`MessageRow` for ``iot.messages``, or a
:class:`DeadLetterRow` for ``iot.dead_letters`` -- from the dead-letter topic (source ``bridge``) or
because the consumer found a data error (source ``consumer``: undecodable headers, an impossible
receive time, later a row PostgreSQL rejects). Data errors are values here, never exceptions.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from iot_platform.core.envelope import H_RECEIVED_AT_MS, Envelope, EnvelopeError, decode_dead_letter, decode_envelope
from iot_platform.core.payload import inspect_payload

SOURCE_BRIDGE = "bridge"
SOURCE_CONSUMER = "consumer"
# Python datetimes (and so our day partitions) cover years 1..9999; a bridge clock is far inside.
MIN_RECEIVED_AT_MS = 0
MAX_RECEIVED_AT_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_MS_PER_DAY = 86_400_000


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    """The parts of a consumed Kafka message the consumer uses, as plain values."""

    topic: str
    partition: int
    offset: int
    headers: Sequence[tuple[str, bytes | None]] | None
    value: bytes | None
    timestamp_ms: int | None


@dataclass(frozen=True, slots=True)
class MessageRow:
    tenant_id: str
    project_id: str
    mqtt_topic: str
    payload: bytes
    json_text: str | None
    message_id: str | None
    device_id: str | None
    device_ts: dt.datetime | None
    received_at_ms: int
    kafka_partition: int
    kafka_offset: int

    @property
    def received_day(self) -> dt.date:
        return (_EPOCH + dt.timedelta(days=self.received_at_ms // _MS_PER_DAY)).date()


@dataclass(frozen=True, slots=True)
class DeadLetterRow:
    reason: str
    source: str
    mqtt_topic: str
    tenant_id: str | None
    payload: bytes
    received_at_ms: int
    kafka_topic: str
    kafka_partition: int
    kafka_offset: int
    bridge_id: str | None = None
    original_size: int | None = None
    truncated: bool = False


class EnvelopeCache:
    """decode_envelope with memory: records of one device differ only in their receive time.

    The cache key is every header but ``received_at_ms``; on a hit only that header is parsed, with
    the same rules as decode_envelope (UTF-8, no NUL, an integer), so the result is always what
    decode_envelope would return.
    """

    def __init__(self, max_entries: int = 50_000) -> None:
        self._entries: dict[tuple[tuple[str, bytes | None], ...], Envelope] = {}
        self._max_entries = max_entries

    def decode(self, headers: Sequence[tuple[str, bytes | None]] | None) -> Envelope:
        if not headers:
            return decode_envelope(headers)
        key = tuple(h for h in headers if h[0] != H_RECEIVED_AT_MS)
        cached = self._entries.get(key)
        if cached is None or len(key) != len(headers) - 1:
            envelope = decode_envelope(headers)
            if len(key) == len(headers) - 1:  # exactly one receive-time header: cacheable
                if len(self._entries) >= self._max_entries:
                    self._entries.clear()
                self._entries[key] = envelope
            return envelope
        raw = next(v for k, v in headers if k == H_RECEIVED_AT_MS)
        if raw is not None and raw.isdigit():  # ASCII digits: exactly what decode_envelope accepts
            return Envelope(cached.mqtt_topic, cached.tenant_id, cached.project_id, cached.qos, cached.retain, int(raw), cached.bridge_id)
        return decode_envelope(headers)  # anything unusual: the full decoder, and its error


def classify(
    record: KafkaRecord, *, messages_topic: str, message_id_field: str, envelopes: EnvelopeCache | None = None
) -> MessageRow | DeadLetterRow:
    """The row a record becomes; records of any topic other than ``messages_topic`` are dead letters."""
    payload = record.value if record.value is not None else b""
    if record.topic != messages_topic:
        return _bridge_dead_letter(record, payload)
    try:
        envelope = envelopes.decode(record.headers) if envelopes is not None else decode_envelope(record.headers)
    except EnvelopeError as exc:
        return _consumer_dead_letter(record, payload, f"undecodable headers: {exc}")
    if not MIN_RECEIVED_AT_MS <= envelope.received_at_ms <= MAX_RECEIVED_AT_MS:
        return _consumer_dead_letter(record, payload, f"received_at_ms out of range: {envelope.received_at_ms}")
    facts = inspect_payload(payload, message_id_field)
    return MessageRow(
        tenant_id=envelope.tenant_id,
        project_id=envelope.project_id,
        mqtt_topic=envelope.mqtt_topic,
        payload=payload,
        json_text=facts.json_text,
        message_id=facts.message_id,
        device_id=facts.device_id,
        device_ts=facts.device_ts,
        received_at_ms=envelope.received_at_ms,
        kafka_partition=record.partition,
        kafka_offset=record.offset,
    )


def rejected(row: MessageRow, reason: str, messages_topic: str) -> DeadLetterRow:
    """A message row PostgreSQL refused, as a consumer dead letter keeping its bytes and coordinates."""
    return DeadLetterRow(
        reason=reason,
        source=SOURCE_CONSUMER,
        mqtt_topic=row.mqtt_topic,
        tenant_id=row.tenant_id,
        payload=row.payload,
        received_at_ms=row.received_at_ms,
        kafka_topic=messages_topic,
        kafka_partition=row.kafka_partition,
        kafka_offset=row.kafka_offset,
    )


def _fallback_received_at_ms(header_ms: int, record: KafkaRecord) -> int:
    if MIN_RECEIVED_AT_MS < header_ms <= MAX_RECEIVED_AT_MS:
        return header_ms
    if record.timestamp_ms is not None and MIN_RECEIVED_AT_MS < record.timestamp_ms <= MAX_RECEIVED_AT_MS:
        return record.timestamp_ms
    return MIN_RECEIVED_AT_MS


def _bridge_dead_letter(record: KafkaRecord, payload: bytes) -> DeadLetterRow:
    meta = decode_dead_letter(record.headers)
    return DeadLetterRow(
        reason=meta.reason,
        source=SOURCE_BRIDGE,
        mqtt_topic=meta.mqtt_topic,
        tenant_id=None,
        payload=payload,
        received_at_ms=_fallback_received_at_ms(meta.received_at_ms, record),
        kafka_topic=record.topic,
        kafka_partition=record.partition,
        kafka_offset=record.offset,
        bridge_id=meta.bridge_id or None,
        original_size=meta.original_size if meta.original_size >= 0 else None,
        truncated=meta.truncated,
    )


def _consumer_dead_letter(record: KafkaRecord, payload: bytes, reason: str) -> DeadLetterRow:
    # The tolerant dead-letter decoder salvages whatever headers are readable.
    meta = decode_dead_letter(record.headers)
    return DeadLetterRow(
        reason=reason,
        source=SOURCE_CONSUMER,
        mqtt_topic=meta.mqtt_topic,
        tenant_id=None,
        payload=payload,
        received_at_ms=_fallback_received_at_ms(meta.received_at_ms, record),
        kafka_topic=record.topic,
        kafka_partition=record.partition,
        kafka_offset=record.offset,
        bridge_id=meta.bridge_id or None,
        original_size=len(payload),
    )

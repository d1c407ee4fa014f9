"""Kafka records -> rows for PostgreSQL (pure: no Kafka or database import).

Every record becomes exactly one of: a :class:`MessageRow` for ``iot.messages``, or a
:class:`DeadLetterRow` for ``iot.dead_letters`` -- from the dead-letter topic (source ``bridge``) or
because the consumer found a data error (source ``consumer``: undecodable headers, an impossible
receive time, later a row PostgreSQL rejects). Data errors are values here, never exceptions.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, replace

from iot_platform.core.envelope import H_RECEIVED_AT_MS, Envelope, EnvelopeError, decode_dead_letter, decode_envelope
from iot_platform.core.payload import payload_fields

SOURCE_BRIDGE = "bridge"
SOURCE_CONSUMER = "consumer"
# Python datetimes (and so our day partitions) cover years 1..9999; a bridge clock is far inside.
MIN_RECEIVED_AT_MS = 0
MAX_RECEIVED_AT_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_MS_PER_DAY = 86_400_000


@dataclass(frozen=True, slots=True)
class ConsumedRecord:
    """The parts of a consumed Kafka message the consumer uses, as plain values."""

    topic: str
    partition: int
    offset: int
    headers: Sequence[tuple[str, bytes | None]] | None
    value: bytes | None
    timestamp_ms: int | None


@dataclass(slots=True)  # not frozen: built per message (core/records.py, InboundMessage)
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
    message_id: str | None = None  # bridge dead letters: deduplicates a bad message produced twice


class EnvelopeCache:
    """decode_envelope with memory: records of one device differ only in their receive time.

    The cache key is every header but ``received_at_ms``; on a hit only that header is parsed, with
    the same rules as decode_envelope (UTF-8, no NUL, an integer), so the result is always what
    decode_envelope would return. Headers with no or several receive-time headers are never cached.
    """

    def __init__(self, max_entries: int = 50_000) -> None:
        self._entries: dict[tuple[tuple[str, bytes | None], ...], Envelope] = {}
        self._max_entries = max_entries
        self._at = 0  # where the receive-time header was last time (the bridge's order is fixed)

    def decode(self, headers: Sequence[tuple[str, bytes | None]] | None) -> Envelope:
        envelope, received_at_ms = self.decode_fields(headers)
        if envelope.received_at_ms == received_at_ms:
            return envelope
        e = envelope
        return Envelope(e.mqtt_topic, e.tenant_id, e.project_id, e.qos, e.retain, received_at_ms, e.bridge_id)

    def decode_fields(self, headers: Sequence[tuple[str, bytes | None]] | None) -> tuple[Envelope, int]:
        """(an envelope equal to the record's but for its receive time, the record's receive time).

        Saves building an Envelope per record; raises EnvelopeError exactly as decode_envelope does.
        """
        if not headers:
            envelope = decode_envelope(headers)
            return envelope, envelope.received_at_ms
        at = self._at
        if at >= len(headers) or headers[at][0] != H_RECEIVED_AT_MS:
            at = next((i for i, (name, _) in enumerate(headers) if name == H_RECEIVED_AT_MS), -1)
            if at < 0:
                envelope = decode_envelope(headers)  # raises: the header is missing
                return envelope, envelope.received_at_ms
            self._at = at
        key = (*headers[:at], *headers[at + 1:])
        cached = self._entries.get(key)  # a stored key holds no receive-time header
        raw = headers[at][1]
        if cached is not None and raw is not None and raw.isdigit():  # ASCII digits: what decode_envelope accepts
            return cached, int(raw)
        envelope = decode_envelope(headers)  # a new key, or anything unusual: the full decoder, and its error
        if cached is None and all(name != H_RECEIVED_AT_MS for name, _ in key):  # exactly one receive time: cacheable
            if len(self._entries) >= self._max_entries:
                self._entries.clear()
            self._entries[key] = envelope
        return envelope, envelope.received_at_ms


class Classifier:
    """classify() for a stream of records, from the Kafka message's parts (no ConsumedRecord per record)."""

    def __init__(self, *, messages_topic: str, message_id_field: str, envelopes: EnvelopeCache | None = None) -> None:
        self._messages_topic = messages_topic
        self._message_id_field = message_id_field
        self._envelopes = envelopes if envelopes is not None else EnvelopeCache()

    def __call__(
        self, topic: str, partition: int, offset: int, headers: Sequence[tuple[str, bytes | None]] | None,
        value: bytes | None, timestamp_ms: int | None,
    ) -> MessageRow | DeadLetterRow:
        payload = value if value is not None else b""
        if topic != self._messages_topic:
            record = ConsumedRecord(topic, partition, offset, headers, value, timestamp_ms)
            return _bridge_dead_letter(record, payload, payload_fields(payload, self._message_id_field)[1])
        try:
            envelope, received_at_ms = self._envelopes.decode_fields(headers)
        except EnvelopeError as exc:
            return _consumer_dead_letter(ConsumedRecord(topic, partition, offset, headers, value, timestamp_ms), payload,
                                         f"undecodable headers: {exc}")
        if not MIN_RECEIVED_AT_MS <= received_at_ms <= MAX_RECEIVED_AT_MS:
            return _consumer_dead_letter(ConsumedRecord(topic, partition, offset, headers, value, timestamp_ms), payload,
                                         f"received_at_ms out of range: {received_at_ms}")
        json_text, message_id, device_id, device_ts = payload_fields(payload, self._message_id_field)
        return MessageRow(envelope.tenant_id, envelope.project_id, envelope.mqtt_topic, payload, json_text, message_id,
                          device_id, device_ts, received_at_ms, partition, offset)


def classify(
    record: ConsumedRecord, *, messages_topic: str, message_id_field: str, envelopes: EnvelopeCache | None = None
) -> MessageRow | DeadLetterRow:
    """The row a record becomes; records of any topic other than ``messages_topic`` are dead letters."""
    classifier = Classifier(messages_topic=messages_topic, message_id_field=message_id_field, envelopes=envelopes)
    return classifier(record.topic, record.partition, record.offset, record.headers, record.value, record.timestamp_ms)


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


def _fallback_received_at_ms(header_ms: int, record: ConsumedRecord) -> int:
    if MIN_RECEIVED_AT_MS < header_ms <= MAX_RECEIVED_AT_MS:
        return header_ms
    if record.timestamp_ms is not None and MIN_RECEIVED_AT_MS < record.timestamp_ms <= MAX_RECEIVED_AT_MS:
        return record.timestamp_ms
    return MIN_RECEIVED_AT_MS


def _bridge_dead_letter(record: ConsumedRecord, payload: bytes, message_id: str | None) -> DeadLetterRow:
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
        message_id=message_id,
    )


def _consumer_dead_letter(record: ConsumedRecord, payload: bytes, reason: str) -> DeadLetterRow:
    # The tolerant dead-letter decoder salvages whatever headers are readable.
    salvaged = _bridge_dead_letter(record, payload, message_id=None)
    return replace(salvaged, reason=reason, source=SOURCE_CONSUMER, original_size=len(payload), truncated=False)

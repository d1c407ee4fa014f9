"""Consumer classification (record -> message row | dead letter), COPY text format, positions."""

from __future__ import annotations

import datetime as dt

import pytest

from iot_platform.consumer.copy_format import STAGING_COLUMNS, copy_line, text, timestamp_ms
from iot_platform.consumer.positions import ExpiredRange, Positions
from iot_platform.consumer.records import (
    MAX_RECEIVED_AT_MS,
    DeadLetterRow,
    ConsumedRecord,
    MessageRow,
    classify,
    rejected,
)
from iot_platform.core.envelope import DeadLetterEnvelope, Envelope, encode_dead_letter, encode_envelope

TOPIC, DLQ = "iot-messages", "iot-messages-dlq"
ENVELOPE = Envelope("mtic/msg/client/realtime/acme/p1", "acme", "p1", 1, False, 1_700_000_000_123, "b1")


def record(headers, value: bytes | None = b'{"msg_id": "m1"}', topic: str = TOPIC, timestamp_ms: int | None = 1_600_000_000_000) -> ConsumedRecord:  # type: ignore[no-untyped-def]
    return ConsumedRecord(topic, 3, 42, headers, value, timestamp_ms)


def test_good_record_becomes_message_row() -> None:
    """Envelope fields, payload facts and Kafka coordinates land in the row; bytes untouched."""
    row = classify(record(encode_envelope(ENVELOPE)), messages_topic=TOPIC, message_id_field="msg_id")
    assert row == MessageRow("acme", "p1", ENVELOPE.mqtt_topic, b'{"msg_id": "m1"}', '{"msg_id": "m1"}', "m1", None, None,
                             1_700_000_000_123, 3, 42)
    assert row.received_day == dt.date(2023, 11, 14)


def test_null_value_is_an_empty_payload() -> None:
    """A record without a value is stored as an empty payload, not dropped."""
    row = classify(record(encode_envelope(ENVELOPE), value=None), messages_topic=TOPIC, message_id_field="msg_id")
    assert isinstance(row, MessageRow) and row.payload == b"" and row.json_text is None


@pytest.mark.parametrize(
    ("headers", "reason_part"),
    [
        (None, "format_version"),
        ([(k, v) for k, v in encode_envelope(ENVELOPE) if k != "tenant_id"], "tenant_id"),
        ([(k, b"\xff" if k == "project_id" else v) for k, v in encode_envelope(ENVELOPE)], "not UTF-8"),
        ([(k, b"a\x00" if k == "mqtt_topic" else v) for k, v in encode_envelope(ENVELOPE)], "NUL"),
        ([(k, b"soon" if k == "received_at_ms" else v) for k, v in encode_envelope(ENVELOPE)], "not an integer"),
        ([(k, b"2" if k == "format_version" else v) for k, v in encode_envelope(ENVELOPE)], "format_version"),
        ([(k, str(MAX_RECEIVED_AT_MS + 1).encode() if k == "received_at_ms" else v) for k, v in encode_envelope(ENVELOPE)], "out of range"),
        ([(k, b"-1" if k == "received_at_ms" else v) for k, v in encode_envelope(ENVELOPE)], "out of range"),
    ],
)
def test_bad_headers_become_consumer_dead_letters(headers, reason_part: str) -> None:  # type: ignore[no-untyped-def]
    """Undecodable headers are a data error: a consumer dead letter with the reason and the bytes."""
    row = classify(record(headers), messages_topic=TOPIC, message_id_field="msg_id")
    assert isinstance(row, DeadLetterRow)
    assert (row.source, row.kafka_topic, row.kafka_partition, row.kafka_offset, row.payload) == ("consumer", TOPIC, 3, 42, b'{"msg_id": "m1"}')
    assert reason_part in row.reason
    assert row.received_at_ms > 0


def test_dlq_record_becomes_bridge_dead_letter() -> None:
    """A dead-letter-topic record keeps the bridge's reason, topic, time, size and truncation flag."""
    headers = encode_dead_letter(DeadLetterEnvelope("payload too large", "a/b", 1_700_000_000_000, "b1", 2_000_000, True))
    row = classify(record(headers, value=b"xx", topic=DLQ), messages_topic=TOPIC, message_id_field="msg_id")
    assert row == DeadLetterRow("payload too large", "bridge", "a/b", None, b"xx", 1_700_000_000_000, DLQ, 3, 42, "b1", 2_000_000, True)


def test_dlq_record_without_headers_uses_kafka_timestamp() -> None:
    """A dead letter is kept whatever its headers: missing time falls back to the Kafka timestamp."""
    row = classify(record(None, topic=DLQ), messages_topic=TOPIC, message_id_field="msg_id")
    assert isinstance(row, DeadLetterRow) and (row.reason, row.received_at_ms, row.original_size) == ("unknown", 1_600_000_000_000, None)


def test_rejected_row_keeps_coordinates() -> None:
    """A row PostgreSQL refused becomes a consumer dead letter with its tenant, bytes and coordinates."""
    row = classify(record(encode_envelope(ENVELOPE)), messages_topic=TOPIC, message_id_field="msg_id")
    assert isinstance(row, MessageRow)
    letter = rejected(row, "why", TOPIC)
    assert (letter.source, letter.tenant_id, letter.payload, letter.kafka_partition, letter.kafka_offset, letter.received_at_ms) == (
        "consumer", "acme", row.payload, 3, 42, row.received_at_ms)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, "\\N"), ("plain", "plain"), ("a\tb\nc\rd\\e", "a\\tb\\nc\\rd\\\\e"), ("\\N", "\\\\N"), ("é€", "é€")],
)
def test_copy_text_escaping(value: str | None, expected: str) -> None:
    """COPY text format: backslash, tab, newline, CR escaped; NULL is \\N (a literal \\N stays text)."""
    assert text(value) == expected


@pytest.mark.parametrize(
    ("epoch_ms", "expected"),
    [(0, "1970-01-01 00:00:00.000+00"), (1_700_000_000_123, "2023-11-14 22:13:20.123+00"), (MAX_RECEIVED_AT_MS, "9999-12-31 23:59:59.999+00")],
)
def test_timestamp_ms_is_exact(epoch_ms: int, expected: str) -> None:
    """Receive times are formatted from integer milliseconds, without float rounding."""
    assert timestamp_ms(epoch_ms) == expected


def test_copy_line_fields() -> None:
    """One tab-separated line per row, bytea as escaped hex; the jsonb column is a flag (the server
    parses the payload bytes), false on request and for a payload that is not storable JSON."""
    row = MessageRow("acme", "p1", "t/x", b"\x00\xff", '{"a": "\\n"}', "m1", None, dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), 1000, 2, 7)
    fields = copy_line(row).rstrip("\n").split("\t")
    assert len(fields) == len(STAGING_COLUMNS)
    assert fields[:7] == ["acme", "p1", "t/x", "\\\\x00ff", "t", "m1", "\\N"]
    assert fields[7:] == ["2026-01-01T00:00:00+00:00", "1970-01-01 00:00:01.000+00", "2", "7"]
    assert copy_line(row, with_json=False).split("\t")[4] == "f"
    assert copy_line(MessageRow("a", "p", "t", b"x", None, None, None, None, 0, 0, 0)).split("\t")[4] == "f"


def test_positions_drop_stale_and_record_forward_gaps_as_expired_ranges() -> None:
    """After assignment from a stored offset, older records are dropped, each offset is accepted once,
    a jump forward is accepted and kept as an expired range (nothing stored: the partition starts at
    0), and unassigned partitions are ignored."""
    positions = Positions()
    positions.assign(("t", 0), 10)
    positions.assign(("t", 1), None)
    assert [positions.accept(("t", 0), o) for o in (9, 10, 10, 11, 15)] == [False, True, False, True, True]
    assert positions.gaps == 3 and positions.next_offset(("t", 0)) == 16
    assert positions.accept(("t", 1), 500) and positions.next_offset(("t", 1)) == 501
    assert positions.take_expired() == [ExpiredRange("t", 0, 12, 14), ExpiredRange("t", 1, 0, 499)]
    assert positions.take_expired() == [] and positions.gaps == 503
    assert ExpiredRange("t", 1, 0, 499).records == 500
    assert positions.accept(("t", 1), 501) and positions.take_expired() == []
    positions.revoke(("t", 0))
    assert not positions.accept(("t", 0), 16) and positions.assigned() == [("t", 1)]


def test_a_revoked_partition_forgets_its_undelivered_gaps() -> None:
    """Its next owner starts from the database and detects the same gap again."""
    positions = Positions()
    positions.assign(("t", 0), 0)
    positions.assign(("t", 1), 0)
    positions.accept(("t", 0), 5)
    positions.accept(("t", 1), 7)
    positions.revoke(("t", 0))
    assert positions.take_expired() == [ExpiredRange("t", 1, 0, 6)]


@pytest.mark.parametrize("received", [b"1700000000999", b"0", b"-5", b" 12", b"1_000", b"x", b"\xff", b"1\x00", None])
def test_envelope_cache_agrees_with_decode_envelope(received: bytes | None) -> None:
    """The cached decoder returns exactly what decode_envelope returns, or raises the same error,
    whatever the receive-time header holds (the cache is warmed by a good record first)."""
    from iot_platform.core.envelope import EnvelopeError, decode_envelope
    from iot_platform.consumer.records import EnvelopeCache

    cache = EnvelopeCache()
    cache.decode(encode_envelope(ENVELOPE))
    headers = [(k, received if k == "received_at_ms" else v) for k, v in encode_envelope(ENVELOPE)]
    try:
        expected: object = decode_envelope(headers)
    except EnvelopeError as exc:
        expected = str(exc)
    try:
        got: object = cache.decode(headers)
    except EnvelopeError as exc:
        got = str(exc)
    assert got == expected


def test_envelope_cache_duplicate_headers_are_not_cached_wrongly() -> None:
    """Two receive-time headers (the last wins in decode_envelope) bypass the cache."""
    from iot_platform.core.envelope import decode_envelope
    from iot_platform.consumer.records import EnvelopeCache

    cache = EnvelopeCache()
    headers = encode_envelope(ENVELOPE) + [("received_at_ms", b"5")]
    assert cache.decode(headers) == decode_envelope(headers) == cache.decode(headers)
    assert cache.decode(headers).received_at_ms == 5

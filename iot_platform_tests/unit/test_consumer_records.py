"""Consumer classification (record -> message row | dead letter), binary COPY format, positions."""

from __future__ import annotations

import datetime as dt
import struct

import pytest

from iot_platform.consumer.claims import Claims, claims_of, text_array
from iot_platform.consumer.copy_format import MESSAGE_COLUMNS, copy_data, copy_row, timestamp_ms
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


@pytest.mark.parametrize("version", ["1", "2"])
def test_good_record_becomes_message_row(version: str) -> None:
    """Envelope fields, payload facts and Kafka coordinates land in the row; bytes untouched; the
    consumer reads both envelope formats."""
    row = classify(record(encode_envelope(ENVELOPE, version)), messages_topic=TOPIC, message_id_field="msg_id")
    assert row == MessageRow("acme", "p1", ENVELOPE.mqtt_topic, b'{"msg_id": "m1"}', '{"msg_id": "m1"}', "m1", None, None,
                             1_700_000_000_123, 3, 42)
    assert row.received_day == dt.date(2023, 11, 14)


def test_null_value_is_an_empty_payload() -> None:
    """A record without a value is stored as an empty payload, not dropped."""
    row = classify(record(encode_envelope(ENVELOPE), value=None), messages_topic=TOPIC, message_id_field="msg_id")
    assert isinstance(row, MessageRow) and row.payload == b"" and row.json_text is None


def _v1(**changes: bytes | None) -> list[tuple[str, bytes | None]]:
    """Format-1 headers of ENVELOPE, with some values replaced (None: the header is left out)."""
    return [(k, changes.get(k, v)) for k, v in encode_envelope(ENVELOPE, "1") if changes.get(k, v) is not None or k not in changes]


def _v2(**changes: bytes | None) -> list[tuple[str, bytes | None]]:
    """Format-2 headers of ENVELOPE, with some values replaced (None: the header is left out)."""
    return [(k, changes.get(k, v)) for k, v in encode_envelope(ENVELOPE, "2") if changes.get(k, v) is not None or k not in changes]


@pytest.mark.parametrize(
    ("headers", "reason_part"),
    [
        (None, "format_version"),
        (_v1(tenant_id=None), "tenant_id"),
        (_v1(project_id=b"\xff"), "not UTF-8"),
        (_v1(mqtt_topic=b"a\x00"), "NUL"),
        (_v1(received_at_ms=b"soon"), "not an integer"),
        (_v1(format_version=b"3"), "unsupported format_version '3'"),
        (_v1(received_at_ms=str(MAX_RECEIVED_AT_MS + 1).encode()), "out of range"),
        (_v1(received_at_ms=b"-1"), "out of range"),
        (_v2(envelope=None), "'envelope' is missing"),
        (_v2(envelope=b"a\x00acme\x00p1\x00\xff\x000\x00b1"), "not UTF-8"),
        (_v2(envelope=b"a\x00acme\x00p1\x001\x000"), "5 fields, not 6"),
        (_v2(envelope=b"a\x00acme\x00p1\x001\x000\x00b1\x00x"), "7 fields, not 6"),
        (_v2(envelope=b"a\x00acme\x00p1\x00one\x000\x00b1"), "QoS is not an integer"),
        (_v2(received_at_ms=None), "received_at_ms' is missing"),
        (_v2(received_at_ms=b"soon"), "not an integer"),
        (_v2(received_at_ms=b"-1"), "out of range"),
        (_v2(format_version=b"1"), "mqtt_topic' is missing"),  # format 1 has no envelope header
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


def parse_copy(data: bytes) -> list[list[bytes | None]]:
    """PostgreSQL's binary COPY format, read field by field (written from its documentation)."""
    assert data[:11] == b"PGCOPY\n\xff\r\n\x00"
    flags, extension = struct.unpack_from(">ii", data, 11)
    assert flags == 0
    position, tuples = 19 + extension, []
    while True:
        (count,) = struct.unpack_from(">h", data, position)
        position += 2
        if count == -1:
            assert position == len(data), "nothing after the trailer"
            return tuples
        fields: list[bytes | None] = []
        for _ in range(count):
            (length,) = struct.unpack_from(">i", data, position)
            position += 4
            fields.append(None if length == -1 else data[position:position + length])
            position += max(length, 0)
        tuples.append(fields)


def micros_since_2000(instant: dt.datetime) -> int:
    delta = instant - dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def signed(field: bytes | None) -> int:
    assert field is not None
    return int.from_bytes(field, "big", signed=True)


def test_copy_tuple_fields() -> None:
    """One tuple per row, a field per column of iot.messages: text as UTF-8 without escapes, the
    payload's bytes as they are, jsonb as version 1 and the payload's own bytes (NULL on request and
    for a payload that is not storable JSON), NULL as length -1, timestamps as microseconds since
    2000 UTC, then the Kafka coordinates."""
    device_ts = dt.datetime(2026, 1, 1, 2, 3, 4, 567_891, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    payload = '{"a": "\\n€\\u0041"}'.encode()
    row = MessageRow("acmé", "p\t1", "t/x\n€", payload, payload.decode(), "m1", None, device_ts, 1000, 2, 7)
    (fields,) = parse_copy(copy_data([row]))
    assert len(fields) == len(MESSAGE_COLUMNS)
    assert fields[:7] == ["acmé".encode(), b"p\t1", "t/x\n€".encode(), payload, b"\x01" + payload, b"m1", None]
    assert signed(fields[7]) == micros_since_2000(device_ts) and len(fields[7]) == 8
    assert signed(fields[8]) == micros_since_2000(dt.datetime(1970, 1, 1, 0, 0, 1, tzinfo=dt.timezone.utc))
    assert (signed(fields[9]), len(fields[9])) == (2, 4) and (signed(fields[10]), len(fields[10])) == (7, 8)
    assert parse_copy(copy_data([row], with_json=False))[0][4] is None
    bare = MessageRow("a", "p", "t", b"\x00\xff\\N", None, None, "d1", None, 0, 0, 0)
    assert parse_copy(copy_data([bare]))[0][3:8] == [b"\x00\xff\\N", None, None, b"d1", None]


def test_claims_hold_the_rows_with_a_message_id_in_order() -> None:
    """One element per row with a message id, in order: tenant, id, receive time in epoch
    milliseconds, Kafka coordinates; no claims, empty arrays."""
    rows = [MessageRow("acmé", "p", "t", b"x", None, message_id, None, None, 1000 + offset, 2, offset)
            for offset, message_id in enumerate(["m€0", None, "m2"])]
    assert claims_of(rows) == Claims('{"acmé","acmé"}', '{"m€0","m2"}', "{1000,1002}", "{2,2}", "{0,2}")
    assert claims_of([]) == Claims("{}", "{}", "{}", "{}", "{}")
    assert claims_of([rows[1]]) == claims_of([])


@pytest.mark.parametrize(("values", "literal"), [
    (["a,b", "{c}", " d ", "NULL", ""], '{"a,b","{c}"," d ","NULL",""}'),
    (['say "hi"', "back\\slash", "plain"], '{"say \\"hi\\"","back\\\\slash","plain"}'),
])
def test_text_array_quotes_every_element_and_escapes_only_quote_and_backslash(values: list[str], literal: str) -> None:
    """Quoted elements keep separators, braces, spaces and the word NULL as text; only a double quote
    and a backslash are escaped (the whole batch, once one element needs it)."""
    assert text_array(values) == literal


@pytest.mark.parametrize("epoch_ms", [0, 1_700_000_000_123, MAX_RECEIVED_AT_MS])
def test_receive_times_are_exact(epoch_ms: int) -> None:
    """Receive times come from integer milliseconds, without float rounding, over the whole range."""
    row = MessageRow("a", "p", "t", b"x", None, None, None, None, epoch_ms, 0, 0)
    instant = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(milliseconds=epoch_ms)
    assert signed(parse_copy(copy_data([row]))[0][8]) == micros_since_2000(instant)


def test_copy_data_of_several_rows_and_of_none() -> None:
    """Tuples follow the header in order; no rows is a header and a trailer."""
    rows = [MessageRow("a", "p", f"t{i}", bytes([i]), None, None, None, None, 0, 0, i) for i in range(3)]
    assert [signed(fields[10]) for fields in parse_copy(copy_data(rows))] == [0, 1, 2]
    assert copy_data(rows) == copy_data(rows[:1]).removesuffix(b"\xff\xff") + copy_row(rows[1]) + copy_row(rows[2]) + b"\xff\xff"
    assert parse_copy(copy_data([])) == []


@pytest.mark.parametrize(
    ("epoch_ms", "expected"),
    [(0, "1970-01-01 00:00:00.000+00"), (1_700_000_000_123, "2023-11-14 22:13:20.123+00"), (MAX_RECEIVED_AT_MS, "9999-12-31 23:59:59.999+00")],
)
def test_timestamp_ms_is_exact(epoch_ms: int, expected: str) -> None:
    """Receive times of dead letters (bound parameters) are formatted from integer milliseconds."""
    assert timestamp_ms(epoch_ms) == expected


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


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize("received", [b"1700000000999", b"0", b"-5", b" 12", b"1_000", b"x", b"\xff", b"1\x00", None])
def test_envelope_cache_agrees_with_decode_envelope(received: bytes | None, version: str) -> None:
    """The cached decoder returns exactly what decode_envelope returns, or raises the same error,
    whatever the receive-time header holds (the cache is warmed by a good record first)."""
    from iot_platform.core.envelope import EnvelopeError, decode_envelope
    from iot_platform.consumer.records import EnvelopeCache

    cache = EnvelopeCache()
    cache.decode(encode_envelope(ENVELOPE, version))
    headers = [(k, received if k == "received_at_ms" else v) for k, v in encode_envelope(ENVELOPE, version)]
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

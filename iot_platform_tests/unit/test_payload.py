"""Pure payload inspection: what may go into jsonb, the dedupe id, the device id and timestamp."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iot_platform.core.payload import NO_FACTS, decode_json, device_timestamp, identifier, inspect_payload

UTC = dt.timezone.utc


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\xfe\x00binary",
        b"plain text, not json",
        b"",
        b"{\"a\": 1",  # truncated
        b"{\"a\": NaN}",
        b"[Infinity]",
        b"\xef\xbb\xbf{\"a\": 1}",  # BOM
        b"[" * 100_000,  # deeper than any parser should follow
        "{\"a\": \"caf\u00e9\"}".encode("latin-1"),  # not UTF-8
    ],
)
def test_not_json_gives_no_facts(payload: bytes) -> None:
    """A payload that is not UTF-8 JSON jsonb accepts yields no json text and no ids: never an error."""
    assert inspect_payload(payload, "msg_id") == NO_FACTS


@pytest.mark.parametrize(
    "payload",
    [
        b'{"msg_id": "m1", "v": "a\\u0000b"}',
        b'{"msg_id": "m1", "a\\u0000": 1}',
        b'{"msg_id": "m1", "v": ["\\ud800"]}',
        b'{"msg_id": "m1", "v": {"w": "\\udfff x"}}',
    ],
)
def test_json_jsonb_cannot_hold_keeps_its_message_id(payload: bytes) -> None:
    """NUL escapes and lone surrogates make json_text None, but the message id still deduplicates."""
    facts = inspect_payload(payload, "msg_id")
    assert facts.json_text is None
    assert facts.message_id == "m1"


@pytest.mark.parametrize(
    "payload",
    [b'{"v": "\\\\u0000 is an escaped backslash"}', b'{"v": "\\u00e9\\u20ac"}', b'{"v": "\\ud83d\\ude00"}', b"42", b"null", b'"s"'],
)
def test_storable_json_text_is_the_original_text(payload: bytes) -> None:
    """Storable JSON is handed to jsonb as its original text (PostgreSQL parses it once more)."""
    assert inspect_payload(payload, "msg_id").json_text == payload.decode()


@pytest.mark.parametrize(
    ("document", "field", "expected"),
    [
        ({"msg_id": "abc"}, "msg_id", "abc"),
        ({"msg_id": 12345678901234567890}, "msg_id", "12345678901234567890"),
        ({"msg_id": ""}, "msg_id", None),
        ({"msg_id": True}, "msg_id", None),
        ({"msg_id": 1.5}, "msg_id", None),
        ({"msg_id": None}, "msg_id", None),
        ({"msg_id": ["a"]}, "msg_id", None),
        ({"msg_id": "x" * 257}, "msg_id", None),
        ({"msg_id": "x" * 256}, "msg_id", "x" * 256),
        ({"id": "abc"}, "msg_id", None),
        ({"meta": {"id": "n1"}}, "meta.id", "n1"),
        ({"meta.id": "literal"}, "meta.id", "literal"),
        ({"meta": "flat"}, "meta.id", None),
        ({"uuid": "u-1"}, "uuid", "u-1"),
    ],
)
def test_message_id_extraction(document: dict, field: str, expected: str | None) -> None:
    """The id is a non-empty string (<= 256 chars) or an integer at the configured (dotted) field."""
    assert inspect_payload(json.dumps(document).encode(), field).message_id == expected


def test_top_level_array_has_no_ids() -> None:
    """Ids come only from a top-level object."""
    facts = inspect_payload(b'[{"msg_id": "a"}]', "msg_id")
    assert (facts.json_text, facts.message_id, facts.device_id) == ('[{"msg_id": "a"}]', None, None)


@pytest.mark.parametrize(
    ("document", "expected"),
    [({"device_id": "d-1"}, "d-1"), ({"deviceId": 7}, "7"), ({"device": "x"}, "x"), ({"device_id": {"a": 1}}, None), ({}, None)],
)
def test_device_id(document: dict, expected: str | None) -> None:
    """device_id, deviceId or device, when a usable identifier."""
    assert inspect_payload(json.dumps(document).encode(), "msg_id").device_id == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1_700_000_000, dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
        (1_700_000_000.5, dt.datetime(2023, 11, 14, 22, 13, 20, 500000, tzinfo=UTC)),
        (1_700_000_000_123, dt.datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)),
        ("2026-11-01T10:00:00Z", dt.datetime(2026, 11, 1, 10, tzinfo=UTC)),
        ("2026-11-01T12:00:00+02:00", dt.datetime(2026, 11, 1, 10, tzinfo=UTC)),
        ("2026-11-01 10:00:00.250", dt.datetime(2026, 11, 1, 10, 0, 0, 250000, tzinfo=UTC)),
        ("yesterday", None),
        ("", None),
        (-5, None),
        (True, None),
        (float("inf"), None),
        (10**30, None),
        (None, None),
    ],
)
def test_device_timestamp(value: object, expected: dt.datetime | None) -> None:
    """Epoch seconds, epoch milliseconds (>= 1e11) and ISO 8601 become aware UTC datetimes; the rest None."""
    assert device_timestamp(value) == expected


def test_device_ts_field_precedence() -> None:
    """device_ts wins over ts, timestamp and time."""
    facts = inspect_payload(b'{"ts": 0, "device_ts": "2026-01-01T00:00:00Z"}', "msg_id")
    assert facts.device_ts == dt.datetime(2026, 1, 1, tzinfo=UTC)


@given(st.binary(max_size=200))
def test_any_bytes_never_raise(payload: bytes) -> None:
    """Inspection is total: arbitrary bytes give facts, never an exception; json text is valid UTF-8 without NUL."""
    facts = inspect_payload(payload, "msg_id")
    if facts.json_text is not None:
        assert "\x00" not in facts.json_text and facts.json_text.encode("utf-8") == payload


def _jsonb_unsafe(value: object) -> bool:
    """Oracle: some string (key or value) holds NUL or a surrogate that UTF-8 cannot encode."""
    if isinstance(value, str):
        return "\x00" in value or any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, dict):
        return any(_jsonb_unsafe(k) or _jsonb_unsafe(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_jsonb_unsafe(v) for v in value)
    return False


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(), lambda c: st.lists(c) | st.dictionaries(st.text(), c), max_leaves=20))
def test_json_documents_round_trip(document: object) -> None:
    """Any JSON document is recognised; its text is kept unless a string holds NUL or a lone surrogate."""
    payload = json.dumps(document).encode()
    decoded = decode_json(payload)
    assert decoded is not None and decoded[0] == document
    assert (decoded[1] is None) == _jsonb_unsafe(document)


@pytest.mark.parametrize(("value", "expected"), [("ok", "ok"), ("a\x00b", None), (0, "0"), (-3, "-3"), (False, None)])
def test_identifier(value: object, expected: str | None) -> None:
    """Identifiers that PostgreSQL text can hold, or None."""
    assert identifier(value) == expected


@pytest.mark.parametrize(
    "text",
    ['{"a": 1}', ' {"a": 1}', '{"a": 1}\n', "\t[1, 2] ", '{"a": 1} x', '{"a": 1}{}', "1 2", "", "  ", "[1, NaN]", '"s"', "-0.5e3"],
)
def test_decoder_fast_path_agrees_with_json_loads(text: str) -> None:
    """Whitespace around a document, extra data after it, or none at all: decode_json accepts exactly
    what json.loads (NaN/Infinity refused) accepts, and returns the same value."""
    def reject(name: str) -> object:
        raise ValueError(name)

    try:
        expected: object = json.loads(text, parse_constant=reject)
    except ValueError:
        expected = None
    decoded = decode_json(text.encode())
    assert (None if decoded is None else decoded[0]) == expected

"""Record building: good messages keep their bytes and get the envelope; bad ones become dead letters."""

from __future__ import annotations

import dataclasses
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iot_platform.core.envelope import Envelope, EnvelopeError, decode_dead_letter, decode_envelope, encode_envelope
from iot_platform.core.records import (
    PAYLOAD_TOO_LARGE,
    RECORD_OVERHEAD_BYTES,
    InboundMessage,
    RecordRules,
    build_record,
    dead_letter_record,
    headers_size,
)
from iot_platform.core.topic_grammar import INVALID_PROJECT_ID, INVALID_TENANT_ID, TOPIC_MISMATCH, TopicGrammar
from iot_platform.settings import DEFAULT_ID_PATTERN, DEFAULT_TOPIC_GRAMMAR, Settings

RULES = RecordRules(
    grammar=TopicGrammar(DEFAULT_TOPIC_GRAMMAR, DEFAULT_ID_PATTERN),
    messages_topic="msgs",
    dead_letter_topic="dlq",
    key_mode="tenant",
    max_payload_bytes=1_000,
    max_message_bytes=4_096,
    bridge_id="bridge-1",
)


def message(topic: str = "mtic/msg/client/realtime/acme/p1/dev", payload: bytes = b'{"t": 1}') -> InboundMessage:
    return InboundMessage(topic=topic, payload=payload, qos=1, retain=True, received_at_ms=1_700_000_000_123)


def test_good_message_keeps_bytes_and_carries_the_envelope() -> None:
    """Value = payload unchanged, key = tenant, headers decode back to the message's metadata."""
    payload = bytes(range(256))  # not UTF-8: bytes must pass untouched
    record = build_record(message(payload=payload), RULES)
    assert record.topic == "msgs"
    assert record.key == b"acme"
    assert record.value is payload
    assert record.dead_letter_reason is None
    envelope = decode_envelope(record.headers)
    assert (envelope.mqtt_topic, envelope.tenant_id, envelope.project_id) == (
        "mtic/msg/client/realtime/acme/p1/dev",
        "acme",
        "p1",
    )
    assert (envelope.qos, envelope.retain, envelope.received_at_ms, envelope.bridge_id) == (
        1,
        True,
        1_700_000_000_123,
        "bridge-1",
    )


@pytest.mark.parametrize(("mode", "key"), [("device", b"acme/p1/dev"), ("tenant", b"acme"), ("tenant_project", b"acme/p1")])
def test_key_follows_key_mode(mode: str, key: bytes) -> None:
    """The record key is the topic after the grammar's prefix (device), the tenant id, or tenant/project."""
    rules = dataclasses.replace(RULES, key_mode=mode)
    assert build_record(message(), rules).key == key


def test_device_keys_are_the_default() -> None:
    assert RecordRules.from_settings(Settings(bridge_id="x")).key_mode == "device"


@pytest.mark.parametrize(
    ("grammar", "topic", "key"),
    [
        (DEFAULT_TOPIC_GRAMMAR, "mtic/msg/client/realtime/acme/p1/sensor-7/telemetry", "acme/p1/sensor-7/telemetry"),
        (DEFAULT_TOPIC_GRAMMAR, "mtic/msg/client/realtime/acme/p1", "acme/p1"),
        ("tab12/mtic/msg/client/realtime/{tenant_id}/{project_id}[/...]", "tab12/mtic/msg/client/realtime/a/p/d", "a/p/d"),
        ("{tenant_id}/{project_id}[/...]", "acme/p1/d", "acme/p1/d"),
        ("site/{region}/{tenant_id}/{project_id}[/...]", "site/eu/acme/p1/d", "eu/acme/p1/d"),
        ("d/{project_id}/x/{tenant_id}", "d/p1/x/acme", "p1/x/acme"),
    ],
)
def test_device_key_is_the_topic_after_the_grammars_literal_prefix(grammar: str, topic: str, key: str) -> None:
    """Whatever the grammar: the levels from its first placeholder on, byte for byte (levels and ids kept)."""
    rules = dataclasses.replace(RULES, grammar=TopicGrammar(grammar, DEFAULT_ID_PATTERN), key_mode="device")
    assert build_record(message(topic), rules).key == key.encode()


def test_device_keys_keep_a_device_on_one_key_and_tell_devices_apart() -> None:
    """Every message of a device (and both copies of a message the bridge produced twice) has one key,
    hence one partition and Kafka's order; two devices of one tenant and project have two keys."""
    rules = dataclasses.replace(RULES, key_mode="device")
    topic = "mtic/msg/client/realtime/acme/p1/d1/telemetry"
    first = build_record(InboundMessage(topic, b'{"msg_id": "1"}', 1, False, 1), rules)
    copy = build_record(InboundMessage(topic, b'{"msg_id": "1"}', 1, False, 2), rules)
    later = build_record(InboundMessage(topic, b'{"msg_id": "2"}', 1, True, 3), rules)
    other = build_record(InboundMessage(topic.replace("/d1/", "/d2/"), b'{"msg_id": "1"}', 1, False, 1), rules)
    assert first.key == copy.key == later.key != other.key


def test_dead_letters_have_no_key_in_any_mode() -> None:
    for mode in ("device", "tenant", "tenant_project"):
        rules = dataclasses.replace(RULES, key_mode=mode)
        assert build_record(message("elsewhere/acme/p1"), rules).key is None


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("mtic/msg/client/realtime/acme", b"x", TOPIC_MISMATCH),
        ("elsewhere/acme/p1", b"x", TOPIC_MISMATCH),
        ("mtic/msg/client/realtime/ac me/p1", b"x", INVALID_TENANT_ID),
        ("mtic/msg/client/realtime/acme/p%1", b"x", INVALID_PROJECT_ID),
        ("mtic/msg/client/realtime/acme/p1", b"x" * 1_001, PAYLOAD_TOO_LARGE),
    ],
)
def test_bad_input_becomes_a_dead_letter_with_reason_and_original_bytes(topic: str, payload: bytes, reason: str) -> None:
    """Bad topics, ids and sizes go to the DLQ topic, untruncated when they fit, with their reason."""
    record = build_record(message(topic, payload), RULES)
    assert record.topic == "dlq"
    assert record.key is None
    assert record.value == payload
    assert record.dead_letter_reason == reason
    dead = decode_dead_letter(record.headers)
    assert (dead.reason, dead.mqtt_topic, dead.original_size, dead.truncated) == (reason, topic, len(payload), False)
    assert dead.bridge_id == "bridge-1"
    assert dead.received_at_ms == 1_700_000_000_123


def test_payload_exactly_at_limit_is_good() -> None:
    """The limit is inclusive: max_payload_bytes itself is accepted."""
    assert build_record(message(payload=b"x" * 1_000), RULES).dead_letter_reason is None


def test_dead_letter_too_big_for_kafka_is_truncated_with_marker() -> None:
    """Only a dead letter that cannot fit is cut: a prefix of the bytes, truncated=1, original size."""
    payload = bytes(range(256)) * 40  # 10,240 bytes > 4,096
    record = build_record(message(payload=payload), RULES)
    dead = decode_dead_letter(record.headers)
    assert dead.truncated is True
    assert dead.original_size == len(payload)
    assert payload.startswith(record.value)
    assert 0 < len(record.value) < len(payload)
    assert len(record.value) + headers_size(record.headers) + RECORD_OVERHEAD_BYTES <= RULES.max_message_bytes


def test_dead_letter_that_just_fits_is_not_truncated() -> None:
    """The largest dead letter that fits keeps all its bytes; one byte more is cut."""
    # The probe's original_size has as many digits as the sizes tried below (4).
    probe = dead_letter_record(message(payload=b"y" * 1_000), PAYLOAD_TOO_LARGE, RULES)
    budget = RULES.max_message_bytes - RECORD_OVERHEAD_BYTES - headers_size(probe.headers)
    fits = dead_letter_record(message(payload=b"y" * budget), PAYLOAD_TOO_LARGE, RULES)
    assert fits.value == b"y" * budget and decode_dead_letter(fits.headers).truncated is False
    cut = dead_letter_record(message(payload=b"y" * (budget + 1)), PAYLOAD_TOO_LARGE, RULES)
    assert len(cut.value) == budget and decode_dead_letter(cut.headers).truncated is True


def test_invalid_utf8_topic_still_dead_letters() -> None:
    """A topic decoded with replacement characters still produces a valid dead-letter record."""
    record = dead_letter_record(message(topic="bad\ufffd/\udcff"), "invalid_topic_encoding", RULES)
    assert decode_dead_letter(record.headers).reason == "invalid_topic_encoding"


def test_rules_from_settings() -> None:
    """RecordRules takes every rule from the one settings object."""
    settings = Settings(kafka_topic="a", kafka_dlq_topic="b", kafka_key_mode="tenant_project", bridge_id="x")
    rules = RecordRules.from_settings(settings)
    assert (rules.messages_topic, rules.dead_letter_topic, rules.key_mode, rules.bridge_id) == (
        "a",
        "b",
        "tenant_project",
        "x",
    )
    assert rules.max_payload_bytes < rules.max_message_bytes


_IDS = st.text(string.ascii_letters + string.digits + "_-", min_size=1, max_size=64)
_LEVELS = st.lists(st.text(st.characters(exclude_characters="/+#\x00", exclude_categories=("Cs",)), max_size=8), max_size=4)


@given(tenant=_IDS, project=_IDS, rest=_LEVELS)
def test_property_device_key_and_prefix_make_the_topic(tenant: str, project: str, rest: list[str]) -> None:
    """For any good topic the device key is exactly its bytes after the prefix, starting with tenant/project."""
    topic = "/".join(["mtic/msg/client/realtime", tenant, project, *rest])
    key = build_record(message(topic), dataclasses.replace(RULES, key_mode="device")).key
    assert key is not None
    assert b"mtic/msg/client/realtime/" + key == topic.encode()
    assert key.startswith(f"{tenant}/{project}".encode())


@pytest.mark.parametrize(("version", "names"), [
    ("1", ["mqtt_topic", "tenant_id", "project_id", "mqtt_qos", "mqtt_retain", "bridge_id", "format_version", "received_at_ms"]),
    ("2", ["format_version", "envelope", "received_at_ms"]),
])
def test_the_envelope_format_setting_chooses_the_headers(version: str, names: list[str]) -> None:
    """IOT_BRIDGE_ENVELOPE_FORMAT picks the headers; both decode to the same envelope."""
    record = build_record(message(), dataclasses.replace(RULES, envelope_format=version))
    assert [name for name, _ in record.headers] == names
    assert decode_envelope(record.headers) == decode_envelope(build_record(message(), RULES).headers)
    assert RecordRules.from_settings(Settings(bridge_envelope_format=version)).envelope_format == version


def test_format_2_is_the_default() -> None:
    assert Settings().bridge_envelope_format == "2" == RULES.envelope_format


@given(topic=st.text(max_size=40), tenant=st.text(max_size=10), project=st.text(max_size=10), bridge=st.text(max_size=10),
       qos=st.integers(0, 2), retain=st.booleans(), received_at_ms=st.integers(0, 2**50))
def test_format_2_carries_any_envelope_and_falls_back_to_1_for_a_nul(
    topic: str, tenant: str, project: str, bridge: str, qos: int, retain: bool, received_at_ms: int
) -> None:
    """Every envelope decodes back exactly; one with a NUL in a field (which the packed header
    cannot separate) is written in format 1, whose decoder rejects it as it always has."""
    envelope = Envelope(topic, tenant, project, qos, retain, received_at_ms, bridge)
    headers = encode_envelope(envelope, "2")
    if any("\x00" in field for field in (topic, tenant, project, bridge)):
        assert dict(headers)["format_version"] == b"1"
        with pytest.raises(EnvelopeError, match="NUL"):
            decode_envelope(headers)
    else:
        assert dict(headers)["format_version"] == b"2"
        assert decode_envelope(headers) == envelope


def test_an_unknown_envelope_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown envelope format '3'"):
        encode_envelope(Envelope("t", "a", "p", 1, False, 0, "b"), "3")

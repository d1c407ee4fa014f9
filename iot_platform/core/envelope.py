"""The record format between the bridge and the consumer: Kafka headers around the raw payload.

A record's value is always the MQTT payload, byte for byte. Everything else the consumer needs
travels in headers, so the payload is never re-encoded. This module is pure (no Kafka import):
headers are ``list[tuple[str, bytes]]`` as confluent-kafka produces and consumes them.

Two formats of a good record's headers, told apart by ``format_version``; the consumer reads both:

- ``2`` (what the bridge writes by default): ``format_version``, ``envelope`` (topic, tenant,
  project, QoS, retain flag and bridge id, UTF-8, separated by NUL characters, which none of them
  may contain) and ``received_at_ms``. Three headers instead of eight: each header costs the bridge
  and the consumer a tuple per record, and the consumer's envelope cache hashes two headers, not seven.
- ``1``: one header per field (the names below). A bridge writes it when told to
  (``IOT_BRIDGE_ENVELOPE_FORMAT=1``: a rolling upgrade while consumers that read only format 1 still
  run), and for an envelope with a NUL in a field, which format 2 cannot carry (format 1's decoder
  rejects it, as it always has).

Dead letters keep format 1: they are rare, and other tools read them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

FORMAT_VERSION = "2"  # what a bridge writes unless told otherwise
FORMAT_VERSIONS = ("1", "2")  # what a consumer reads
_DEAD_LETTER_FORMAT = "1"

# Header names: the stable contract between bridge and consumer.
H_MQTT_TOPIC = "mqtt_topic"
H_TENANT = "tenant_id"
H_PROJECT = "project_id"
H_QOS = "mqtt_qos"
H_RETAIN = "mqtt_retain"
H_RECEIVED_AT_MS = "received_at_ms"
H_BRIDGE_ID = "bridge_id"
H_FORMAT = "format_version"
H_ENVELOPE = "envelope"  # format 2: topic, tenant, project, QoS, retain flag, bridge id; NUL-separated
H_REASON = "reason"
H_ORIGINAL_SIZE = "original_size"
H_TRUNCATED = "truncated"

Headers = list[tuple[str, bytes]]


class EnvelopeError(ValueError):
    """Headers that cannot be decoded into an envelope: a data error, dead-lettered by the consumer."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """Metadata of one good message, as the bridge received it."""

    mqtt_topic: str
    tenant_id: str
    project_id: str
    qos: int
    retain: bool
    received_at_ms: int
    bridge_id: str


@dataclass(frozen=True, slots=True)
class DeadLetterEnvelope:
    """Metadata of one rejected message: why, where from, and whether its bytes were cut."""

    reason: str
    mqtt_topic: str
    received_at_ms: int
    bridge_id: str
    original_size: int
    truncated: bool


_SEPARATOR = "\x00"


def encode_envelope(envelope: Envelope, version: str = FORMAT_VERSION) -> Headers:
    """The headers of a good record in format ``version`` (1 whenever a field holds a NUL)."""
    if version not in FORMAT_VERSIONS:
        raise ValueError(f"unknown envelope format {version!r}: one of {', '.join(FORMAT_VERSIONS)}")
    if version == "2":
        fields = (envelope.mqtt_topic, envelope.tenant_id, envelope.project_id, str(envelope.qos),
                  "1" if envelope.retain else "0", envelope.bridge_id)
        if not any(_SEPARATOR in field for field in fields):
            return [
                (H_FORMAT, b"2"),
                (H_ENVELOPE, _SEPARATOR.join(fields).encode()),
                (H_RECEIVED_AT_MS, str(envelope.received_at_ms).encode()),
            ]
    return [
        (H_MQTT_TOPIC, envelope.mqtt_topic.encode()),
        (H_TENANT, envelope.tenant_id.encode()),
        (H_PROJECT, envelope.project_id.encode()),
        (H_QOS, str(envelope.qos).encode()),
        (H_RETAIN, b"1" if envelope.retain else b"0"),
        (H_RECEIVED_AT_MS, str(envelope.received_at_ms).encode()),
        (H_BRIDGE_ID, envelope.bridge_id.encode()),
        (H_FORMAT, b"1"),
    ]


def encode_dead_letter(envelope: DeadLetterEnvelope) -> Headers:
    # The topic may itself be the defect (invalid UTF-8 arrives as replacement characters).
    return [
        (H_REASON, envelope.reason.encode()),
        (H_MQTT_TOPIC, envelope.mqtt_topic.encode("utf-8", "replace")),
        (H_RECEIVED_AT_MS, str(envelope.received_at_ms).encode()),
        (H_BRIDGE_ID, envelope.bridge_id.encode()),
        (H_ORIGINAL_SIZE, str(envelope.original_size).encode()),
        (H_TRUNCATED, b"1" if envelope.truncated else b"0"),
        (H_FORMAT, _DEAD_LETTER_FORMAT.encode()),
    ]


def _as_mapping(headers: Iterable[tuple[str, bytes | None]] | None) -> Mapping[str, bytes | None]:
    return dict(headers or ())


def _utf8(values: Mapping[str, bytes | None], name: str) -> str:
    raw = values.get(name)
    if raw is None:
        raise EnvelopeError(f"header {name!r} is missing")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EnvelopeError(f"header {name!r} is not UTF-8") from exc


def _text(values: Mapping[str, bytes | None], name: str) -> str:
    text = _utf8(values, name)
    if "\x00" in text:
        raise EnvelopeError(f"header {name!r} contains a NUL character")
    return text


def _int(values: Mapping[str, bytes | None], name: str) -> int:
    return _integer(_text(values, name), f"header {name!r}")


def _integer(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError as exc:
        raise EnvelopeError(f"{what} is not an integer: {text[:40]!r}") from exc


def decode_envelope(headers: Iterable[tuple[str, bytes | None]] | None) -> Envelope:
    """Headers of a good record -> Envelope; raises EnvelopeError on anything malformed."""
    values = _as_mapping(headers)
    version = _text(values, H_FORMAT)
    if version == "2":
        return _decode_packed(values)
    if version != "1":
        raise EnvelopeError(f"unsupported format_version {version!r}")
    return Envelope(
        mqtt_topic=_text(values, H_MQTT_TOPIC),
        tenant_id=_text(values, H_TENANT),
        project_id=_text(values, H_PROJECT),
        qos=_int(values, H_QOS),
        retain=_text(values, H_RETAIN) == "1",
        received_at_ms=_int(values, H_RECEIVED_AT_MS),
        bridge_id=_text(values, H_BRIDGE_ID),
    )


def _decode_packed(values: Mapping[str, bytes | None]) -> Envelope:
    fields = _utf8(values, H_ENVELOPE).split(_SEPARATOR)
    if len(fields) != 6:
        raise EnvelopeError(f"header {H_ENVELOPE!r} has {len(fields)} fields, not 6")
    topic, tenant_id, project_id, qos, retain, bridge_id = fields
    return Envelope(topic, tenant_id, project_id, _integer(qos, "the envelope's QoS"), retain == "1",
                    _int(values, H_RECEIVED_AT_MS), bridge_id)


def decode_dead_letter(headers: Iterable[tuple[str, bytes | None]] | None) -> DeadLetterEnvelope:
    """Headers of a DLQ record -> DeadLetterEnvelope, tolerant: a dead letter is kept whatever its headers."""
    values = _as_mapping(headers)

    def text_or(name: str, default: str) -> str:
        raw = values.get(name)
        return default if raw is None else raw.decode("utf-8", "replace").replace("\x00", "\ufffd")

    def int_or(name: str, default: int) -> int:
        try:
            return int(text_or(name, str(default)))
        except ValueError:
            return default

    return DeadLetterEnvelope(
        reason=text_or(H_REASON, "unknown"),
        mqtt_topic=text_or(H_MQTT_TOPIC, ""),
        received_at_ms=int_or(H_RECEIVED_AT_MS, 0),
        bridge_id=text_or(H_BRIDGE_ID, ""),
        original_size=int_or(H_ORIGINAL_SIZE, -1),
        truncated=text_or(H_TRUNCATED, "0") == "1",
    )

"""From one MQTT message to the one Kafka record the bridge produces for it.

A good message becomes a record on the messages topic: value = the payload bytes unchanged, headers =
the envelope (core/envelope.py), key = what Kafka keeps in order (``IOT_KAFKA_KEY_MODE``, see
:func:`record_key`). Every copy of a message has the same topic, hence the same key and partition. Anything else
becomes a dead letter on the dead-letter topic, with a ``reason`` header and the original bytes.
Only a dead letter that could not fit in Kafka's maximum message size is cut, and then it says so:
``truncated=1`` and ``original_size`` (the marker travels in headers so the bytes stay a prefix of
the original).

Pure: no Kafka import; every rule comes from `RecordRules`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from iot_platform.core.envelope import (
    FORMAT_VERSION,
    H_RECEIVED_AT_MS,
    DeadLetterEnvelope,
    Envelope,
    Headers,
    encode_dead_letter,
    encode_envelope,
)
from iot_platform.core.topic_grammar import Rejection, TopicGrammar, TopicMatch

if TYPE_CHECKING:
    from iot_platform.settings import Settings

PAYLOAD_TOO_LARGE = "payload_too_large"
KAFKA_REJECTED = "kafka_rejected"

# Kafka's limit applies to the whole record batch: batch header (61), record framing (<= 21),
# and per header two varints. Leaving a generous margin costs nothing on a dead letter.
RECORD_OVERHEAD_BYTES = 512
HEADER_OVERHEAD_BYTES = 10

KeyMode = Literal["device", "tenant", "tenant_project"]


# Per-message records are plain slotted dataclasses, never assigned to after construction, and not
# frozen: a frozen dataclass's __init__ sets each field through object.__setattr__, 1.2 µs against
# 0.3 for seven fields, and the bridge builds three of these per message (the consumer one MessageRow).
@dataclass(slots=True)
class InboundMessage:
    """One MQTT message as the bridge received it."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    received_at_ms: int


@dataclass(slots=True)  # not frozen: built per message (see InboundMessage)
class OutboundRecord:
    """What to produce; ``dead_letter_reason`` is None for a good message."""

    topic: str
    key: bytes | None
    value: bytes
    headers: Headers
    dead_letter_reason: str | None = None


@dataclass(frozen=True, slots=True, eq=False)
class RecordRules:
    """Everything record building depends on, taken once from the settings.

    Compared and hashed by identity (``eq=False``): it is part of the key of every record's template
    lookup, and a dataclass's generated ``__hash__`` hashes all seven fields on each call.
    """

    grammar: TopicGrammar
    messages_topic: str
    dead_letter_topic: str
    key_mode: KeyMode
    max_payload_bytes: int
    max_message_bytes: int
    bridge_id: str
    envelope_format: str = FORMAT_VERSION

    @classmethod
    def from_settings(cls, settings: Settings) -> RecordRules:
        return cls(
            grammar=TopicGrammar(settings.mqtt_topic_grammar, settings.id_pattern),
            messages_topic=settings.kafka_topic,
            dead_letter_topic=settings.kafka_dlq_topic,
            key_mode=settings.kafka_key_mode,
            max_payload_bytes=settings.max_payload_bytes,
            max_message_bytes=settings.kafka_max_message_bytes,
            bridge_id=settings.bridge_id,
            envelope_format=settings.bridge_envelope_format,
        )


def record_key(topic: str, match: TopicMatch, key_mode: KeyMode, prefix: str) -> bytes:
    """The key of a good message on ``topic`` (which starts with the grammar's literal ``prefix``).

    ``device``: the topic after the prefix (``tenant/project/device/...``): one device's messages
    share a key, so Kafka keeps their order, and the fleet spreads over every partition.
    ``tenant``: the tenant id: one tenant's messages in order, and all of them on one partition (a
    large tenant is a hot partition). ``tenant_project``: ``tenant/project``.
    """
    if key_mode == "device":
        return topic[len(prefix):].encode()
    if key_mode == "tenant_project":
        return f"{match.tenant_id}/{match.project_id}".encode()
    return match.tenant_id.encode()


@functools.lru_cache(maxsize=65_536)
def _good_template(rules: RecordRules, topic: str, qos: int, retain: bool) -> tuple[bytes, Headers] | Rejection:
    """Key and headers of a topic, all but the receive time (devices repeat topics: the hot path)."""
    parsed = rules.grammar.parse(topic)
    if isinstance(parsed, Rejection):
        return parsed
    envelope = Envelope(topic, parsed.tenant_id, parsed.project_id, qos, retain, 0, rules.bridge_id)
    headers = [header for header in encode_envelope(envelope, rules.envelope_format) if header[0] != H_RECEIVED_AT_MS]
    return record_key(topic, parsed, rules.key_mode, rules.grammar.prefix), headers


def build_record(message: InboundMessage, rules: RecordRules) -> OutboundRecord:
    """The record for a message: good, or a dead letter saying why not."""
    template = _good_template(rules, message.topic, message.qos, message.retain)
    if isinstance(template, Rejection):
        return dead_letter_record(message, template.reason, rules)
    if len(message.payload) > rules.max_payload_bytes:
        return dead_letter_record(message, PAYLOAD_TOO_LARGE, rules)
    key, headers = template
    return OutboundRecord(
        topic=rules.messages_topic,
        key=key,
        value=message.payload,
        headers=[*headers, (H_RECEIVED_AT_MS, str(message.received_at_ms).encode())],
    )


def headers_size(headers: Headers) -> int:
    return sum(len(name.encode()) + len(value) + HEADER_OVERHEAD_BYTES for name, value in headers)


def dead_letter_record(message: InboundMessage, reason: str, rules: RecordRules) -> OutboundRecord:
    """A dead letter with the original bytes, cut (and marked) only where Kafka could not take them."""

    def headers(truncated: bool) -> Headers:
        return encode_dead_letter(
            DeadLetterEnvelope(
                reason=reason,
                mqtt_topic=message.topic,
                received_at_ms=message.received_at_ms,
                bridge_id=rules.bridge_id,
                original_size=len(message.payload),
                truncated=truncated,
            )
        )

    # Both header variants have the same size ("0" vs "1"), so the budget is exact for either.
    budget = max(0, rules.max_message_bytes - RECORD_OVERHEAD_BYTES - headers_size(headers(False)))
    truncated = len(message.payload) > budget
    return OutboundRecord(
        topic=rules.dead_letter_topic,
        key=None,
        value=message.payload[:budget] if truncated else message.payload,
        headers=headers(truncated),
        dead_letter_reason=reason,
    )

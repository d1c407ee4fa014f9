"""What the consumer learns from a payload's bytes, without ever changing them (pure).

The payload column always keeps the exact bytes. This module decides what else can be stored:
- ``json_text``: the payload as text for the ``jsonb`` column, or None when it is not UTF-8 JSON or
  PostgreSQL's jsonb cannot hold it (a ``\\u0000`` escape, a lone surrogate, NaN/Infinity);
- ``message_id``: the deduplication id at ``message_id_field`` (a dotted path is allowed), when it is
  a non-empty string or an integer;
- ``device_id`` and ``device_ts`` (epoch seconds or milliseconds, or ISO 8601) when present.
Anything unusable becomes None: a payload is never an error here.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from typing import Any

DEVICE_ID_FIELDS = ("device_id", "deviceId", "device")
DEVICE_TS_FIELDS = ("device_ts", "ts", "timestamp", "time")
MAX_ID_CHARS = 256
_EPOCH_MS_ABOVE = 100_000_000_000  # 1e11 s is the year 5138; above it a number means milliseconds
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


@dataclass(frozen=True, slots=True)
class PayloadFacts:
    json_text: str | None
    message_id: str | None
    device_id: str | None
    device_ts: dt.datetime | None


NO_FACTS = PayloadFacts(None, None, None, None)
FactFields = tuple[str | None, str | None, str | None, dt.datetime | None]  # PayloadFacts' fields, in order
_NO_FIELDS: FactFields = (None, None, None, None)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON that jsonb accepts")


# One decoder for every payload: json.loads(..., parse_constant=...) builds a new one per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_SCAN = _DECODER.scan_once


def _parse(text: str) -> Any:
    """``_DECODER.decode(text)``; a document without surrounding whitespace skips its two regex passes."""
    try:
        value, end = _SCAN(text, 0)
    except StopIteration:  # leading whitespace, or no JSON value at all: the full rules decide
        return _DECODER.decode(text)
    return value if end == len(text) else _DECODER.decode(text)


def _jsonb_safe_string(text: str) -> bool:
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a \ud800-style escape
        return False
    return True


def _all_strings_safe(value: Any) -> bool:
    if isinstance(value, str):
        return _jsonb_safe_string(value)
    if isinstance(value, dict):
        return all(_jsonb_safe_string(k) and _all_strings_safe(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_all_strings_safe(v) for v in value)
    return True


def decode_json(payload: bytes) -> tuple[Any, str | None] | None:
    """(parsed value, text for jsonb or None) when ``payload`` is UTF-8 JSON, else None.

    The text is None when jsonb cannot store the document although it is JSON (a ``\\u0000`` escape,
    a lone surrogate): its message id still deduplicates it.
    """
    try:
        text = payload.decode("utf-8")
        value = _parse(text)
    except (ValueError, RecursionError):
        return None
    # Such strings can only come from escapes: skip the walk for the common payload without any.
    if "\\u" in text and not _all_strings_safe(value):
        return value, None
    return value, text


def _lookup(document: dict[str, Any], field: str) -> Any:
    if field in document:
        return document[field]
    node: Any = document
    for part in field.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def identifier(value: Any) -> str | None:
    """A usable id: a non-empty string (storable, at most 256 characters) or an integer, as text."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and 0 < len(value) <= MAX_ID_CHARS and _jsonb_safe_string(value):
        return value
    return None


def device_timestamp(value: Any) -> dt.datetime | None:
    """Epoch seconds or milliseconds (int or float), or an ISO 8601 string, as an aware UTC datetime."""
    if isinstance(value, bool):
        return None
    try:
        if isinstance(value, (int, float)):
            if not math.isfinite(value) or value < 0:
                return None
            seconds = value / 1000 if value >= _EPOCH_MS_ABOVE else value
            return _EPOCH + dt.timedelta(seconds=seconds)
        if isinstance(value, str) and 0 < len(value) <= 64:
            parsed = dt.datetime.fromisoformat(value)
            return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)).astimezone(dt.timezone.utc)
    except (ValueError, OverflowError):
        return None
    return None


def inspect_payload(payload: bytes, message_id_field: str) -> PayloadFacts:
    """Everything storable besides the bytes; see the module docstring."""
    return PayloadFacts(*payload_fields(payload, message_id_field))


def payload_fields(payload: bytes, message_id_field: str) -> FactFields:
    """inspect_payload's facts as a plain tuple: the consumer's per-record path builds no object."""
    decoded = decode_json(payload)
    if decoded is None:
        return _NO_FIELDS
    value, text = decoded
    if not isinstance(value, dict):
        return text, None, None, None
    device_id = device_ts = None
    for name in DEVICE_ID_FIELDS:  # the first field present decides, usable or not
        if name in value:
            device_id = identifier(value[name])
            break
    for name in DEVICE_TS_FIELDS:
        if name in value:
            device_ts = device_timestamp(value[name])
            break
    return text, identifier(_lookup(value, message_id_field)), device_id, device_ts

"""Message rows in PostgreSQL's binary COPY format (pure).

Each row is one tuple: a field count, then per column a 4-byte length (-1 for NULL) and the value in
the type's binary form: text as UTF-8, bytea as its bytes, jsonb as a version byte (1) and the JSON
text, timestamptz as microseconds since 2000-01-01 UTC (8 bytes), integer and bigint big-endian.
Neither side writes or parses text for anything but the jsonb: no hex for the payload, no timestamp
literals, no escapes. When the payload is storable JSON, its jsonb text is exactly the payload's
bytes, so no JSON is re-encoded either. Receive times come from integer milliseconds, so the stored
instant is exact.
"""

from __future__ import annotations

import datetime as dt
import functools
import struct
import time
from collections.abc import Iterable

from iot_platform.consumer.records import MessageRow

# The columns of iot.messages the consumer writes (ingested_at takes its default), in COPY order.
MESSAGE_COLUMNS = (
    "tenant_id", "project_id", "mqtt_topic", "payload", "payload_json", "message_id",
    "device_id", "device_ts", "received_at", "kafka_partition", "kafka_offset",
)
# Signature, flags (no OIDs), header extension length; the trailer is a field count of -1.
_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_TRAILER = struct.pack(">h", -1)

_EPOCH_2000 = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
_EPOCH_2000_MS = 946_684_800_000
_MICROSECOND = dt.timedelta(microseconds=1)
_LENGTH = struct.Struct(">i").pack
_TIMESTAMP = struct.Struct(">iq").pack
_TAIL = struct.Struct(">iqiiiq").pack  # received_at, kafka_partition, kafka_offset: length and value each
_NULL = _LENGTH(-1)
_JSONB_HEAD = struct.Struct(">ib").pack  # length, then jsonb's binary format version (1) before the JSON text


def _text(value: str) -> bytes:
    encoded = value.encode()
    return _LENGTH(len(encoded)) + encoded


@functools.lru_cache(maxsize=4096)
def _prefix(tenant_id: str, project_id: str, mqtt_topic: str) -> bytes:
    """Field count and the first three columns: the same for every message of one device topic."""
    return struct.pack(">h", len(MESSAGE_COLUMNS)) + _text(tenant_id) + _text(project_id) + _text(mqtt_topic)


def copy_row(row: MessageRow, *, with_json: bool = True) -> bytes:
    """One iot.messages tuple for ``row``; ``with_json=False`` stores jsonb NULL."""
    # Hot path (once per record): the NULL tests inlined rather than a helper call per field.
    payload, message_id, device_id, device_ts = row.payload, row.message_id, row.device_id, row.device_ts
    size = len(payload)
    return b"".join((
        _prefix(row.tenant_id, row.project_id, row.mqtt_topic),
        _LENGTH(size), payload,
        *((_JSONB_HEAD(size + 1, 1), payload) if with_json and row.json_text is not None else (_NULL,)),
        _NULL if message_id is None else _text(message_id),
        _NULL if device_id is None else _text(device_id),
        _NULL if device_ts is None else _TIMESTAMP(8, (device_ts - _EPOCH_2000) // _MICROSECOND),
        _TAIL(8, (row.received_at_ms - _EPOCH_2000_MS) * 1000, 4, row.kafka_partition, 8, row.kafka_offset),
    ))


def copy_data(rows: Iterable[MessageRow], *, with_json: bool = True) -> bytes:
    """The COPY input for ``rows``: header, their tuples, trailer."""
    return wrap([copy_row(r, with_json=with_json) for r in rows])


def wrap(tuples: list[bytes]) -> bytes:
    """The COPY input of tuples formatted one by one (``copy_row``)."""
    return b"".join((_HEADER, *tuples, _TRAILER))


@functools.lru_cache(maxsize=4096)
def _utc_second(epoch_s: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch_s))


def timestamp_ms(epoch_ms: int) -> str:
    """Epoch milliseconds as an exact UTC timestamptz literal (for statements with bound parameters)."""
    seconds, millis = divmod(epoch_ms, 1000)
    return f"{_utc_second(seconds)}.{millis:03d}+00"

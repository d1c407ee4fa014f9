"""Hourly rollup maths: the reference definition of every number in ``iot.rollup_hourly*``.

Pure: no database, no network. The database computes the same aggregates in SQL for speed
(``iot.rollup_hourly_compute`` and ``iot.rollup_hourly_fields_compute``, migration 060), for the
``iot_rollup_hourly`` asset and the live views alike; the integration tests check that SQL and
this module agree, so this file is where the rules are decided:

- A message belongs to the hour of its ``received_at`` (UTC), the day-partition key of
  ``iot.messages``; ``device_ts`` is device-controlled and may be wrong or missing.
- ``payload_bytes`` is the length of the exact bytes received; ``distinct_devices`` counts
  distinct non-null ``device_id`` values.
- A *numeric field* is a top-level key of a JSON-object payload whose value is a JSON number
  (booleans, strings, nested objects and arrays are not) with magnitude 0 or within
  [``MIN_MAGNITUDE``, ``MAX_MAGNITUDE``]. Outside that band PostgreSQL cannot cast the value to
  ``double precision`` (underflow and overflow are errors), and the bound keeps a sum of up to
  10^8 values finite. ``avg`` is ``sum / count``, so both implementations divide the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal

MAX_MAGNITUDE = Decimal("1e300")
MIN_MAGNITUDE = Decimal("1e-300")


@dataclass(frozen=True)
class RawMessage:
    """The columns of one ``iot.messages`` row that rollups read."""

    tenant_id: str
    project_id: str
    device_id: str | None
    payload_json: str | None  # jsonb as text; None when the payload was not JSON
    payload_bytes: int
    received_at: datetime


@dataclass(frozen=True)
class FieldStats:
    value_count: int
    min_value: float
    max_value: float
    avg_value: float
    sum_value: float


@dataclass(frozen=True)
class HourlyRollup:
    hour: datetime
    tenant_id: str
    project_id: str
    message_count: int
    payload_bytes: int
    distinct_devices: int
    fields: Mapping[str, FieldStats] = field(default_factory=dict)


def hour_of(ts: datetime) -> datetime:
    """Start of the UTC hour containing ``ts`` (which must be timezone-aware)."""
    if ts.tzinfo is None:
        raise ValueError("received_at must be timezone-aware")
    return ts.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)


def hour_window(hour: datetime) -> tuple[datetime, datetime]:
    """Half-open interval [hour, hour + 1 h) of one rollup row."""
    start = hour_of(hour)
    return start, start + timedelta(hours=1)


def _counts(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
        return False
    magnitude = abs(Decimal(value))
    return magnitude == 0 or MIN_MAGNITUDE <= magnitude <= MAX_MAGNITUDE


def _no_constants(name: str) -> object:
    return name  # NaN/Infinity are not JSON (jsonb rejects them): keep them as non-numbers


def numeric_fields(payload_json: str | None) -> dict[str, float]:
    """Top-level numeric fields of a JSON payload under the module's rules; {} when none."""
    if payload_json is None:
        return {}
    try:
        document = json.loads(payload_json, parse_float=Decimal, parse_constant=_no_constants)
    except ValueError:
        return {}
    if not isinstance(document, dict):
        return {}
    return {key: float(value) for key, value in document.items() if _counts(value)}


def summarize(values: Iterable[float]) -> FieldStats:
    """count/min/max/avg/sum of a non-empty series of values."""
    series = list(values)
    if not series:
        raise ValueError("no values to summarize")
    total = sum(series)
    return FieldStats(len(series), min(series), max(series), total / len(series), total)


def rollup(messages: Iterable[RawMessage]) -> list[HourlyRollup]:
    """One row per (hour, tenant, project), sorted by those keys; fields sorted by name."""
    groups: dict[tuple[datetime, str, str], list[RawMessage]] = {}
    for message in messages:
        groups.setdefault((hour_of(message.received_at), message.tenant_id, message.project_id), []).append(message)
    rows = []
    for (hour, tenant_id, project_id), members in sorted(groups.items()):
        values: dict[str, list[float]] = {}
        for message in members:
            for name, value in numeric_fields(message.payload_json).items():
                values.setdefault(name, []).append(value)
        rows.append(
            HourlyRollup(
                hour=hour,
                tenant_id=tenant_id,
                project_id=project_id,
                message_count=len(members),
                payload_bytes=sum(m.payload_bytes for m in members),
                distinct_devices=len({m.device_id for m in members if m.device_id is not None}),
                fields={name: summarize(values[name]) for name in sorted(values)},
            )
        )
    return rows

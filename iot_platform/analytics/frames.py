"""Typed DataFrames from database rows, and the checks on what an analyst asks for (pure: pandas only).

Every frame has a fixed column list with pandas' nullable dtypes, whatever the rows hold, so an
empty result has the same columns and dtypes as a full one: text is ``string`` (``pd.NA`` when
missing), integers ``Int64``/``Int32``, floats ``Float64``, flags ``boolean`` and times
``datetime64[ns, UTC]`` (PostgreSQL keeps microseconds; convert with ``.dt.tz_convert(...)``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal, get_args

import pandas as pd

FieldType = Literal["float", "int", "string", "bool"]
UTC_NS = "datetime64[ns, UTC]"
FIELD_DTYPES: dict[str, str] = {"float": "Float64", "int": "Int64", "string": "string", "bool": "boolean"}
DEFAULT_LIMIT = 100_000
MAX_LIMIT = 10_000_000


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str  # a pandas dtype name; "object" keeps Python values (bytes, parsed JSON)


MESSAGE_COLUMNS = (
    Column("received_at", UTC_NS),
    Column("tenant_id", "string"),
    Column("project_id", "string"),
    Column("device_id", "string"),
    Column("message_id", "string"),
    Column("mqtt_topic", "string"),
    Column("device_ts", UTC_NS),
    Column("ingested_at", UTC_NS),
    Column("kafka_partition", "Int32"),
    Column("kafka_offset", "Int64"),
    Column("payload_bytes", "Int64"),
)
RAW_PAYLOAD_COLUMNS = (Column("payload", "object"), Column("payload_json", "object"))
ROLLUP_COLUMNS = (
    Column("hour", UTC_NS),
    Column("tenant_id", "string"),
    Column("project_id", "string"),
    Column("message_count", "Int64"),
    Column("payload_bytes", "Int64"),
    Column("distinct_devices", "Int64"),
    Column("computed_at", UTC_NS),
)
FIELD_ROLLUP_COLUMNS = (
    Column("hour", UTC_NS),
    Column("tenant_id", "string"),
    Column("project_id", "string"),
    Column("field", "string"),
    Column("value_count", "Int64"),
    Column("min_value", "Float64"),
    Column("max_value", "Float64"),
    Column("avg_value", "Float64"),
    Column("sum_value", "Float64"),
)


def utc_window(since: datetime, until: datetime) -> tuple[datetime, datetime]:
    """``[since, until)`` in UTC; both must be timezone-aware (``datetime`` or ``pd.Timestamp``)."""
    for name, value in (("since", since), ("until", until)):
        if not isinstance(value, datetime):
            raise TypeError(f"{name} must be a datetime or pandas Timestamp, not {type(value).__name__}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"{name} must be timezone-aware, e.g. datetime(2026, 12, 1, tzinfo=timezone.utc) "
                             "or pd.Timestamp('2026-12-01', tz='UTC')")
    start, end = since.astimezone(timezone.utc), until.astimezone(timezone.utc)
    if start >= end:
        raise ValueError(f"since ({start.isoformat()}) must be before until ({end.isoformat()})")
    return start, end


def hours_overlapping(since: datetime, until: datetime) -> tuple[datetime, datetime]:
    """Bounds ``(first, end)`` for rollup hours overlapping ``[since, until)``: ``first <= hour < end``."""
    start, end = utc_window(since, until)
    return start.replace(minute=0, second=0, microsecond=0), end


def check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be an integer from 1 to {MAX_LIMIT:,}, not {limit!r}")
    return limit


def field_columns(fields: Mapping[str, FieldType] | None) -> tuple[Column, ...]:
    """Columns for payload fields expanded on request: one per JSON field, named after it."""
    if not fields:
        return ()
    taken = {c.name for c in MESSAGE_COLUMNS + RAW_PAYLOAD_COLUMNS}
    columns = []
    for name, kind in fields.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"a field name must be a non-empty string, not {name!r}")
        if name in taken:
            raise ValueError(f"field {name!r} would hide the column of the same name; read it with raw=True instead")
        if kind not in FIELD_DTYPES:
            raise ValueError(f"field {name!r}: type {kind!r} is not one of {', '.join(get_args(FieldType))}")
        columns.append(Column(name, FIELD_DTYPES[kind]))
    return tuple(columns)


def one_or_many(name: str, value: str | Sequence[str] | None) -> list[str] | None:
    """A filter given as one value or several; None means no filter."""
    if value is None:
        return None
    values = [value] if isinstance(value, str) else list(value)
    if not values or not all(isinstance(v, str) for v in values):
        raise ValueError(f"{name} must be a string or a non-empty list of strings")
    return values


def to_frame(rows: Iterable[Sequence[Any]], columns: Sequence[Column]) -> pd.DataFrame:
    """A DataFrame of ``rows`` (tuples in ``columns`` order) with exactly these columns and dtypes."""
    data = list(rows)
    series = {}
    for index, column in enumerate(columns):
        values = [row[index] for row in data]
        if column.dtype == "object":  # bytea arrives as memoryview: hand out bytes
            values = [bytes(v) if isinstance(v, memoryview) else v for v in values]
        series[column.name] = pd.array(values, dtype=column.dtype)
    return pd.DataFrame(series, columns=[c.name for c in columns])

"""The analysts' frames: fixed columns and nullable dtypes whatever the rows, UTC times, checked requests."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from iot_platform.analytics.frames import (
    FIELD_ROLLUP_COLUMNS,
    MAX_LIMIT,
    MESSAGE_COLUMNS,
    RAW_PAYLOAD_COLUMNS,
    ROLLUP_COLUMNS,
    check_limit,
    field_columns,
    hours_overlapping,
    one_or_many,
    to_frame,
    utc_window,
)

UTC = timezone.utc
BERLIN_WINTER = timezone(timedelta(hours=1))
EXPECTED_DTYPES = {
    "received_at": "datetime64[ns, UTC]", "tenant_id": "string", "project_id": "string", "device_id": "string",
    "message_id": "string", "mqtt_topic": "string", "device_ts": "datetime64[ns, UTC]",
    "ingested_at": "datetime64[ns, UTC]", "kafka_partition": "Int32", "kafka_offset": "Int64", "payload_bytes": "Int64",
    "hour": "datetime64[ns, UTC]", "message_count": "Int64", "distinct_devices": "Int64", "computed_at": "datetime64[ns, UTC]",
    "field": "string", "value_count": "Int64", "min_value": "Float64", "max_value": "Float64", "avg_value": "Float64",
    "sum_value": "Float64",
}


@pytest.mark.parametrize("columns", [MESSAGE_COLUMNS, ROLLUP_COLUMNS, FIELD_ROLLUP_COLUMNS], ids=["messages", "rollups", "fields"])
@pytest.mark.parametrize("rows", [0, 2], ids=["empty", "two-rows"])
def test_frames_have_the_documented_columns_and_dtypes(columns: tuple, rows: int) -> None:
    """Empty or not, and with NULLs in every column, a frame has exactly its columns with nullable dtypes."""
    sample = {"datetime64[ns, UTC]": datetime(2026, 12, 1, 10, tzinfo=UTC), "string": "x", "Int32": 3, "Int64": 2**40,
              "Float64": 1.5}
    data = [tuple(sample[c.dtype] for c in columns), tuple(None for _ in columns)][:rows]
    frame = to_frame(data, columns)
    assert list(frame.columns) == [c.name for c in columns]
    assert {name: str(dtype) for name, dtype in frame.dtypes.items()} == {c.name: EXPECTED_DTYPES[c.name] for c in columns}
    assert len(frame) == rows
    if rows:
        assert frame.iloc[1].isna().all()


def test_times_are_converted_to_utc_and_keep_microseconds() -> None:
    """A timestamp in another offset is the same instant in UTC; microseconds survive; tz_convert works."""
    local = datetime(2026, 12, 1, 11, 30, 0, 123456, tzinfo=BERLIN_WINTER)
    frame = to_frame([(local, "acme", "p", 1, 1, 1, local)], ROLLUP_COLUMNS)
    assert frame["hour"][0] == pd.Timestamp("2026-12-01 10:30:00.123456", tz="UTC")
    assert str(frame["hour"].dt.tz) == "UTC"
    assert frame["hour"].dt.tz_convert("Europe/Berlin")[0].hour == 11


def test_field_columns_are_typed_and_checked() -> None:
    """Each field type maps to one nullable dtype; unknown types, empty names and shadowed columns are refused."""
    columns = field_columns({"temperature": "float", "seq": "int", "status": "string", "on": "bool", "we'ird": "string"})
    assert [(c.name, c.dtype) for c in columns] == [
        ("temperature", "Float64"), ("seq", "Int64"), ("status", "string"), ("on", "boolean"), ("we'ird", "string")]
    assert field_columns(None) == () == field_columns({})
    for bad, message in (({"t": "double"}, "not one of float, int, string, bool"), ({"": "float"}, "non-empty"),
                         ({"device_id": "string"}, "would hide the column"), ({"payload": "string"}, "would hide")):
        with pytest.raises(ValueError, match=message):
            field_columns(bad)  # type: ignore[arg-type]


def test_window_must_be_aware_ordered_datetimes() -> None:
    """since/until: timezone-aware datetimes or Timestamps, converted to UTC; naive, reversed or strings are refused."""
    since = datetime(2026, 12, 1, 12, tzinfo=BERLIN_WINTER)
    assert utc_window(since, pd.Timestamp("2026-12-01 12:00", tz="UTC")) == (
        datetime(2026, 12, 1, 11, tzinfo=UTC), datetime(2026, 12, 1, 12, tzinfo=UTC))
    with pytest.raises(ValueError, match="since must be timezone-aware"):
        utc_window(datetime(2026, 12, 1), since)
    with pytest.raises(ValueError, match="until must be timezone-aware"):
        utc_window(since, pd.Timestamp("2026-12-02"))
    with pytest.raises(ValueError, match="must be before until"):
        utc_window(since, since)
    with pytest.raises(TypeError, match="not str"):
        utc_window("2026-12-01", since)  # type: ignore[arg-type]


def test_rollup_window_covers_every_hour_it_overlaps() -> None:
    """Rollups of [10:20, 12:00) are the hours 10:00 and 11:00: the first bound is floored to the hour."""
    first, end = hours_overlapping(datetime(2026, 12, 1, 10, 20, tzinfo=UTC), datetime(2026, 12, 1, 12, tzinfo=UTC))
    assert (first, end) == (datetime(2026, 12, 1, 10, tzinfo=UTC), datetime(2026, 12, 1, 12, tzinfo=UTC))


@pytest.mark.parametrize("limit", [0, -1, MAX_LIMIT + 1, True, 1.5, "10"])
def test_limit_must_be_a_positive_bounded_integer(limit: object) -> None:
    with pytest.raises(ValueError, match="limit must be an integer"):
        check_limit(limit)  # type: ignore[arg-type]


def test_limit_bounds_are_accepted() -> None:
    assert (check_limit(1), check_limit(MAX_LIMIT)) == (1, MAX_LIMIT)


def test_filters_take_one_value_or_several() -> None:
    assert one_or_many("project", None) is None
    assert one_or_many("project", "p1") == ["p1"]
    assert one_or_many("project", ("p1", "p2")) == ["p1", "p2"]
    for bad in ([], [1], ["p", None]):
        with pytest.raises(ValueError, match="project must be a string"):
            one_or_many("project", bad)  # type: ignore[arg-type]


def test_raw_payloads_are_bytes_and_parsed_json() -> None:
    """psycopg2 hands bytea out as memoryview: the frame holds bytes; parsed JSON stays as it came."""
    frame = to_frame([(memoryview(b"\x00\xff"), None), (memoryview(b"{}"), {"a": 1})], RAW_PAYLOAD_COLUMNS)
    assert list(frame["payload"]) == [b"\x00\xff", b"{}"] and list(frame["payload_json"]) == [None, {"a": 1}]

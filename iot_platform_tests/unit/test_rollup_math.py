"""Rollup maths (iot_platform.core.rollup_math): the reference every SQL aggregate is checked against."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iot_platform.core.rollup_math import (
    FieldStats,
    RawMessage,
    hour_of,
    hour_window,
    numeric_fields,
    rollup,
    summarize,
)

UTC = timezone.utc
H = datetime(2026, 11, 26, 14, tzinfo=UTC)


def msg(payload: object = None, *, tenant: str = "t1", project: str = "p1", device: str | None = "d1",
        at: datetime = H, size: int | None = None) -> RawMessage:
    text = None if payload is None else (payload if isinstance(payload, str) else json.dumps(payload))
    return RawMessage(tenant, project, device, text, size if size is not None else len(text or ""), at)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ('{"t": 21.5, "h": 40}', {"t": 21.5, "h": 40.0}),
        ('{"on": true, "off": false}', {}),  # booleans are not numbers, though bool subclasses int
        ('{"s": "23.5"}', {}),  # numeric strings are not numbers
        ('{"n": null}', {}),
        ('{"nested": {"t": 1}, "list": [1, 2]}', {}),  # only top-level fields
        ("[1, 2, 3]", {}),  # not an object
        ("42", {}),
        ('"text"', {}),
        ("not json", {}),
        (None, {}),
        ('{"zero": 0, "negzero": -0.0}', {"zero": 0.0, "negzero": 0.0}),
        ('{"big": 1e300, "tiny": 1e-300}', {"big": 1e300, "tiny": 1e-300}),  # the band's edges count
        ('{"huge": 1e301, "huge_int": ' + "9" * 302 + "}", {}),  # beyond 1e300
        ('{"sub": 1e-301, "under": 1e-400}', {}),  # PostgreSQL cannot cast these to float8
        ('{"n": NaN, "i": Infinity, "m": -Infinity}', {}),  # not JSON; jsonb rejects them
        ('{"a": 1, "a": 2}', {"a": 2.0}),  # duplicate keys: the last wins, as in jsonb
        ('{"": 5}', {"": 5.0}),
        ('{"ts": 1764165600000000000}', {"ts": 1.7641656e18}),  # epoch-ns integers count
        ('{"p": 0.1000000000000000055511151231257827}', {"p": 0.1}),  # correctly rounded
    ],
)
def test_numeric_fields_rules(payload: str | None, expected: dict[str, float]) -> None:
    """Only top-level JSON numbers within the castable band are numeric fields."""
    got = numeric_fields(payload)
    assert got == expected
    assert all(type(v) is float for v in got.values())


@pytest.mark.parametrize(
    ("ts", "hour"),
    [
        (datetime(2026, 11, 26, 14, 0, tzinfo=UTC), H),
        (datetime(2026, 11, 26, 14, 59, 59, 999999, tzinfo=UTC), H),
        (datetime(2026, 11, 26, 15, 0, tzinfo=UTC), H + timedelta(hours=1)),
        (datetime(2026, 11, 26, 20, 15, tzinfo=timezone(timedelta(hours=5, minutes=30))), H),  # 14:45 UTC
    ],
)
def test_hour_of_floors_in_utc(ts: datetime, hour: datetime) -> None:
    """A message belongs to the UTC hour of its received_at, whatever its offset."""
    assert hour_of(ts) == hour
    assert hour_of(ts).tzinfo == UTC


def test_hour_of_rejects_naive_timestamps() -> None:
    """A naive timestamp has no hour: refuse rather than guess a timezone."""
    with pytest.raises(ValueError, match="timezone-aware"):
        hour_of(datetime(2026, 11, 26, 14))


def test_hour_window_is_half_open_hour() -> None:
    """The window of an hour is [hour, hour + 1 h)."""
    assert hour_window(H + timedelta(minutes=30)) == (H, H + timedelta(hours=1))


def test_summarize_avg_is_sum_over_count() -> None:
    """count/min/max/avg/sum, avg computed as sum / count (as the SQL does)."""
    assert summarize([3.0, 1.0, 2.0]) == FieldStats(3, 1.0, 3.0, 2.0, 6.0)
    with pytest.raises(ValueError):
        summarize([])


def test_rollup_of_nothing_is_empty() -> None:
    """No messages, no rollup rows (an hour without data has no row, not a zero row)."""
    assert rollup([]) == []


def test_rollup_groups_by_hour_tenant_project() -> None:
    """Counts, bytes, distinct devices and field stats per (hour, tenant, project), sorted."""
    rows = rollup(
        [
            msg({"t": 20}, device="a", size=10),
            msg({"t": 22, "h": 50}, device="b", size=20),
            msg({"t": 24}, device="a", size=30),
            msg({"t": 1}, project="p2", size=5),
            msg({"t": 99}, tenant="t0", size=7),
            msg({"t": 5}, at=H + timedelta(hours=1), size=1),
        ]
    )
    keys = [(r.hour, r.tenant_id, r.project_id) for r in rows]
    assert keys == [(H, "t0", "p1"), (H, "t1", "p1"), (H, "t1", "p2"), (H + timedelta(hours=1), "t1", "p1")]
    main = rows[1]
    assert (main.message_count, main.payload_bytes, main.distinct_devices) == (3, 60, 2)
    assert main.fields == {"h": FieldStats(1, 50.0, 50.0, 50.0, 50.0), "t": FieldStats(3, 20.0, 24.0, 22.0, 66.0)}
    assert list(main.fields) == ["h", "t"]


def test_rollup_counts_messages_without_json_or_device() -> None:
    """Non-JSON payloads count as messages and bytes; a NULL device is not a device."""
    [row] = rollup([msg("raw\x00bytes", device=None, size=9), msg({"t": 1}, device=None, size=8)])
    assert (row.message_count, row.payload_bytes, row.distinct_devices) == (2, 17, 0)
    assert row.fields == {"t": FieldStats(1, 1.0, 1.0, 1.0, 1.0)}


def test_empty_string_device_is_a_device() -> None:
    """'' is a value (as in SQL count(DISTINCT)), only NULL is not."""
    [row] = rollup([msg({}, device=""), msg({}, device=""), msg({}, device=None)])
    assert row.distinct_devices == 1


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["t1", "t2"]),
            st.integers(min_value=0, max_value=3 * 3600 - 1),
            st.one_of(st.none(), st.integers(-(10**6), 10**6), st.floats(-1e6, 1e6, allow_nan=False), st.booleans()),
        ),
        max_size=60,
    )
)
def test_rollup_invariants(events: list[tuple[str, int, object]]) -> None:
    """Totals are preserved and every field stat is internally consistent, for any input."""
    messages = [msg({"v": v} if v is not None else {}, tenant=t, at=H + timedelta(seconds=s), size=1) for t, s, v in events]
    rows = rollup(messages)
    assert sum(r.message_count for r in rows) == len(messages)
    assert sum(r.payload_bytes for r in rows) == len(messages)
    numeric = [v for _, _, v in events
               if v is not None and not isinstance(v, bool) and (v == 0 or 1e-300 <= abs(v) <= 1e300)]
    assert sum(r.fields["v"].value_count for r in rows if "v" in r.fields) == len(numeric)
    for row in rows:
        assert row.hour == hour_of(row.hour)
        for stats in row.fields.values():
            assert stats.min_value <= stats.avg_value + 1e-9 and stats.avg_value <= stats.max_value + 1e-9
            assert math.isclose(stats.avg_value * stats.value_count, stats.sum_value, rel_tol=1e-9, abs_tol=1e-6)

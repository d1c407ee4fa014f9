"""Grafana macro and variable expansion (pure)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from iot_platform.dashboards.macros import Expansion, MacroError, Variable, expand, go_number, interval_seconds, rfc3339

START = datetime(2026, 11, 26, 10, 0, tzinfo=timezone.utc)
END = datetime(2026, 11, 26, 16, 30, 15, 250000, tzinfo=timezone.utc)
TENANTS = {"tenant": Variable(("acme",)), "project": Variable(("p1", "o'brien"), multi=True)}
RANGE = Expansion(START, END, interval=timedelta(minutes=5), variables=TENANTS)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("$__timeFilter(received_at)", "received_at BETWEEN '2026-11-26T10:00:00Z' AND '2026-11-26T16:30:15.25Z'"),
        ("$__timeFrom()", "'2026-11-26T10:00:00Z'"),
        ("$__timeTo()", "'2026-11-26T16:30:15.25Z'"),
        ("$__time(hour)", 'hour AS "time"'),
        ("$__timeEpoch(hour)", 'extract(epoch from hour) as "time"'),
        ("$__timeGroup(hour, 1h)", "floor(extract(epoch from hour)/3600)*3600"),
        ("$__timeGroupAlias(hour, '1h')", 'floor(extract(epoch from hour)/3600)*3600 AS "time"'),
        ("$__timeGroupAlias(hour,1d)", 'floor(extract(epoch from hour)/86400)*86400 AS "time"'),
        ("$__timeGroupAlias(t, 100ms)", 'floor(extract(epoch from t)/0.1)*0.1 AS "time"'),
        ("$__timeGroupAlias(t, 2w)", 'floor(extract(epoch from t)/1.2096e+06)*1.2096e+06 AS "time"'),
        ("$__timeGroupAlias(received_at, $__interval)", 'floor(extract(epoch from received_at)/300)*300 AS "time"'),
        ("$__timeGroup(hour, 1h), x", 'floor(extract(epoch from hour)/3600)*3600 AS "time", x'),
        ("$__timeGroupAlias(t, 5m, 0)", 'floor(extract(epoch from t)/300)*300 AS "time"'),
        ("$__unixEpochFilter(ts)", "ts >= 1795687200 AND ts <= 1795710615"),
        ("$__interval_ms", "300000"),
        ("$__from..$__to", "1795687200000..1795710615250"),
        ("tenant_id = '$tenant'", "tenant_id = 'acme'"),
        ("tenant_id = '${tenant}'", "tenant_id = 'acme'"),
        ("tenant_id = '[[tenant]]'", "tenant_id = 'acme'"),
        ("tenant_id IN (${tenant:sqlstring})", "tenant_id IN ('acme')"),
        ("project_id IN ($project)", "project_id IN ('p1','o''brien')"),
        ("project_id IN (${project:sqlstring})", "project_id IN ('p1','o''brien')"),
        ("${project:csv}", "p1,o'brien"),
        ("${tenant:raw}", "acme"),
        ("no macros at all", "no macros at all"),
    ],
)
def test_expansion_matches_grafana(sql: str, expected: str) -> None:
    """Each macro and variable form expands exactly as Grafana's PostgreSQL data source does."""
    assert expand(sql, RANGE) == expected


@pytest.mark.parametrize(
    "sql",
    ["$unknown", "${tenant:bogus}", "$__nosuchmacro(x)", "$__timeFilter()", "$__timeGroup(hour)", "$__timeGroup(hour, 1M)", "${project:raw}"],
)
def test_bad_references_are_errors(sql: str) -> None:
    """A typo in a variable, format, macro or interval fails instead of producing broken SQL."""
    with pytest.raises(MacroError):
        expand(sql, RANGE)


def test_variable_without_value_is_an_error() -> None:
    """A variable that has no selected value cannot expand to valid SQL."""
    with pytest.raises(MacroError):
        expand("$tenant", Expansion(START, END, variables={"tenant": Variable(())}))


def test_naive_datetimes_are_rejected() -> None:
    """A time range must be unambiguous: naive datetimes are refused."""
    with pytest.raises(MacroError):
        Expansion(datetime(2026, 1, 1), END)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(Decimal(3600), "3600"), (Decimal("0.5"), "0.5"), (Decimal(999999), "999999"), (Decimal(1000000), "1e+06"),
     (Decimal("0.0001"), "0.0001"), (Decimal("0.00001"), "1e-05"), (Decimal(1234567), "1.234567e+06")],
)
def test_go_number_formatting(value: Decimal, expected: str) -> None:
    """Bucket sizes print like Go's %v of a float64, as in Grafana's SQL."""
    assert go_number(value) == expected


@pytest.mark.parametrize(("text", "seconds"), [("1m", 60), ("'5m'", 300), (" 2h ", 7200), ("250ms", Decimal("0.25"))])
def test_interval_seconds(text: str, seconds: Decimal) -> None:
    """Interval strings are parsed with Grafana's units, quotes allowed."""
    assert interval_seconds(text) == seconds


def test_rfc3339_converts_to_utc() -> None:
    """Times are rendered in UTC whatever the input zone."""
    paris = timezone(timedelta(hours=1))
    assert rfc3339(datetime(2026, 11, 26, 11, 0, tzinfo=paris)) == "2026-11-26T10:00:00Z"

"""The live rollup views on the real database: every hour, closed or open, settled or not, equals a full
recomputation from raw rows (by the pure module), no hour is counted twice or missed, and row-level
security applies through the views."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg2
import pytest

from iot_platform.core.rollup_math import HourlyRollup, RawMessage, hour_of, rollup
from iot_platform.settings import Settings
from iot_platform.storage.db import connect
from iot_platform.storage.migrate import apply_migrations, ensure_day_partitions
from iot_platform.storage.rollup_sql import refresh_hour
from iot_platform.storage.tenant_identity import derive_password
from iot_platform.storage.tenants import sync_tenants
from iot_platform_tests.helpers import private_roles
from iot_platform_tests.integration.test_dagster_assets import PAYLOADS, insert_message

pytestmark = pytest.mark.integration

UTC = timezone.utc
KEY = "live-rollup-key"


@dataclass(frozen=True)
class Hours:
    """Six hours of data: [0] .. [4] closed, [5] the current (open) hour."""

    starts: tuple[datetime, ...]

    def __getitem__(self, index: int) -> datetime:
        return self.starts[index]


def _seed(settings: Settings, hours: Hours, *, offset: int = 0, count: int = 40) -> None:
    """Rows in every hour, for two tenants and three projects, incl. the hours' first and last microsecond."""
    conn = connect(settings)
    try:
        ensure_day_partitions(conn, {h.date() for h in hours.starts})
        with conn, conn.cursor() as cur:
            cur.execute("INSERT INTO iot.tenants (tenant_id) VALUES ('acme'), ('globex') ON CONFLICT DO NOTHING")
            n = offset
            for start in hours.starts:
                edges = [start, start + timedelta(hours=1) - timedelta(microseconds=1)]
                for i in range(count):
                    at = edges[i] if i < 2 else start + timedelta(seconds=37 * i)
                    if at > datetime.now(UTC):  # the open hour: only up to now
                        at = start + timedelta(microseconds=i)
                    tenant, project = [("acme", "p1"), ("acme", "p2"), ("globex", "g1")][i % 3]
                    raw = b"\x00\xffbinary" if i % 11 == 5 else None
                    insert_message(cur, at, partition=n % 6, offset=n, tenant=tenant, project=project,
                                   device=None if i % 7 == 0 else f"dev{i % 4}", payload=PAYLOADS[i % len(PAYLOADS)], raw=raw)
                    n += 1
    finally:
        conn.close()


def _insert_one(settings: Settings, at: datetime, offset: int, tenant: str = "acme", payload: object = None) -> None:
    conn = connect(settings)
    try:
        with conn, conn.cursor() as cur:
            insert_message(cur, at, partition=0, offset=offset, tenant=tenant, project="p1", payload=payload or {"temp": 99.5})
    finally:
        conn.close()


def _recompute(settings: Settings) -> list[HourlyRollup]:
    """The reference: every raw row, rolled up by the pure module."""
    conn = connect(settings)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT tenant_id, project_id, device_id, payload_json::text, octet_length(payload), received_at"
                        " FROM iot.messages")
            return rollup(RawMessage(*row) for row in cur.fetchall())
    finally:
        conn.close()


def _live(conn: Any) -> tuple[list[tuple], list[tuple]]:
    with conn.cursor() as cur:
        cur.execute("SELECT hour, tenant_id, project_id, message_count, payload_bytes, distinct_devices"
                    " FROM iot.rollup_hourly_live ORDER BY 1, 2, 3")
        main = cur.fetchall()
        cur.execute("SELECT hour, tenant_id, project_id, field, value_count, min_value, max_value, avg_value, sum_value"
                    " FROM iot.rollup_hourly_fields_live ORDER BY 1, 2, 3, 4")
        fields = cur.fetchall()
    conn.rollback()
    return main, fields


def _assert_equal(live: tuple[list[tuple], list[tuple]], expected: list[HourlyRollup]) -> None:
    main, fields = live
    assert main == [(r.hour, r.tenant_id, r.project_id, r.message_count, r.payload_bytes, r.distinct_devices)
                    for r in expected]
    want = [(r.hour, r.tenant_id, r.project_id, name, s) for r in expected for name, s in r.fields.items()]
    assert [row[:4] for row in fields] == [w[:4] for w in want]
    for row, (*_, stats) in zip(fields, want):
        assert row[4] == stats.value_count, row
        for got, exact in zip(row[5:], (stats.min_value, stats.max_value, stats.avg_value, stats.sum_value)):
            assert math.isclose(got, exact, rel_tol=1e-12), (row, stats)


def _settled(settings: Settings) -> list[datetime]:
    conn = connect(settings)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT hour FROM iot.rollup_hours ORDER BY 1")
            return [r[0] for r in cur.fetchall()]
    finally:
        conn.close()


@pytest.fixture
def hours(settings: Settings) -> Hours:
    apply_migrations(settings)
    current = hour_of(datetime.now(UTC))
    return Hours(tuple(current - timedelta(hours=n) for n in range(5, -1, -1)))


def test_live_views_equal_a_full_recomputation_for_every_hour(settings: Settings, hours: Hours) -> None:
    """Nothing settled, some hours settled with gaps, the open hour materialized too: the live views always equal
    the pure rollup of every raw row; late rows in a settled hour wait for its re-run, elsewhere they show at once."""
    _seed(settings, hours)
    owner = connect(settings)
    try:
        _assert_equal(_live(owner), _recompute(settings))  # nothing materialized: all live

        for index in (0, 1, 3, 5):  # [2] is a gap, [4] closed but not rolled up yet, [5] the open hour
            refresh_hour(settings, hours[index])
        assert _settled(settings) == [hours[0], hours[1], hours[3]]  # the open hour is not settled
        _assert_equal(_live(owner), _recompute(settings))

        # Late rows: into a settled hour (served as materialized until re-run), a gap and the open hour (live).
        before = _recompute(settings)
        _insert_one(settings, hours[1] + timedelta(minutes=30), 10_000, payload={"temp": 1e6})
        _insert_one(settings, hours[2] + timedelta(minutes=30), 10_001, tenant="initech")
        _insert_one(settings, min(hours[5] + timedelta(seconds=1), datetime.now(UTC)), 10_002)
        after = _recompute(settings)
        mixed = [r for r in before if r.hour == hours[1]] + [r for r in after if r.hour != hours[1]]
        _assert_equal(_live(owner), sorted(mixed, key=lambda r: (r.hour, r.tenant_id, r.project_id)))

        refresh_hour(settings, hours[1])
        _assert_equal(_live(owner), after)
    finally:
        owner.close()


def test_live_view_serves_settled_hours_from_the_rollup_tables(settings: Settings, hours: Hours) -> None:
    """A settled hour is read from iot.rollup_hourly (its computed_at), unsettled ones are computed now;
    rows the open hour's materialization wrote are not served twice."""
    _seed(settings, hours, count=6)
    refresh_hour(settings, hours[0])
    refresh_hour(settings, hours[5])
    owner = connect(settings)
    try:
        with owner.cursor() as cur:
            cur.execute("SELECT hour, count(*), bool_and(computed_at = now()) FROM iot.rollup_hourly_live GROUP BY 1 ORDER BY 1")
            per_hour = cur.fetchall()
            cur.execute("SELECT count(*) FROM iot.rollup_hourly WHERE hour = %s", (hours[5],))
            materialized_open = cur.fetchone()[0]
    finally:
        owner.close()
    assert [h for h, _, _ in per_hour] == list(hours.starts)
    assert [live for _, _, live in per_hour] == [False, True, True, True, True, True]
    assert materialized_open == per_hour[5][1] == 3  # three groups in the table and three (not six) in the view


@pytest.fixture
def logins(settings: Settings, hours: Hours, postgres_server: Any) -> Iterator[tuple[Settings, dict[str, str]]]:
    with private_roles(settings, postgres_server.admin_dsn, KEY) as synced:
        _seed(synced, hours, count=6)
        refresh_hour(synced, hours[0])
        result = sync_tenants(synced)
        yield synced, {**dict(result.roles), "analyst": synced.analyst_role}


def _login(settings: Settings, role: str) -> Any:
    return psycopg2.connect(host=settings.pg_host, port=settings.pg_port, dbname=settings.pg_database, user=role,
                            password=derive_password(KEY, role), connect_timeout=10)


def test_tenants_see_only_their_rows_through_the_live_views(logins: tuple[Settings, dict[str, str]], hours: Hours) -> None:
    """security_invoker views: a tenant's role sees its own settled and live rows only; the analyst sees all."""
    settings, roles = logins
    expected = _recompute(settings)
    for who, tenants in (("acme", {"acme"}), ("globex", {"globex"}), ("analyst", {"acme", "globex"})):
        conn = _login(settings, roles[who])
        try:
            main, fields = _live(conn)
        finally:
            conn.close()
        assert {row[1] for row in main} == {row[1] for row in fields} == tenants, who
        assert {row[0] for row in main} == set(hours.starts), who  # settled hour [0] and live hours alike
        _assert_equal((main, fields), [r for r in expected if r.tenant_id in tenants])

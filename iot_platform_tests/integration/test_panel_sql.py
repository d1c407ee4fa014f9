"""Every dashboard query, with Grafana's macros expanded for a concrete range, runs on the real schema
and returns the rows the test wrote."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg2
import pytest
from pydantic import SecretStr

from iot_platform.dashboards.macros import Expansion, Variable, expand
from iot_platform.dashboards.overview import PLATFORM_OVERVIEW
from iot_platform.dashboards.tenant_telemetry import TENANT_TELEMETRY
from iot_platform.settings import Settings
from iot_platform.storage.db import connect
from iot_platform.storage.migrate import apply_migrations
from iot_platform.storage.rollup_sql import refresh_hour
from iot_platform.storage.tenant_identity import derive_password
from iot_platform.storage.tenants import sync_tenants
from iot_platform_tests.helpers import drop_roles

pytestmark = pytest.mark.integration

NOW = datetime.now(timezone.utc)
H0 = NOW.replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
H1 = H0 + timedelta(hours=1)
HC = NOW.replace(minute=0, second=0, microsecond=0)  # the current, open hour
RANGE = dict(start=H0 - timedelta(hours=1), end=NOW + timedelta(hours=1), interval=timedelta(minutes=1))
# H0 is rolled up (read from the rollup tables); H1 and the current hour are aggregated live from raw rows.
MESSAGES = [("acme", "p1", H0 + timedelta(minutes=1), 0, 1, {"temp": 20}),
            ("acme", "p1", H0 + timedelta(minutes=2), 0, 2, {"temp": 22}),
            ("acme", "p1", H1 + timedelta(minutes=1), 0, 3, {"temp": 30}),
            ("beta", "p2", H0 + timedelta(minutes=5), 1, 1, {"hum": 50}),
            ("acme", "p1", HC, 0, 4, {"temp": 40})]


def _write_fixture_rows(settings: Settings, conn: Any) -> None:
    with conn.cursor() as cur:  # the registry says who is a tenant (tenants sync)
        cur.execute("INSERT INTO iot.tenants (tenant_id) VALUES ('acme'), ('beta')")
    with conn.cursor() as cur:
        for tenant, project, received, partition, offset, document in MESSAGES:
            cur.execute(
                "INSERT INTO iot.messages (tenant_id, project_id, mqtt_topic, payload, payload_json, device_id, received_at,"
                " kafka_partition, kafka_offset, ingested_at) VALUES (%s, %s, %s, %s, %s, 'd1', %s, %s, %s, %s)",
                (tenant, project, f"mtic/msg/client/realtime/{tenant}/{project}", json.dumps(document).encode(),
                 json.dumps(document), received, partition, offset, received + timedelta(seconds=2)))
        for reason, source, tenant, offset in (("bad_topic", "bridge", None, 1), ("bad_topic", "bridge", None, 2),
                                               ("too_large", "bridge", "acme", 3)):
            cur.execute(
                "INSERT INTO iot.dead_letters (reason, source, mqtt_topic, tenant_id, payload, received_at, kafka_topic,"
                " kafka_partition, kafka_offset, dead_lettered_at) VALUES (%s, %s, 'x/y', %s, 'p', %s, 'dlq', 0, %s, %s)",
                (reason, source, tenant, H0, offset, H0 + timedelta(minutes=offset)))
        cur.execute("INSERT INTO iot.ingest_offsets (topic, partition, next_offset) VALUES ('t', 0, 4), ('t', 1, 2)")
    conn.commit()
    refresh_hour(settings, H0)


@pytest.fixture
def database(settings: Settings) -> Iterator[Any]:
    apply_migrations(settings)
    conn = connect(settings)
    _write_fixture_rows(settings, conn)
    try:
        yield conn
    finally:
        conn.close()


def _run(conn: Any, query: str, expansion: Expansion) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(expand(query, expansion).replace("%", "%%"))
        rows = cur.fetchall()
    conn.rollback()
    return rows


def _by_title(dashboard: Any, conn: Any, expansion: Expansion) -> dict[str, list[tuple[Any, ...]]]:
    return {panel.title: _run(conn, panel.sql, expansion) for panel in dashboard.panels()}


def test_platform_overview_panels_return_the_written_rows(database: Any) -> None:
    """Each overview panel returns rows, and the counts, bytes, reasons and delays are the ones written,
    the current hour's included."""
    rows = _by_title(PLATFORM_OVERVIEW, database, Expansion(**RANGE))
    assert all(rows.values()), [title for title, result in rows.items() if not result]
    assert round(sum(float(r[1]) for r in rows["Message rate"]) * 60) == 5
    per_tenant = {(int(r[0]), r[1]): int(r[2]) for r in rows["Messages per tenant (hourly)"]}
    assert per_tenant == {(int(H0.timestamp()), "acme"): 2, (int(H1.timestamp()), "acme"): 1,
                          (int(H0.timestamp()), "beta"): 1, (int(HC.timestamp()), "acme"): 1}
    per_tenant_bytes = {(int(r[0]), r[1]): int(r[2]) for r in rows["Payload bytes per tenant (hourly)"]}
    assert per_tenant_bytes == {(int(H0.timestamp()), "acme"): 24, (int(H1.timestamp()), "acme"): 12,
                                (int(H0.timestamp()), "beta"): 11, (int(HC.timestamp()), "acme"): 12}
    assert [(r[0], r[1], int(r[2]), int(r[3]), r[5]) for r in rows["Tenants and projects"]] == [
        ("acme", "p1", 4, 48, HC), ("beta", "p2", 1, 11, H0)]
    reasons: dict[str, int] = {}
    for r in rows["Dead letters by reason"]:
        reasons[r[1]] = reasons.get(r[1], 0) + int(r[2])
    assert reasons == {"bad_topic": 2, "too_large": 1}
    assert {(r[0], r[2], int(r[3])) for r in rows["Dead letters: totals"]} == {("bad_topic", "(unknown)", 2), ("too_large", "acme", 1)}
    assert max(float(r[2]) for r in rows["Consumer delay (received to stored)"]) == pytest.approx(2.0)
    assert [(r[0], r[1], r[2]) for r in rows["Consumer offsets per partition"]] == [("t", 0, 4), ("t", 1, 2)]
    newest_age = (datetime.now(timezone.utc) - max(m[2] for m in MESSAGES)).total_seconds()  # the newest row written
    assert float(rows["Newest message age"][0][0]) == pytest.approx(newest_age, abs=120)
    assert 0 <= float(rows["Last rollup run"][0][0]) < 300  # the rollup rows were written just now
    assert {(r[0], r[1]) for r in rows["Freshness per tenant and project"]} == {("acme", "p1"), ("beta", "p2")}


def test_tenant_telemetry_variables_and_panels(database: Any) -> None:
    """The variables list the written tenants, projects and fields; panels return that tenant's rollups only,
    the live hours (H1, current) next to the rolled-up one (H0)."""
    bare = Expansion(**RANGE)
    assert _run(database, TENANT_TELEMETRY.variables[0].sql, bare) == [("acme",), ("beta",)]
    scope = {"tenant": Variable(("acme",))}
    assert _run(database, TENANT_TELEMETRY.variables[1].sql, Expansion(**RANGE, variables=scope)) == [("p1",)]
    scope["project"] = Variable(("p1",), multi=True)
    assert _run(database, TENANT_TELEMETRY.variables[2].sql, Expansion(**RANGE, variables=scope)) == [("temp",)]
    scope["field"] = Variable(("temp",), multi=True)
    rows = _by_title(TENANT_TELEMETRY, database, Expansion(**RANGE, variables=scope))
    assert all(rows.values()), [title for title, result in rows.items() if not result]
    assert {(int(r[0]), r[1], int(r[2])) for r in rows["Messages per hour"]} == {
        (int(H0.timestamp()), "p1", 2), (int(H1.timestamp()), "p1", 1), (int(HC.timestamp()), "p1", 1)}
    assert [(float(r[1]), float(r[2]), float(r[3])) for r in rows["$field"]] == [
        (21.0, 20.0, 22.0), (30.0, 30.0, 30.0), (40.0, 40.0, 40.0)]
    summary = rows["Fields over the range"]
    assert [(r[0], r[1], int(r[2]), float(r[3]), float(r[4]), float(r[5])) for r in summary] == [("p1", "temp", 4, 20.0, 28.0, 40.0)]


def test_tenant_telemetry_as_a_tenant_role_sees_only_that_tenant(database: Any, settings: Settings, postgres_server: Any) -> None:
    """Through a tenant's role (as its Grafana organisation queries), $tenant offers only that tenant and
    selecting another tenant returns nothing."""
    tag = uuid.uuid4().hex[:8]
    synced = settings.model_copy(update={"tenant_role_prefix": f"t{tag}_", "tenant_password_key": SecretStr("k"),
                                         "analyst_role": f"analyst_{tag}", "ingest_role": f"ingest_{tag}"})
    result = sync_tenants(synced)
    roles = dict(result.roles)
    try:
        conn = psycopg2.connect(host=settings.pg_host, port=settings.pg_port, dbname=settings.pg_database,
                                user=roles["beta"], password=derive_password("k", roles["beta"]), connect_timeout=10)
        try:
            assert _run(conn, TENANT_TELEMETRY.variables[0].sql, Expansion(**RANGE)) == [("beta",)]
            other = {"tenant": Variable(("acme",)), "project": Variable(("p1",), multi=True), "field": Variable(("temp",), multi=True)}
            for panel in TENANT_TELEMETRY.panels():
                assert _run(conn, panel.sql, Expansion(**RANGE, variables=other)) == [], panel.title
            own = {"tenant": Variable(("beta",)), "project": Variable(("p2",), multi=True), "field": Variable(("hum",), multi=True)}
            assert _run(conn, TENANT_TELEMETRY.panels().__next__().sql, Expansion(**RANGE, variables=own))
        finally:
            conn.close()
    finally:
        drop_roles(postgres_server.admin_dsn, settings.pg_database, [r for _, r in result.roles] + list(result.roles_created))



"""Tenant isolation on the real database: a tenant's role sees only its rows in every table and view,
and no escape (set_config, SET ROLE, RESET ROLE, another role's view or function, partitions) shows more."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg2
import psycopg2.errors
import pytest
from psycopg2 import sql
from pydantic import SecretStr

from iot_platform.settings import Settings
from iot_platform.storage.db import connect
from iot_platform.storage.migrate import apply_migrations
from iot_platform.storage.tenant_identity import derive_password
from iot_platform.storage.tenants import TenantSyncError, sync_tenants
from iot_platform_tests.helpers import drop_roles

pytestmark = pytest.mark.integration

KEY = "test-password-key"
NOW = datetime.now(timezone.utc)
HOUR = NOW.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)


@dataclass(frozen=True)
class World:
    settings: Settings
    tenant_a: str
    tenant_b: str
    role_a: str
    role_b: str
    admin_dsn: str

    def login(self, role: str) -> Any:
        conn = psycopg2.connect(host=self.settings.pg_host, port=self.settings.pg_port, dbname=self.settings.pg_database,
                                user=role, password=derive_password(KEY, role), connect_timeout=10)
        conn.autocommit = True
        return conn


def _write_rows(conn: Any, tenant: str, offset: int) -> None:
    with conn.cursor() as cur:
        cur.execute("INSERT INTO iot.tenants (tenant_id) VALUES (%s) ON CONFLICT DO NOTHING", (tenant,))
        cur.execute("INSERT INTO iot.messages (tenant_id, project_id, mqtt_topic, payload, payload_json, message_id, received_at,"
                    " kafka_partition, kafka_offset) VALUES (%s, 'p', 't', '{\"f\": 1}', '{\"f\": 1}', %s, %s, 0, %s)",
                    (tenant, f"m{offset}", NOW - timedelta(minutes=5), offset))
        cur.execute("INSERT INTO iot.message_ids (tenant_id, message_id, received_at, kafka_partition, kafka_offset)"
                    " VALUES (%s, %s, %s, 0, %s)", (tenant, f"m{offset}", NOW - timedelta(minutes=5), offset))
        cur.execute("INSERT INTO iot.duplicate_messages (kafka_partition, kafka_offset, tenant_id, message_id, received_at)"
                    " VALUES (1, %s, %s, %s, %s)", (offset, tenant, f"m{offset}", NOW))
        cur.execute("INSERT INTO iot.dead_letters (reason, source, mqtt_topic, tenant_id, payload, received_at, kafka_topic,"
                    " kafka_partition, kafka_offset) VALUES ('r', 'consumer', 't', %s, 'x', %s, 'k', 0, %s)", (tenant, NOW, offset))
        cur.execute("INSERT INTO iot.rollup_hourly (hour, tenant_id, project_id, message_count, payload_bytes, distinct_devices)"
                    " VALUES (%s, %s, 'p', 1, 1, 1)", (HOUR, tenant))
        cur.execute("INSERT INTO iot.rollup_hourly_fields (hour, tenant_id, project_id, field, value_count, min_value, max_value,"
                    " avg_value, sum_value) VALUES (%s, %s, 'p', 'f', 1, 1, 1, 1, 1)", (HOUR, tenant))
    conn.commit()


@pytest.fixture
def world(settings: Settings, postgres_server: Any) -> Iterator[World]:
    tag = uuid.uuid4().hex[:8]
    synced = settings.model_copy(update={"tenant_role_prefix": f"t{tag}_", "tenant_password_key": SecretStr(KEY),
                                         "analyst_role": f"analyst_{tag}", "ingest_role": f"ingest_{tag}"})
    apply_migrations(synced)
    conn = connect(synced)
    tenant_a, tenant_b = f"A{tag}", f"b{tag}"
    _write_rows(conn, tenant_a, 1)
    _write_rows(conn, tenant_b, 2)
    conn.close()
    result = sync_tenants(synced)
    roles = dict(result.roles)
    try:
        yield World(synced, tenant_a, tenant_b, roles[tenant_a], roles[tenant_b], postgres_server.admin_dsn)
    finally:
        drop_roles(postgres_server.admin_dsn, settings.pg_database,
                    list(roles.values()) + [synced.analyst_role, synced.ingest_role])


def _tenant_relations(conn: Any) -> list[str]:
    """Every table and view of schema iot with a tenant_id column."""
    with conn.cursor() as cur:
        cur.execute("SELECT DISTINCT format('%I.%I', 'iot', c.relname) FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid"
                    " WHERE c.relnamespace = 'iot'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')"
                    " AND a.attname = 'tenant_id' AND NOT c.relispartition ORDER BY 1")
        return [r[0] for r in cur.fetchall()]


def _tenants_seen(conn: Any, relation: str) -> set[str] | None:
    """Tenants visible in ``relation``, or None when reading it is denied."""
    with conn.cursor() as cur:
        try:
            cur.execute(f"SELECT DISTINCT tenant_id FROM {relation}")
        except psycopg2.errors.InsufficientPrivilege:
            return None
        return {r[0] for r in cur.fetchall()}


def _messages_seen(conn: Any) -> set[str]:
    with conn.cursor() as cur:
        cur.execute("SELECT DISTINCT tenant_id FROM iot.messages")
        return {r[0] for r in cur.fetchall()}


def test_every_tenant_table_shows_only_own_rows(world: World) -> None:
    """As tenant A's role, every table and view holding tenant data shows A's rows only (or is not readable)."""
    owner = connect(world.settings)
    relations = _tenant_relations(owner)
    owner.close()
    assert {"iot.messages", "iot.dead_letters", "iot.rollup_hourly", "iot.rollup_hourly_fields"} <= set(relations)
    conn = world.login(world.role_a)
    try:
        seen = {relation: _tenants_seen(conn, relation) for relation in relations}
    finally:
        conn.close()
    for relation in ("iot.messages", "iot.dead_letters", "iot.rollup_hourly", "iot.rollup_hourly_fields", "iot.tenant_roles"):
        assert seen[relation] == {world.tenant_a}, relation
    assert all(tenants in (None, {world.tenant_a}) for tenants in seen.values()), seen


def test_session_and_role_escapes_show_nothing_more(world: World) -> None:
    """set_config, SET ROLE to a group or another tenant, RESET ROLE and session variables never widen the view."""
    conn = world.login(world.role_a)
    try:
        with conn.cursor() as cur:
            for statement in ("SELECT set_config('role', 'iot_analyst', false)", "SET ROLE iot_analyst",
                              "SET ROLE iot_ingest", f'SET ROLE "{world.role_b}"', f"SET ROLE {world.settings.pg_user}",
                              f"SET SESSION AUTHORIZATION {world.settings.pg_user}"):
                with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                    cur.execute(statement)
            cur.execute("SELECT set_config('iot.tenant_id', %s, false)", (world.tenant_b,))
            cur.execute("SET application_name = 'iot_analyst'")
            assert _messages_seen(conn) == {world.tenant_a}
            cur.execute("SET ROLE iot_tenant_reader")  # a group it belongs to: entitled to no tenant
            assert _messages_seen(conn) == set()
            cur.execute("RESET ROLE")
            assert _messages_seen(conn) == {world.tenant_a}
            for statement in ("INSERT INTO iot.messages (tenant_id, project_id, mqtt_topic, payload, received_at,"
                              " kafka_partition, kafka_offset) VALUES ('x', 'p', 't', 'x', now(), 9, 9)",
                              f"INSERT INTO iot.tenant_roles (role_name, tenant_id) VALUES ('{world.role_a}', '{world.tenant_b}')",
                              "DELETE FROM iot.rollup_hourly", "SELECT * FROM iot.ingest_offsets",
                              "CREATE TABLE iot.mine (x int)"):
                with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                    cur.execute(statement)
    finally:
        conn.close()


def test_partitions_cannot_be_read_directly(world: World) -> None:
    """Row-level security applies through the parent only, so partitions of iot.messages are not readable at all."""
    owner = connect(world.settings)
    with owner.cursor() as cur:
        cur.execute("SELECT format('%I.%I', n.nspname, c.relname) FROM pg_partition_tree('iot.messages') t"
                    " JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE t.level > 0")
        partitions = [r[0] for r in cur.fetchall()]
    owner.close()
    assert partitions
    conn = world.login(world.role_a)
    try:
        for partition in partitions:
            assert _tenants_seen(conn, partition) is None, partition
    finally:
        conn.close()


def test_views_and_definer_functions_of_the_platform_leak_nothing(world: World) -> None:
    """A view (not security_invoker) or a SECURITY DEFINER function owned by the platform role, shared with a
    tenant, still shows that tenant only its own rows."""
    owner = connect(world.settings)
    with owner.cursor() as cur:
        cur.execute("CREATE VIEW public.all_messages AS SELECT tenant_id FROM iot.messages")
        cur.execute("CREATE FUNCTION public.all_tenants() RETURNS SETOF text LANGUAGE sql SECURITY DEFINER"
                    " AS 'SELECT tenant_id FROM iot.messages'")
        cur.execute(sql.SQL("GRANT SELECT ON public.all_messages TO {}").format(sql.Identifier(world.role_a)))
        cur.execute("SELECT DISTINCT * FROM public.all_tenants()")
        assert {r[0] for r in cur.fetchall()} == {world.tenant_a, world.tenant_b}  # the owner sees all
    owner.commit()
    owner.close()
    conn = world.login(world.role_a)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT DISTINCT tenant_id FROM public.all_messages")
            assert {r[0] for r in cur.fetchall()} == {world.tenant_a}
            cur.execute("SELECT DISTINCT * FROM public.all_tenants()")
            assert {r[0] for r in cur.fetchall()} == {world.tenant_a}
    finally:
        conn.close()


def test_platform_analyst_and_ingest_roles_keep_working(world: World) -> None:
    """FORCE RLS leaves the owner (consumer, Dagster) and the analyst every row; ingest writes what the consumer
    writes, creates day partitions through the owner's function, and reads nothing else."""
    owner = connect(world.settings)
    with owner.cursor() as cur:
        cur.execute("SELECT count(DISTINCT tenant_id) FROM iot.messages")
        assert cur.fetchone()[0] == 2
        cur.execute("DELETE FROM iot.rollup_hourly WHERE tenant_id = %s", (world.tenant_b,))
        assert cur.rowcount == 1
    owner.rollback()
    owner.close()
    analyst = world.login(world.settings.analyst_role)
    try:
        assert _messages_seen(analyst) == {world.tenant_a, world.tenant_b}
        with analyst.cursor() as cur, pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute("DELETE FROM iot.messages")
    finally:
        analyst.close()
    ingest = world.login(world.settings.ingest_role)
    try:
        with ingest.cursor() as cur:
            cur.execute("SELECT iot.ensure_messages_partition((now() + interval '20 days')::date)")
            cur.execute("INSERT INTO iot.messages (tenant_id, project_id, mqtt_topic, payload, received_at, kafka_partition,"
                        " kafka_offset) VALUES ('new', 'p', 't', 'x', now() + interval '20 days', 5, 5)")
            cur.execute("INSERT INTO iot.ingest_offsets (topic, partition, next_offset) VALUES ('k', 0, 6)"
                        " ON CONFLICT (topic, partition) DO UPDATE SET next_offset = excluded.next_offset")
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute("SELECT * FROM iot.rollup_hourly")
    finally:
        ingest.close()


def test_the_consumer_writes_as_the_ingest_role_and_ingest_cannot_read_a_partition(world: World) -> None:
    """The writer, logged in as the ingest role, copies rows straight into a new day partition and
    claims their ids (and a copy of an id still takes the conflict-safe path); ingest holds INSERT
    on partitions, never SELECT."""
    from iot_platform.consumer.pending import make_batch
    from iot_platform.consumer.records import MessageRow
    from iot_platform.consumer.writer import BatchWriter

    role = world.settings.ingest_role
    as_ingest = world.settings.model_copy(update={"pg_user": role, "pg_password": SecretStr(derive_password(KEY, role))})
    day_ms = int((NOW + timedelta(days=30)).timestamp() * 1000)  # a day no partition exists for yet

    def row(offset: int, message_id: str) -> MessageRow:
        return MessageRow("ing", "p", "mtic/msg/client/realtime/ing/p/d", b'{"a": 1}', '{"a": 1}', message_id, None, None,
                          day_ms + offset, 3, offset)

    writer = BatchWriter(as_ingest)
    try:
        first = writer.write(make_batch([row(0, "m0"), row(1, "m1")], as_ingest.kafka_topic))
        again = writer.write(make_batch([row(2, "m1"), row(3, "m3")], as_ingest.kafka_topic))  # m1 is a copy
    finally:
        writer.close()
    assert (first.inserted, first.duplicates_message_id) == (2, 0)
    assert (again.inserted, again.duplicates_message_id) == (1, 1)
    owner = connect(world.settings, autocommit=True)
    try:
        with owner.cursor() as cur:
            cur.execute("SELECT kafka_offset, payload_json FROM iot.messages WHERE tenant_id = 'ing' ORDER BY 1")
            assert cur.fetchall() == [(0, {"a": 1}), (1, {"a": 1}), (3, {"a": 1})]
            cur.execute("SELECT format('%I.%I', c.relnamespace::regnamespace, c.relname) FROM iot.messages m"
                        " JOIN pg_class c ON c.oid = m.tableoid WHERE m.tenant_id = 'ing' LIMIT 1")
            partition = cur.fetchone()[0]
    finally:
        owner.close()
    ingest = world.login(role)
    try:
        with ingest.cursor() as cur, pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute(sql.SQL("SELECT * FROM {}").format(sql.SQL(partition)))
    finally:
        ingest.close()

    # A privilege missing is the deployment's fault, never a row's: the write fails whole (the sink
    # retries it), and no row is bisected into a dead letter.
    owner = connect(world.settings, autocommit=True)
    try:
        with owner.cursor() as cur:
            cur.execute(sql.SQL("REVOKE INSERT ON {} FROM iot_ingest").format(sql.SQL(partition)))
        writer = BatchWriter(as_ingest)
        try:
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                writer.write(make_batch([row(4, "m4"), row(5, "m5")], as_ingest.kafka_topic))
        finally:
            writer.close()
        with owner.cursor() as cur:
            cur.execute(sql.SQL("GRANT INSERT ON {} TO iot_ingest").format(sql.SQL(partition)))
            cur.execute("SELECT count(*) FROM iot.dead_letters WHERE tenant_id = 'ing'")
            assert cur.fetchone()[0] == 0
            cur.execute("SELECT count(*) FROM iot.messages WHERE tenant_id = 'ing'")
            assert cur.fetchone()[0] == 3
            cur.execute("SELECT next_offset FROM iot.ingest_offsets WHERE topic = %s AND partition = 3", (as_ingest.kafka_topic,))
            assert cur.fetchone()[0] == 4
    finally:
        owner.close()


def test_sync_is_idempotent_and_refuses_dangerous_roles(world: World) -> None:
    """A second sync creates nothing (a tenant seen only in the data is not in the registry: no role);
    a pre-existing role with CREATEROLE is never adopted as a tenant role."""
    _write_rows_unregistered = "INSERT INTO iot.rollup_hourly (hour, tenant_id, project_id, message_count, payload_bytes, distinct_devices) VALUES (%s, 'yy', 'p', 1, 1, 1)"
    with connect(world.settings, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(_write_rows_unregistered, (HOUR,))
    again = sync_tenants(world.settings)
    assert again.roles_created == () and dict(again.roles)[world.tenant_a] == world.role_a
    assert "yy" not in dict(again.roles)
    intruder = f"{world.settings.tenant_role_prefix}zz"
    owner = connect(world.settings, autocommit=True)
    try:
        with owner.cursor() as cur:
            cur.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEROLE").format(sql.Identifier(intruder)))
            cur.execute("INSERT INTO iot.tenants (tenant_id) VALUES ('zz')")
        with pytest.raises(TenantSyncError):
            sync_tenants(world.settings)
        with owner.cursor() as cur:
            cur.execute("SELECT count(*) FROM iot.tenant_roles WHERE tenant_id = 'zz'")
            assert cur.fetchone()[0] == 0
    finally:
        owner.close()
        drop_roles(world.admin_dsn, world.settings.pg_database, [intruder])


@pytest.mark.skipif(shutil.which("psql") is None, reason="psql is not installed")
def test_cli_sync_then_psql_as_tenant(world: World) -> None:
    """`iot-platform tenants sync`, then psql as a tenant role shows only that tenant's rows."""
    s = world.settings
    env = {**os.environ, "IOT_PG_HOST": s.pg_host, "IOT_PG_PORT": str(s.pg_port), "IOT_PG_DATABASE": s.pg_database,
           "IOT_PG_USER": s.pg_user, "IOT_PG_PASSWORD": s.pg_password.get_secret_value(), "IOT_TENANT_PASSWORD_KEY": KEY,
           "IOT_TENANT_ROLE_PREFIX": s.tenant_role_prefix, "IOT_ANALYST_ROLE": s.analyst_role,
           "IOT_INGEST_ROLE": s.ingest_role, "IOT_HOME": str(s.home)}
    env.pop("IOT_GRAFANA_URL", None)
    sync = subprocess.run([sys.executable, "-m", "iot_platform.cli", "tenants", "sync"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert sync.returncode == 0, sync.stderr
    assert f"{world.tenant_b}\t{world.role_b}" in sync.stdout
    password = subprocess.run([sys.executable, "-m", "iot_platform.cli", "tenants", "password", "--tenant", world.tenant_b],
                              env=env, capture_output=True, text=True, timeout=60)
    role, secret = password.stdout.strip().split("\t")
    assert role == world.role_b
    psql = subprocess.run(["psql", "-X", "-A", "-t", "-h", s.pg_host, "-p", str(s.pg_port), "-U", role, "-d", s.pg_database,
                           "-c", "SELECT DISTINCT tenant_id FROM iot.messages UNION ALL SELECT DISTINCT tenant_id FROM iot.rollup_hourly"],
                          env={**env, "PGPASSWORD": secret, "PGCONNECT_TIMEOUT": "10"}, capture_output=True, text=True, timeout=60)
    assert psql.returncode == 0, psql.stderr
    assert psql.stdout.split() == [world.tenant_b, world.tenant_b]

"""Migrations on a real PostgreSQL: ordered, recorded, idempotent, safe under concurrent callers."""

from __future__ import annotations

import datetime as dt
import logging
from concurrent.futures import ThreadPoolExecutor

import psycopg2
from psycopg2 import sql
import pytest

from iot_platform.settings import Settings
from iot_platform.stack.databases import drop_database
from iot_platform.stack.postgres import PostgresServer
from iot_platform.storage.db import connect
from iot_platform.storage.migrate import apply_migrations, ensure_day_partitions, ensure_partitions, load_migrations

pytestmark = pytest.mark.integration


def test_apply_twice_applies_once(settings: Settings) -> None:
    """The first call applies every file in order and records it; the second applies nothing."""
    first = apply_migrations(settings)
    assert first == [m.name for m in load_migrations()]
    assert apply_migrations(settings) == []
    with connect(settings) as conn, conn.cursor() as cur:
        cur.execute("SELECT name FROM iot.schema_migrations ORDER BY name")
        assert [r[0] for r in cur.fetchall()] == sorted(first)
        for table in ("messages", "message_ids", "duplicate_messages", "dead_letters", "ingest_offsets"):
            cur.execute("SELECT to_regclass(%s) IS NOT NULL", (f"iot.{table}",))
            assert cur.fetchone()[0], table
    conn.close()


def test_concurrent_callers_apply_each_file_once(settings: Settings) -> None:
    """Four simultaneous callers: together they apply each migration exactly once, and none fails."""
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: apply_migrations(settings), range(4)))
    applied = [name for result in results for name in result]
    assert sorted(applied) == sorted(m.name for m in load_migrations())


def test_partitions_ahead_and_on_demand(settings: Settings) -> None:
    """Day partitions exist from yesterday to N days ahead; an old day (replay) is created on demand,
    and a row of that day lands in it."""
    apply_migrations(settings, partitions_ahead_days=2)
    conn = connect(settings)
    try:
        today = dt.datetime.now(dt.timezone.utc).date()
        names = ensure_partitions(conn, 2)
        assert names == [f"iot.messages_p{(today + dt.timedelta(days=n)):%Y%m%d}" for n in range(-1, 3)]
        old = dt.date(2020, 2, 29)
        assert ensure_day_partitions(conn, [old, old]) == ["iot.messages_p20200229"]
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO iot.messages (tenant_id, project_id, mqtt_topic, payload, received_at, kafka_partition, kafka_offset)"
                " VALUES ('t', 'p', 'x', '\\x00'::bytea, '2020-02-29 23:59:59.999+00', 0, 1)"
            )
            cur.execute("SELECT count(*) FROM iot.messages_p20200229")
            assert cur.fetchone()[0] == 1
        conn.commit()
        with conn.cursor() as cur, pytest.raises(psycopg2.errors.CheckViolation):
            cur.execute(
                "INSERT INTO iot.messages (tenant_id, project_id, mqtt_topic, payload, received_at, kafka_partition, kafka_offset)"
                " VALUES ('t', 'p', 'x', '', '2019-01-01 00:00+00', 0, 2)"
            )
        conn.rollback()
    finally:
        conn.close()


def test_connect_sets_statement_timeout(settings: Settings) -> None:
    """Every connection carries the configured statement_timeout."""
    conn = connect(settings.model_copy(update={"pg_statement_timeout_ms": 1234}))
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW statement_timeout")
            assert cur.fetchone()[0] == "1234ms"
            with pytest.raises(psycopg2.errors.QueryCanceled):
                cur.execute("SELECT pg_sleep(3)")
    finally:
        conn.close()


def test_the_insert_path_maintains_only_the_indexes_it_needs(settings: Settings) -> None:
    """Every index of iot.messages and iot.message_ids costs the consumer on each row (070): this is the
    whole list, so a new one is a decision, not an accident."""
    apply_migrations(settings)
    with connect(settings) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'iot' AND tablename IN ('messages', 'message_ids')"
        )
        found = {(table, name): definition for table, name, definition in cur.fetchall()}
    conn.close()
    assert sorted(found) == [
        ("message_ids", "message_ids_pkey"),  # the deduplication claim (tenant, message id)
        ("message_ids", "message_ids_received_at_brin"),  # retention's delete by time
        ("messages", "messages_kafka_record_key"),  # the replay fence's ON CONFLICT
        ("messages", "messages_received_at_brin"),  # rollups, retention, checks: a time range
        ("messages", "messages_tenant_project_time"),  # a tenant's (and project's) rows by time
    ]
    assert "USING brin" in found[("message_ids", "message_ids_received_at_brin")]


def test_the_platform_database_compares_text_bytewise(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    """The embedded server's databases have collation C (stack/postgres.py): migrating one says nothing."""
    with caplog.at_level(logging.WARNING, logger="iot_platform.storage.migrate"):
        apply_migrations(settings)
    with connect(settings) as conn, conn.cursor() as cur:
        cur.execute("SELECT datcollate FROM pg_database WHERE datname = current_database()")
        assert cur.fetchone() == ("C",)
    conn.close()
    assert not [r for r in caplog.records if "collation" in r.getMessage()]


def test_migrating_a_database_with_another_collation_says_what_it_costs(
    settings: Settings, postgres_server: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A database created under a C library collation (C.UTF-8 here, a distribution's en_US.UTF-8
    elsewhere) works, and migrating it warns once, naming the collation and the fix."""
    other = settings.model_copy(update={"pg_database": f"{settings.pg_database}_utf8"})
    admin = psycopg2.connect(postgres_server.admin_dsn)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(
                sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0 LC_COLLATE 'C.UTF-8'").format(
                    sql.Identifier(other.pg_database), sql.Identifier(other.pg_user)
                )
            )
        with caplog.at_level(logging.WARNING, logger="iot_platform.storage.migrate"):
            assert apply_migrations(other) == [m.name for m in load_migrations()]
        warnings = [r for r in caplog.records if "collation" in r.getMessage()]
        assert len(warnings) == 1 and warnings[0].collation == "C.UTF-8"  # type: ignore[attr-defined]
        assert "LC_COLLATE 'C'" in warnings[0].getMessage()
    finally:
        admin.close()
        drop_database(postgres_server.admin_dsn, other.pg_database)

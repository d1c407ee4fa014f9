"""Dagster assets and checks against a real PostgreSQL: schema, rollups, retention, completeness."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone

import dagster as dg
import pytest
from pydantic import SecretStr

from iot_platform.core.rollup_math import RawMessage, hour_of, rollup
from iot_platform.orchestration.assets.rollup_assets import PARTITION_FORMAT, iot_rollup_hourly
from iot_platform.orchestration.assets.storage import iot_retention, iot_schema
from iot_platform.orchestration.checks import kafka_offsets_all_stored, rollup_hour_matches_raw
from iot_platform.orchestration.definitions import defs
from iot_platform.orchestration.resources import platform_resources
from iot_platform.settings import Settings
from iot_platform.storage.db import connect
from iot_platform.storage.migrate import ensure_day_partitions
from iot_platform_tests.unit.test_dashboards_grafana_http import FakeGrafanaState, fake_grafana  # noqa: F401 - fixture

pytestmark = pytest.mark.integration
UTC = timezone.utc

PAYLOADS = [
    {"temp": 21.5, "hum": 40, "device": "d1"},
    {"temp": 23.0, "on": True, "label": "x"},
    {"temp": -4.25, "volt": 3.3, "nested": {"temp": 99}},
    {"big": 1e300, "tiny": 1e-300, "ok": 0},
    [1, 2, 3],
    "not an object",
]


def resources(settings: Settings) -> dict[str, object]:
    return platform_resources(settings)


def materialize(settings: Settings, assets: list, **kwargs: object) -> dg.ExecuteInProcessResult:  # type: ignore[type-arg]
    with dg.DagsterInstance.ephemeral() as instance:
        return dg.materialize(assets, resources=resources(settings), instance=instance, **kwargs)


def insert_message(cur, received_at: datetime, *, partition: int, offset: int, tenant: str = "acme",  # type: ignore[no-untyped-def]
                   project: str = "plant1", device: str | None = "d1", payload: object = None,
                   raw: bytes | None = None) -> None:
    body = raw if raw is not None else json.dumps(payload).encode()
    try:
        as_json = json.dumps(json.loads(body))
    except ValueError:
        as_json = None
    cur.execute(
        "INSERT INTO iot.messages (tenant_id, project_id, mqtt_topic, payload, payload_json, device_id, received_at,"
        " kafka_partition, kafka_offset) VALUES (%s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s)",
        (tenant, project, f"mtic/msg/client/realtime/{tenant}/{project}", body, as_json, device, received_at, partition, offset),
    )


def rollup_rows(settings: Settings, hour: datetime) -> tuple[list[tuple], list[tuple]]:
    conn = connect(settings)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT * FROM iot.rollup_hourly WHERE hour = %s ORDER BY tenant_id, project_id", (hour,))
            main = cur.fetchall()
            cur.execute("SELECT * FROM iot.rollup_hourly_fields WHERE hour = %s ORDER BY tenant_id, project_id, field", (hour,))
            return main, cur.fetchall()
    finally:
        conn.close()


def raw_messages(settings: Settings, hour: datetime) -> list[RawMessage]:
    conn = connect(settings)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "SELECT tenant_id, project_id, device_id, payload_json::text, octet_length(payload), received_at"
                " FROM iot.messages WHERE received_at >= %s AND received_at < %s",
                (hour, hour + timedelta(hours=1)),
            )
            return [RawMessage(*row) for row in cur.fetchall()]
    finally:
        conn.close()


@pytest.fixture
def schema(settings: Settings) -> Settings:
    result = materialize(settings, [iot_schema])
    assert result.success
    return settings


def test_iot_schema_is_idempotent(settings: Settings) -> None:
    """The first materialization applies every migration, including 010 (rollups); the second applies none."""
    first = materialize(settings, [iot_schema]).asset_materializations_for_node("iot_schema")[0]
    second = materialize(settings, [iot_schema]).asset_materializations_for_node("iot_schema")[0]
    applied = first.metadata["applied_now"].value
    assert "010_rollup_hourly.sql" in applied and "011_messages_received_at_brin.sql" in applied
    assert second.metadata["applied_count"].value == 0


def test_rollup_of_current_hour_equals_raw_and_python_and_is_idempotent(schema: Settings) -> None:
    """Totals equal raw counts; SQL agrees with the pure module; re-running changes nothing, late data is absorbed."""
    settings = schema
    hour = hour_of(datetime.now(UTC))
    key = hour.strftime(PARTITION_FORMAT)
    conn = connect(settings)
    with conn, conn.cursor() as cur:
        for i in range(60):
            tenant, project = ("acme", "plant1") if i % 3 else ("globex", "site9")
            insert_message(cur, hour + timedelta(seconds=i), partition=i % 6, offset=i, tenant=tenant, project=project,
                           device=None if i % 7 == 0 else f"dev{i % 5}", payload=PAYLOADS[i % len(PAYLOADS)])
        insert_message(cur, hour + timedelta(seconds=61), partition=0, offset=100, raw=b"\x00\xffbinary")
        insert_message(cur, hour - timedelta(seconds=1), partition=0, offset=101, payload={"temp": 1000})  # previous hour
    conn.close()

    result = materialize(settings, [iot_rollup_hourly, rollup_hour_matches_raw], partition_key=key)
    assert result.success
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.passed and evaluation.metadata["raw_messages"].value == 61
    main, fields = rollup_rows(settings, hour)
    assert sum(row[3] for row in main) == 61

    expected = rollup(raw_messages(settings, hour))
    assert [(r.tenant_id, r.project_id, r.message_count, r.payload_bytes, r.distinct_devices) for r in expected] == [
        row[1:6] for row in main
    ]
    python_fields = [(r.tenant_id, r.project_id, name, s) for r in expected for name, s in r.fields.items()]
    assert [row[1:4] for row in fields] == [(t, p, n) for t, p, n, _ in python_fields]
    for row, (_, _, _, stats) in zip(fields, python_fields):
        assert row[4] == stats.value_count
        for got, want in zip(row[5:], (stats.min_value, stats.max_value, stats.avg_value, stats.sum_value)):
            assert math.isclose(got, want, rel_tol=1e-12), (row, stats)

    assert materialize(settings, [iot_rollup_hourly], partition_key=key).success
    assert rollup_rows(settings, hour) == (main, fields)  # identical, computed_at included

    conn = connect(settings)
    with conn, conn.cursor() as cur:
        insert_message(cur, hour + timedelta(seconds=30), partition=1, offset=200, tenant="initech", project="p", payload={"temp": 5})
    conn.close()
    result = materialize(settings, [iot_rollup_hourly, rollup_hour_matches_raw], partition_key=key)
    assert result.get_asset_check_evaluations()[0].passed
    main_after, _ = rollup_rows(settings, hour)
    assert sum(row[3] for row in main_after) == 62
    assert [row for row in main_after if row[1] != "initech"] == main  # other groups untouched


def test_retention_removes_only_rows_older_than_72_hours(schema: Settings) -> None:
    """Old day partitions are dropped, the boundary day trimmed; rows newer than 72 h are untouched."""
    settings = schema
    now = datetime.now(UTC)
    old_times = [now - timedelta(hours=h) for h in (200, 120, 97, 72.5)]
    new_times = [now - timedelta(hours=h) for h in (71.5, 48, 1)]
    conn = connect(settings)
    ensure_day_partitions(conn, [t.date() for t in old_times + new_times])
    with conn, conn.cursor() as cur:
        for i, at in enumerate(old_times + new_times):
            insert_message(cur, at, partition=0, offset=i, payload={"n": i})
            cur.execute(
                "INSERT INTO iot.dead_letters (reason, source, mqtt_topic, payload, received_at, kafka_topic,"
                " kafka_partition, kafka_offset) VALUES ('bad', 'bridge', 'x', 'x', %s, 'dlq', 0, %s)",
                (at, i),
            )
            cur.execute("INSERT INTO iot.message_ids VALUES ('acme', %s, %s, 0, %s)", (f"m{i}", at, i))
            cur.execute(
                "INSERT INTO iot.duplicate_messages (kafka_partition, kafka_offset, tenant_id, message_id, received_at)"
                " VALUES (1, %s, 'acme', %s, %s)",
                (i, f"m{i}", at),
            )
        cur.execute("SELECT relname FROM pg_inherits JOIN pg_class ON oid = inhrelid WHERE inhparent = 'iot.messages'::regclass")
        before = {name for (name,) in cur.fetchall()}
    conn.close()

    result = materialize(settings, [iot_retention])
    assert result.success
    metadata = result.asset_materializations_for_node("iot_retention")[0].metadata
    deleted = metadata["deleted_rows"].value
    # The 72.5 h row is deleted from the boundary day, or dropped with its day when the cutoff is just after midnight.
    assert deleted["messages"] in (0, 1)
    assert (deleted["dead_letters"], deleted["message_ids"], deleted["duplicate_messages"]) == (4, 4, 4)
    dropped = set(metadata["dropped_partitions"].value)
    cutoff_day = (now - timedelta(hours=72)).date()
    assert dropped == {n for n in before if n < f"messages_p{cutoff_day:%Y%m%d}"}

    conn = connect(settings)
    with conn, conn.cursor() as cur:
        for table in ("messages", "dead_letters", "message_ids", "duplicate_messages"):
            cur.execute(f"SELECT received_at FROM iot.{table} ORDER BY received_at")  # noqa: S608 - fixed names
            assert [r[0] for r in cur.fetchall()] == new_times, table
    conn.close()
    again = materialize(settings, [iot_retention]).asset_materializations_for_node("iot_retention")[0].metadata
    assert again["dropped_partitions"].value == [] and sum(again["deleted_rows"].value.values()) == 0


def test_completeness_check_lists_gaps(schema: Settings) -> None:
    """Rows + dead letters + skipped duplicates covering every consumed offset pass; a missing offset is a listed gap."""
    settings = schema
    now = datetime.now(UTC)
    conn = connect(settings)
    with conn, conn.cursor() as cur:
        for offset in range(10):
            if offset == 4:
                cur.execute(
                    "INSERT INTO iot.dead_letters (reason, source, mqtt_topic, payload, received_at, kafka_topic,"
                    " kafka_partition, kafka_offset) VALUES ('bad json', 'consumer', 'x', 'x', %s, %s, 2, 4)",
                    (now, settings.kafka_topic),
                )
            elif offset == 6:
                cur.execute(
                    "INSERT INTO iot.duplicate_messages (kafka_partition, kafka_offset, tenant_id, message_id, received_at)"
                    " VALUES (2, 6, 'acme', 'm1', %s)",
                    (now,),
                )
            else:
                insert_message(cur, now, partition=2, offset=offset, payload={"n": offset})
        cur.execute("INSERT INTO iot.ingest_offsets (topic, partition, next_offset) VALUES (%s, 2, 10)", (settings.kafka_topic,))
    conn.close()

    checks_job = defs.resolve_job_def("iot_checks")

    def completeness() -> dg.AssetCheckEvaluation:
        with dg.DagsterInstance.ephemeral() as instance:
            result = checks_job.execute_in_process(instance=instance, resources=resources(settings), raise_on_error=False)
        return next(e for e in result.get_asset_check_evaluations() if e.check_name == kafka_offsets_all_stored.check_key.name)

    passing = completeness()
    assert passing.passed and passing.metadata["offsets_expected"].value == 10 and passing.metadata["records_found"].value == 10

    conn = connect(settings)
    with conn, conn.cursor() as cur:
        cur.execute("DELETE FROM iot.messages WHERE kafka_offset IN (2, 3, 8)")
        cur.execute("UPDATE iot.ingest_offsets SET next_offset = 12")  # 10 and 11 consumed but not stored
    conn.close()
    failing = completeness()
    assert not failing.passed
    assert failing.metadata["gaps"].value == {f"{settings.kafka_topic}[2]": [[2, 3], [8, 8], [10, 11]]}


def test_observer_reports_end_offsets_lag_and_liveness(schema: Settings) -> None:
    """Observations carry Kafka end offsets, per-partition lag against iot.ingest_offsets, and rates on the next tick."""
    from confluent_kafka import Producer

    from iot_platform.orchestration.observer import platform_observer

    settings = schema
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for partition, count in ((0, 5), (1, 3)):
        for _ in range(count):
            producer.produce(settings.kafka_topic, b"x", partition=partition)
    assert producer.flush(30) == 0
    conn = connect(settings)
    with conn, conn.cursor() as cur:
        cur.execute("INSERT INTO iot.ingest_offsets (topic, partition, next_offset) VALUES (%s, 0, 5), (%s, 1, 1)",
                    (settings.kafka_topic, settings.kafka_topic))
    conn.close()

    with dg.DagsterInstance.ephemeral() as instance:
        context = dg.build_sensor_context(instance=instance, resources=resources(settings))
        result = platform_observer(context)
        kafka, raw = result.asset_events
        assert kafka.asset_key == dg.AssetKey("kafka_iot_messages") and raw.asset_key == dg.AssetKey("iot_messages")
        assert kafka.metadata["end_offsets_total"].value == 8
        assert raw.metadata["lag_total"].value == 2
        assert raw.metadata["lag_per_partition"].value["1"] == 2
        assert raw.metadata["consumer_alive"].value is False  # no consumer in this test
        assert "errors" not in raw.metadata

        producer.produce(settings.kafka_topic, b"y", partition=2)
        producer.flush(30)
        later = platform_observer(dg.build_sensor_context(instance=instance, resources=resources(settings), cursor=result.cursor))
        assert later.asset_events[0].metadata["produce_rate_per_s"].value > 0


def test_observer_reports_unreachable_kafka_as_evidence(schema: Settings) -> None:
    """A source that cannot be read shows up as an error in the metadata; the PostgreSQL side is still observed."""
    from iot_platform.orchestration.observer import platform_observer
    from iot_platform.stack.ports import free_port

    broken = schema.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{free_port()}"})
    with dg.DagsterInstance.ephemeral() as instance:
        result = platform_observer(dg.build_sensor_context(instance=instance, resources=resources(broken)))
    kafka, raw = result.asset_events
    assert "kafka" in kafka.metadata["errors"].value
    assert raw.metadata["consumed_offsets_total"].value == 0


def test_serving_assets_create_tenant_roles_and_dashboard_files(schema: Settings) -> None:
    """tenant_roles maps each registered tenant to a role; grafana_dashboards writes the provisioning tree."""
    from iot_platform.orchestration.assets.serving import grafana_dashboards, tenant_roles

    settings = schema
    conn = connect(settings)
    with conn, conn.cursor() as cur:
        insert_message(cur, datetime.now(UTC), partition=0, offset=0, tenant="acme", payload={"t": 1})
        cur.execute("INSERT INTO iot.tenants (tenant_id) VALUES ('acme')")
    conn.close()
    result = materialize(settings, [tenant_roles, grafana_dashboards])
    assert result.success
    assert result.asset_materializations_for_node("tenant_roles")[0].metadata["tenants"].value == 1
    files = result.asset_materializations_for_node("grafana_dashboards")[0].metadata["files"].value
    assert files and all((settings.home / "grafana" / "provisioning" / f).is_file() for f in files)
    conn = connect(settings)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT tenant_id FROM iot.tenant_roles")
        assert [r[0] for r in cur.fetchall()] == ["acme"]
    conn.close()


def test_grafana_dashboards_gives_each_registered_tenant_its_organisation(
    schema: Settings, fake_grafana: tuple[str, FakeGrafanaState]
) -> None:
    """With IOT_GRAFANA_URL and the password key set, the grafana_dashboards asset (not tenants sync) pushes
    the dashboards and one organisation per registered tenant, whose data source logs in as its role."""
    from iot_platform.orchestration.assets.serving import grafana_dashboards

    url, grafana = fake_grafana
    settings = schema.model_copy(update={"grafana_url": url, "tenant_password_key": SecretStr("k"), "grafana_timeout_s": 5.0})
    conn = connect(settings)
    with conn, conn.cursor() as cur:
        cur.execute("INSERT INTO iot.tenants (tenant_id) VALUES ('acme'), ('Beta') ON CONFLICT DO NOTHING")
    conn.close()
    result = materialize(settings, [grafana_dashboards])
    assert result.success
    metadata = result.asset_materializations_for_node("grafana_dashboards")[0].metadata
    assert sorted(metadata["grafana_orgs"].value) == ["Beta", "acme"]
    assert {"Tenant acme", "Tenant Beta"} <= set(grafana.orgs)
    assert grafana.datasources[(grafana.orgs["Tenant acme"], "iot-postgres")]["user"] == "tenant_acme"

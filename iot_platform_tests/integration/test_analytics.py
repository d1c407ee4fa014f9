"""The analysts' Reader on the real database: a tenant's frames never hold another tenant's rows, dtypes are
the documented ones (also when empty), time zones are handled, and logins that bypass row-level security
are refused."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from iot_platform.analytics import Reader, ReaderLoginError, TruncatedResultWarning
from iot_platform.core.rollup_math import hour_of
from iot_platform.settings import Settings
from iot_platform.storage.db import connect
from iot_platform.storage.migrate import apply_migrations, ensure_day_partitions
from iot_platform.storage.rollup_sql import refresh_hour
from iot_platform.storage.tenant_identity import derive_password
from iot_platform.storage.tenants import sync_tenants
from iot_platform_tests.helpers import private_roles
from iot_platform_tests.integration.test_dagster_assets import insert_message

pytestmark = pytest.mark.integration

UTC = timezone.utc
KEY = "analytics-test-key"
README = Path(__file__).resolve().parents[2] / "README.md"
FIELDS = {"temperature": "float", "seq": "int", "status": "string", "on": "bool", "we'ird \"key\"": "string"}


@dataclass(frozen=True)
class Data:
    settings: Settings
    hours: tuple[datetime, ...]  # two closed hours (the first rolled up) and the current one
    received: dict[str, list[datetime]]  # tenant -> received_at of its rows


def _seed(settings: Settings, tenants: dict[str, int], hours: tuple[datetime, ...]) -> dict[str, list[datetime]]:
    """Registered tenants with ``count`` JSON rows per hour (the first of acme's not JSON); offsets unique."""
    received: dict[str, list[datetime]] = {t: [] for t in tenants}
    conn = connect(settings)
    try:
        ensure_day_partitions(conn, {h.date() for h in hours})
        with conn, conn.cursor() as cur:
            for tenant in tenants:  # the registry says who is a tenant (tenants sync)
                cur.execute("INSERT INTO iot.tenants (tenant_id) VALUES (%s) ON CONFLICT DO NOTHING", (tenant,))
            offset = 0
            for hour in hours:
                for tenant, count in tenants.items():
                    for i in range(count):
                        at = min(hour + timedelta(minutes=1, seconds=i, microseconds=7), datetime.now(UTC))
                        document = {"temperature": 20.5 + i, "seq": i, "status": f"s{i}", "on": i % 2 == 0,
                                    "we'ird \"key\"": "x", "device_id": f"{tenant}-d{i}"}
                        raw = b"\x00not json" if (tenant, i) == ("acme", 0) else None
                        insert_message(cur, at, partition=offset % 6, offset=offset, tenant=tenant, project=f"{tenant}-p",
                                       device=f"{tenant}-d{i}", payload=document, raw=raw)
                        received[tenant].append(at)
                        offset += 1
    finally:
        conn.close()
    return received


@pytest.fixture
def data(settings: Settings, postgres_server: Any) -> Iterator[Data]:
    with private_roles(settings, postgres_server.admin_dsn, KEY) as synced:
        apply_migrations(synced)
        current = hour_of(datetime.now(UTC))
        hours = (current - timedelta(hours=2), current - timedelta(hours=1), current)
        received = _seed(synced, {"acme": 3, "globex": 2}, hours)
        refresh_hour(synced, hours[0])
        sync_tenants(synced)
        yield Data(synced, hours, received)


def _window(data: Data) -> tuple[datetime, datetime]:
    return data.hours[0], datetime.now(UTC) + timedelta(minutes=1)


def test_a_tenant_frame_never_holds_another_tenants_rows(data: Data) -> None:
    """Raw rows, live rollups and field rollups: each tenant gets exactly its own rows, asking for another tenant
    returns nothing; the analyst gets both tenants."""
    since, until = _window(data)
    for tenant, other in (("acme", "globex"), ("globex", "acme")):
        with Reader.for_tenant(tenant, data.settings) as db:
            messages = db.messages(since, until)
            assert set(messages["tenant_id"]) == {tenant}
            assert sorted(messages["received_at"]) == [pd.Timestamp(t) for t in sorted(data.received[tenant])]
            assert db.messages(since, until, tenant=other).empty
            rollups = db.rollups(since, until)
            assert set(rollups["tenant_id"]) == {tenant}
            assert list(rollups["hour"]) == [pd.Timestamp(h) for h in data.hours]  # rolled-up and live hours
            assert rollups["message_count"].sum() == len(data.received[tenant])
            fields = db.field_rollups(since, until, fields="temperature")
            assert set(fields["tenant_id"]) == {tenant} and set(fields["field"]) == {"temperature"}
            assert db.rollups(since, until, tenant=other).empty and db.field_rollups(since, until, tenant=other).empty
    with Reader.for_analyst(data.settings) as db:
        assert set(db.messages(since, until)["tenant_id"]) == {"acme", "globex"}
        assert set(db.rollups(since, until)["tenant_id"]) == {"acme", "globex"}
        assert set(db.messages(since, until, tenant="globex", project=["globex-p"])["tenant_id"]) == {"globex"}


def test_dtypes_are_the_documented_ones_also_when_empty(data: Data) -> None:
    """Expanded fields take the asked type (NA for another JSON type or no JSON), raw payloads come back as bytes
    and parsed JSON; a range without rows gives the same columns and dtypes."""
    since, until = _window(data)
    empty_since, empty_until = since - timedelta(days=1), since - timedelta(hours=20)
    with Reader.for_tenant("acme", data.settings) as db:
        frame = db.messages(since, until, fields=FIELDS, raw=True, device=["acme-d0", "acme-d1"])
        empty = db.messages(empty_since, empty_until, fields=FIELDS, raw=True)
        reads = [(db.rollups(since, until), db.rollups(empty_since, empty_until)),
                 (db.field_rollups(since, until), db.field_rollups(empty_since, empty_until))]
    assert {c: str(t) for c, t in frame.dtypes.items()} == {
        "received_at": "datetime64[ns, UTC]", "tenant_id": "string", "project_id": "string", "device_id": "string",
        "message_id": "string", "mqtt_topic": "string", "device_ts": "datetime64[ns, UTC]",
        "ingested_at": "datetime64[ns, UTC]", "kafka_partition": "Int32", "kafka_offset": "Int64", "payload_bytes": "Int64",
        "payload": "object", "payload_json": "object", "temperature": "Float64", "seq": "Int64", "status": "string",
        "on": "boolean", "we'ird \"key\"": "string"}
    assert len(frame) == 6 and set(frame["device_id"]) == {"acme-d0", "acme-d1"}
    not_json, reading = frame.iloc[0], frame.iloc[1]
    assert not_json["payload"] == b"\x00not json" and not_json["payload_json"] is None and pd.isna(not_json["temperature"])
    assert (reading["temperature"], reading["seq"], reading["status"], reading["on"]) == (21.5, 1, "s1", False)
    assert reading["payload_json"]["device_id"] == "acme-d1" and reading["payload_bytes"] == len(reading["payload"])
    assert list(empty.columns) == list(frame.columns) and empty.dtypes.equals(frame.dtypes) and empty.empty
    for full, none in reads:
        assert len(full) and none.empty and list(none.columns) == list(full.columns) and none.dtypes.equals(full.dtypes)


def test_time_zones_in_and_out(data: Data) -> None:
    """A window given in another zone selects the same instants as in UTC; since is inclusive, until exclusive;
    values come back in UTC and convert; naive datetimes are refused."""
    first = min(data.received["acme"])
    kolkata = timezone(timedelta(hours=5, minutes=30))
    with Reader.for_tenant("acme", data.settings) as db:
        in_utc = db.messages(first, first + timedelta(hours=1))
        elsewhere = db.messages(first.astimezone(kolkata), (first + timedelta(hours=1)).astimezone(kolkata))
        until_first = db.messages(first - timedelta(hours=1), first)
        with pytest.raises(ValueError, match="timezone-aware"):
            db.messages(first.replace(tzinfo=None), datetime.now(UTC))
    assert in_utc.equals(elsewhere) and in_utc["received_at"].iloc[0] == pd.Timestamp(first)
    assert until_first.empty
    assert str(in_utc["received_at"].dt.tz_convert("Asia/Kolkata").dtype) == "datetime64[ns, Asia/Kolkata]"


def test_logins_that_bypass_row_level_security_are_refused(data: Data) -> None:
    """The platform's own user and the ingest role (both may write) are refused; a wrong password or a missing
    key is one line that names what to change; the Reader's session cannot write."""
    s = data.settings
    with pytest.raises(ReaderLoginError, match="can write iot.messages or bypass row-level security"):
        Reader.login(s.pg_user, s.pg_password.get_secret_value(), s)
    with pytest.raises(ReaderLoginError, match="can write"):
        Reader.login(s.ingest_role, derive_password(KEY, s.ingest_role), s)
    with pytest.raises(ReaderLoginError, match=f"cannot log in as '{s.analyst_role}'.*IOT_PG_PORT"):
        Reader.login(s.analyst_role, "wrong", s)
    with pytest.raises(ReaderLoginError, match="IOT_TENANT_PASSWORD_KEY is not set"):
        Reader.for_tenant("acme", s.model_copy(update={"tenant_password_key": None}))
    with Reader.for_analyst(s) as db, pytest.raises(Exception, match="read-only transaction"):
        db._conn.cursor().execute("DELETE FROM iot.rollup_hourly")  # noqa: SLF001 - the session itself is the subject


def test_limit_truncates_with_a_warning(data: Data) -> None:
    """More rows than limit: the first rows, oldest first, attrs['truncated'] and a TruncatedResultWarning."""
    since, until = _window(data)
    with Reader.for_tenant("acme", data.settings) as db:
        with pytest.warns(TruncatedResultWarning, match="the first 4 rows only"):
            frame = db.messages(since, until, limit=4)
        exact = db.messages(since, until, limit=len(data.received["acme"]))
    assert frame.attrs["truncated"] and not exact.attrs["truncated"]
    assert list(frame["received_at"]) == [pd.Timestamp(t) for t in sorted(data.received["acme"])[:4]]


def test_readme_example_runs(settings: Settings, postgres_server: Any) -> None:
    """The README's pandas example, run as written against a database holding the demo fleet's first tenant."""
    block = README.read_text().split("### From Python (pandas)", 1)[1]
    code = re.search(r"```python\n(.*?)```", block, re.S)
    assert code, "README: no python block under 'From Python (pandas)'"
    with private_roles(settings, postgres_server.admin_dsn, KEY) as synced:
        apply_migrations(synced)
        current = hour_of(datetime.now(UTC))
        _seed(synced, {"tenant00": 3}, (current - timedelta(hours=1), current))
        sync_tenants(synced)
        env = {k: v for k, v in os.environ.items() if not k.startswith("IOT_")}
        env.update({k: v for k, v in synced.as_env().items()
                    if k.startswith(("IOT_PG_", "IOT_TENANT_", "IOT_ANALYST_", "IOT_INGEST_"))})
        run = subprocess.run([sys.executable, "-c", code.group(1)], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "message_count" in run.stdout and "Europe/Berlin" in run.stdout and "tenant00-d1" in run.stdout, run.stdout

"""What a live rollup query costs: the views `iot.rollup_hourly_live` / `..._fields_live`, and the analysts' Reader.

Starts its own PostgreSQL (stack launcher, in a temporary directory, removed at the end), applies the
migrations and writes ``--hours`` closed hours plus one full current hour of simulator-like JSON rows
at ``--rate`` msg/s (2 tenants x 2 projects x 5 devices, 8 payload fields). Every closed hour is rolled
up (``refresh_hour``, timed), then each query below runs ``--repeat`` times over the last 24 hours:
the current hour live, then also the previous one (as between :00 and the :05 rollup), then with
PostgreSQL's JIT switched back on for the session (migration 060 turns it off for the database).

Usage: .venv/bin/python benchmarks/live_rollups.py [--hours 12] [--rate 20] [--repeat 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pydantic import SecretStr

from iot_platform.analytics import Reader
from iot_platform.core.rollup_math import hour_of
from iot_platform.settings import Settings
from iot_platform.stack.databases import ensure_platform_role_and_databases
from iot_platform.stack.ports import free_port
from iot_platform.stack.postgres import PostgresServer
from iot_platform.storage.db import connect
from iot_platform.storage.migrate import apply_migrations, ensure_day_partitions
from iot_platform.storage.rollup_sql import refresh_hour
from iot_platform.storage.tenants import sync_tenants

_SEED = """
INSERT INTO iot.messages (tenant_id, project_id, mqtt_topic, payload, payload_json, message_id, device_id, received_at,
                          kafka_partition, kafka_offset)
SELECT 'tenant0' || (i %% 2), 'project0' || (i / 2 %% 2), 'mtic/msg/client/realtime/t/p/d', convert_to(j::text, 'UTF8'), j,
       'm' || i, 'dev' || (i %% 20), %(start)s + i * %(step)s * interval '1 microsecond', i %% 6, i
FROM generate_series(0, %(n)s - 1) i,
LATERAL (SELECT jsonb_build_object('msg_id', 'm' || i, 'device_id', 'dev' || (i %% 20), 'seq', i, 'run_id', 'bench',
                                   'ts', '2026-12-01T00:00:00.000Z', 'temperature', 20 + (i %% 100) / 10.0,
                                   'humidity', 40 + (i %% 37), 'battery', 99 - (i %% 10) / 100.0, 'rssi', -60 - (i %% 30)) AS j) js
"""

QUERIES = {
    "rollup_hourly_live, 24 h": "SELECT * FROM iot.rollup_hourly_live WHERE hour >= now() - interval '24 hours'",
    "rollup_hourly_fields_live, 24 h": "SELECT * FROM iot.rollup_hourly_fields_live WHERE hour >= now() - interval '24 hours'",
}


def timed(action: Callable[[], object], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        begin = time.perf_counter()
        action()
        times.append(time.perf_counter() - begin)
    return times


def spread(times: list[float]) -> str:
    return f"{min(times):.3f} / {statistics.median(times):.3f} / {max(times):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=int, default=12, help="Closed hours of data before the current one.")
    parser.add_argument("--rate", type=float, default=20.0, help="Messages per second (make run's demo fleet: 20).")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="iot-bench-live-"))
    server = PostgresServer(workdir / "postgres", free_port())
    try:
        server.start()
        settings = Settings(home=workdir / "home", pg_port=server.port, pg_statement_timeout_ms=3_600_000,
                            tenant_password_key=SecretStr("bench"), tenant_role_prefix="bench_",
                            analyst_role="bench_analyst", ingest_role="bench_ingest")
        ensure_platform_role_and_databases(server.admin_dsn, settings, settings.pg_database)
        apply_migrations(settings)
        current = hour_of(datetime.now(timezone.utc))
        first = current - timedelta(hours=args.hours)
        per_hour = int(args.rate * 3600)
        conn = connect(settings)
        ensure_day_partitions(conn, {(first + timedelta(hours=h)).date() for h in range(args.hours + 1)})
        begin = time.perf_counter()
        with conn, conn.cursor() as cur:  # the current hour is full too: the worst case, just before :00
            cur.execute(_SEED, {"start": first, "step": 3_600_000_000 / per_hour, "n": per_hour * (args.hours + 1)})
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("VACUUM ANALYZE iot.messages")
        print(f"seeded {per_hour * (args.hours + 1):,} rows ({per_hour:,} per hour) in {time.perf_counter() - begin:.0f} s")
        refresh = [timed(lambda h=h: refresh_hour(settings, first + timedelta(hours=h)), 1)[0] for h in range(args.hours)]
        print(f"refresh_hour of one closed hour: {spread(refresh)} s (min / median / max over {args.hours} hours)")
        sync_tenants(settings)

        def query(statement: str, jit: bool = False) -> Callable[[], object]:
            def run() -> object:
                with conn.cursor() as cur:
                    cur.execute(f"SET jit = {'on' if jit else 'off'}")
                    cur.execute(statement)
                    return cur.fetchall()
            return run

        rows: list[tuple[str, str]] = []
        for name, statement in QUERIES.items():
            rows.append((f"{name}, current hour live", spread(timed(query(statement), args.repeat))))
        with Reader.for_analyst(settings) as db:
            since = current - timedelta(hours=24)
            rows.append(("Reader.rollups, 24 h, current hour live", spread(timed(lambda: db.rollups(since, current + timedelta(hours=1)), args.repeat))))
            rows.append(("Reader.messages, 1 closed hour, limit 100,000",
                         spread(timed(lambda: db.messages(current - timedelta(hours=1), current, fields={"temperature": "float"}), args.repeat))))
        with conn.cursor() as cur:
            cur.execute("DELETE FROM iot.rollup_hours WHERE hour = %s", (current - timedelta(hours=1),))
        for name, statement in QUERIES.items():
            rows.append((f"{name}, previous + current hour live", spread(timed(query(statement), args.repeat))))
        for name, statement in QUERIES.items():
            rows.append((f"{name}, previous + current hour live, jit on", spread(timed(query(statement, jit=True), args.repeat))))
        conn.close()
        print(f"\n| query | seconds (min / median / max of {args.repeat}) |\n| --- | ---: |")
        for name, figures in rows:
            print(f"| {name} | {figures} |")
    finally:
        server.destroy()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

"""PostgreSQL's CPU per stored row on the consumer's insert path, and what each stored promise costs.

Starts a private PostgreSQL (stack launcher, temporary directory, removed at the end), applies the
migrations and writes batches of simulator-like rows (~220-byte JSON with a message id, 12 tenants,
60 device topics) through the consumer's own `BatchWriter`, one transaction per batch as the
consumer does. It prints the backend CPU per row (from /proc, the writer's connection only) over the
measured batches, after a few warm-up batches, and the Python time spent formatting the COPY data.

`--without` measures the same load with one promise taken away, to price it: `jsonb` (payload_json
NULL: the server parses no JSON), `tenant-index` (no `messages_tenant_project_time`), `kafka-key` (no
`messages_kafka_record_key`: replays past the offset fence would be stored twice), `rls` (row-level
security off on the two tables written), `message-id` (rows without a message id: no claim in
`iot.message_ids`). `--json-type` stores payload_json as `json` instead of `jsonb`: the server checks
the JSON and keeps its text, and parses it again at every read. None of these is a supported
configuration; they answer "what would storing less save".

`--warmup-batches N` writes N batches before measuring (5 by default) and `--checkpoint` then runs
a CHECKPOINT: an older server, whose indexes are larger, whose shared buffers have all been touched
and whose WAL segments are recycled instead of created and zero-filled.

Usage: .venv/bin/python benchmarks/insert_path.py [--batch-size 2000] [--batches 40] [--without jsonb]
       [--json-type] [--warmup-batches 5] [--checkpoint]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import shutil
import struct
import tempfile
import time
from contextlib import ExitStack, closing
from pathlib import Path

import psycopg2
from consumer_throughput import _cpu_seconds as cpu_seconds  # benchmarks/ is the script's directory
from psycopg2 import sql as psql

from iot_platform.consumer.copy_format import copy_row
from iot_platform.consumer.pending import make_batch
from iot_platform.consumer.records import MessageRow
from iot_platform.consumer.writer import BatchWriter
from iot_platform.settings import Settings
from iot_platform.stack.databases import ensure_platform_role_and_databases
from iot_platform.stack.ports import free_port
from iot_platform.stack.postgres import PostgresServer
from iot_platform.storage.db import connect
from iot_platform.storage.migrate import apply_migrations

WARMUP_BATCHES = 5
WITHOUT = {
    "jsonb": None,
    "tenant-index": "DROP INDEX iot.messages_tenant_project_time",
    "kafka-key": "DROP INDEX iot.messages_kafka_record_key",
    "rls": "ALTER TABLE iot.messages NO FORCE ROW LEVEL SECURITY; ALTER TABLE iot.messages DISABLE ROW LEVEL SECURITY;"
           " ALTER TABLE iot.message_ids NO FORCE ROW LEVEL SECURITY; ALTER TABLE iot.message_ids DISABLE ROW LEVEL SECURITY",
    "message-id": None,
}


def private_database(stack: ExitStack, prefix: str, *, may_checkpoint: bool = False) -> Settings:
    """Settings of a private, migrated PostgreSQL in a temporary directory, both removed when ``stack``
    closes; ``may_checkpoint`` lets the platform's role run CHECKPOINT (pg_checkpoint)."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    stack.callback(shutil.rmtree, workdir, True)
    postgres = PostgresServer(workdir / "postgres", free_port())
    stack.callback(postgres.destroy)
    postgres.start()
    settings = Settings(home=workdir / "home", pg_host=postgres.host, pg_port=postgres.port)
    ensure_platform_role_and_databases(postgres.admin_dsn, settings, settings.pg_database)
    if may_checkpoint:
        with closing(psycopg2.connect(postgres.admin_dsn)) as admin, admin.cursor() as cur:
            cur.execute(psql.SQL("GRANT pg_checkpoint TO {}").format(psql.Identifier(settings.pg_user)))
            admin.commit()
    apply_migrations(settings)
    return settings


def make_rows(first_offset: int, count: int, received_at_ms: int, rng: random.Random, *, with_id: bool) -> list[MessageRow]:
    rows = []
    device_ts = dt.datetime.fromtimestamp(received_at_ms / 1000, dt.timezone.utc)
    for offset in range(first_offset, first_offset + count):
        tenant, device = f"tenant{offset % 12}", f"dev-{offset % 60:03d}"
        body = {"msg_id": f"run1:{device}:{offset}", "device_id": device, "ts": device_ts.isoformat(),
                "temperature": round(rng.uniform(10, 30), 3), "humidity": round(rng.uniform(20, 80), 2),
                "voltage": 3.3, "status": "ok", "seq": offset, "fw": "1.2.3"}
        text = json.dumps(body, separators=(",", ":"))
        rows.append(MessageRow(tenant, "p1", f"mtic/msg/client/realtime/{tenant}/p1/{device}", text.encode(), text,
                               body["msg_id"] if with_id else None, device, device_ts, received_at_ms + offset // 10,
                               offset % 6, offset // 6))
    return rows


def as_json_type(tuple_: bytes, row: MessageRow) -> bytes:
    """``tuple_`` with its payload_json field in json's binary form (the text alone) instead of jsonb's
    (a version byte, then the text): the consumer writes jsonb only."""
    if row.json_text is None:
        return tuple_
    size = len(row.payload)
    return tuple_.replace(struct.pack(">ib", size + 1, 1) + row.payload, struct.pack(">i", size) + row.payload, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--batches", type=int, default=40, help="measured batches (after the warm-up batches)")
    parser.add_argument("--warmup-batches", type=int, default=WARMUP_BATCHES, help="batches written before measuring")
    parser.add_argument("--checkpoint", action="store_true", help="CHECKPOINT after the warm-up (see above)")
    parser.add_argument("--without", choices=sorted(WITHOUT), help="price one stored promise (see above)")
    parser.add_argument("--json-type", action="store_true",
                        help="payload_json as json, not jsonb (see above; the formatting figure then includes rewriting that field)")
    args = parser.parse_args()
    with ExitStack() as stack:
        settings = private_database(stack, "iot-bench-insert-", may_checkpoint=args.checkpoint)
        changes = [WITHOUT.get(args.without)]
        if args.json_type:
            changes.append("ALTER TABLE iot.messages ALTER COLUMN payload_json TYPE json")
        if any(changes):
            conn = connect(settings, autocommit=True)
            with conn.cursor() as cur:
                for statement in filter(None, changes):
                    cur.execute(statement)
            conn.close()
        now_ms = int(time.time() * 1000)
        rng = random.Random(1)
        rows = [make_rows(b * args.batch_size, args.batch_size, now_ms, rng, with_id=args.without != "message-id")
                for b in range(args.warmup_batches + args.batches)]
        started = time.process_time()
        batches = []
        for batch in rows:
            tuples = [copy_row(r, with_json=args.without != "jsonb") for r in batch]
            batches.append(make_batch(batch, settings.kafka_topic, [as_json_type(t, r) for t, r in zip(tuples, batch)]
                                      if args.json_type else tuples))
        formatting_s = time.process_time() - started
        writer = BatchWriter(settings)
        stack.callback(writer.close)
        for batch in batches[:args.warmup_batches]:
            writer.write(batch)
        probe = connect(settings, autocommit=True)
        with probe.cursor() as cur:  # the writer's backend: the only other client of this private server
            cur.execute("SELECT pid FROM pg_stat_activity WHERE application_name = 'iot-platform' AND pid <> pg_backend_pid()"
                        " AND backend_type = 'client backend'")
            (backend,) = [pid for (pid,) in cur.fetchall()]
            if args.checkpoint:
                cur.execute("CHECKPOINT")
        probe.close()
        before = cpu_seconds(backend)
        for batch in batches[args.warmup_batches:]:
            writer.write(batch)
        measured = args.batches * args.batch_size
        print(json.dumps({"without": args.without, "batch_size": args.batch_size, "warmup_batches": args.warmup_batches,
                          "checkpoint": args.checkpoint, "json_type": args.json_type, "rows_measured": measured,
                          "backend_us_per_row": round((cpu_seconds(backend) - before) / measured * 1e6, 1),
                          "copy_format_us_per_row": round(formatting_s / len(batches) / args.batch_size * 1e6, 2)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

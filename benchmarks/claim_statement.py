"""PostgreSQL's CPU per message-id claim, by the way the claims reach the server.

The consumer claims a batch's message ids in `iot.message_ids` before it copies the rows
(`consumer/writer.py`). This prices three ways of feeding that insert, claims only, on one private
PostgreSQL (stack launcher, temporary directory, removed at the end), one connection per way, each
transaction one batch and a commit, the three ways taking turns batch by batch:

- `shipped`: the writer's prepared `iot_claim_ids` (`consumer/sql.py`), arrays unnested in the
  select list;
- `unnest-in-from`: the same arrays unnested in FROM (each function's result goes through a
  tuplestore);
- `temp-table`: a binary COPY into a temporary table that PostgreSQL empties at every commit
  (`ON COMMIT DELETE ROWS`), then `INSERT ... SELECT` from it (the writer's way before).

It prints the backend CPU per claim (from /proc) of each way. The B-tree and heap work of the claims
is the same for all three; the differences are the feeding and the fixed work of a transaction.

Usage: .venv/bin/python benchmarks/claim_statement.py [--batch-size 2000] [--batches 100]
"""

from __future__ import annotations

import argparse
import io
import json
import random
import struct
import time
from contextlib import ExitStack

from consumer_throughput import _cpu_seconds as cpu_seconds  # benchmarks/ is the script's directory
from insert_path import make_rows, private_database

from iot_platform.consumer import sql
from iot_platform.consumer.claims import claims_of
from iot_platform.consumer.copy_format import wrap
from iot_platform.consumer.records import MessageRow
from iot_platform.storage.db import connect

_RECEIVED_AT = "timestamptz 'epoch' + (ms / 1000) * interval '1 second' + (ms % 1000) * interval '1 millisecond'"
UNNEST_IN_FROM = f"""
PREPARE iot_claim_ids (text[], text[], bigint[], int[], bigint[]) AS
INSERT INTO iot.message_ids (tenant_id, message_id, received_at, kafka_partition, kafka_offset)
SELECT tenant_id, message_id, {_RECEIVED_AT}, kafka_partition, kafka_offset
FROM unnest($1, $2, $3, $4, $5) AS c (tenant_id, message_id, ms, kafka_partition, kafka_offset)
"""
TEMP_TABLE = """
CREATE TEMP TABLE ingest_ids (tenant_id text, message_id text, received_at timestamptz, kafka_partition integer,
                              kafka_offset bigint) ON COMMIT DELETE ROWS
"""
COPY_TEMP = "COPY ingest_ids FROM STDIN WITH (FORMAT binary)"
CLAIM_FROM_TEMP = "INSERT INTO iot.message_ids SELECT * FROM ingest_ids"
_EPOCH_2000_MS = 946_684_800_000


def _text(value: str) -> bytes:
    encoded = value.encode()
    return struct.pack(">i", len(encoded)) + encoded


def copy_claims(rows: list[MessageRow]) -> bytes:
    """The binary COPY input of ``rows``' claims (all of them have a message id)."""
    tuples = [struct.pack(">h", 5) + _text(r.tenant_id) + _text(r.message_id or "")
              + struct.pack(">iqiiiq", 8, (r.received_at_ms - _EPOCH_2000_MS) * 1000, 4, r.kafka_partition, 8, r.kafka_offset)
              for r in rows]
    return wrap(tuples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--batches", type=int, default=100, help="batches per way")
    args = parser.parse_args()
    with ExitStack() as stack:
        settings = private_database(stack, "iot-bench-claims-")
        ways = {}
        for way, setup in (("shipped", sql.PREPARE_STATEMENTS), ("unnest-in-from", UNNEST_IN_FROM), ("temp-table", TEMP_TABLE)):
            conn = connect(settings)
            stack.callback(conn.close)
            cur = conn.cursor()
            cur.execute(sql.SESSION_SETUP)
            cur.execute(setup)
            cur.execute("SELECT pg_backend_pid()")
            ways[way] = (conn, cur, cur.fetchone()[0])
            conn.commit()
        used = dict.fromkeys(ways, 0.0)
        rng, now_ms, first = random.Random(1), int(time.time() * 1000), 0
        for _ in range(args.batches):
            for way, (conn, cur, backend) in ways.items():
                rows = make_rows(first, args.batch_size, now_ms, rng, with_id=True)
                first += args.batch_size
                data = copy_claims(rows) if way == "temp-table" else claims_of(rows)
                before = cpu_seconds(backend)
                if way == "temp-table":
                    cur.copy_expert(COPY_TEMP, io.BytesIO(data))
                    cur.execute(CLAIM_FROM_TEMP)
                else:
                    cur.execute(sql.CLAIM_IDS, data)
                conn.commit()
                used[way] += cpu_seconds(backend) - before
    claims = args.batch_size * args.batches
    print(json.dumps({"batch_size": args.batch_size, "claims_per_way": claims,
                      "backend_us_per_claim": {way: round(s / claims * 1e6, 2) for way, s in used.items()}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

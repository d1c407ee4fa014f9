"""Sustained rows/s of one `iot-platform consumer` process, Kafka -> PostgreSQL.

Starts its own Kafka and PostgreSQL (stack launchers, in a temporary directory, stopped at the end),
applies the migrations, produces N records with the bridge's envelope headers and simulator-like
JSON payloads (each with a unique msg_id, so the dedupe path is exercised), then starts the
consumer and times how fast iot.ingest_offsets reaches the end of every partition. The rate is
measured from the first stored row to the last, so process start and group join are excluded.
Over the same window it reports the CPU seconds of the consumer, of PostgreSQL (postmaster and
backends) and of Kafka, and the machine's load average: on a shared 2-core machine a low rate with
little CPU used means the benchmark was starved, not slow. ``--profile out.json`` records the consumer
with py-spy from the first stored batch on (``pip install py-spy``; speedscope format, idle samples
included).

Usage: .venv/bin/python benchmarks/consumer_throughput.py [--records 300000] [--batch-size 10000] [--no-msg-id] [--profile out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import psycopg2.extensions
from confluent_kafka import Producer

from iot_platform.core.envelope import Envelope, encode_envelope
from iot_platform.settings import Settings
from iot_platform.stack.databases import ensure_platform_role_and_databases
from iot_platform.stack.kafka import KafkaServer, ensure_topics
from iot_platform.stack.ports import free_port
from iot_platform.stack.postgres import PostgresServer
from iot_platform.storage.db import connect
from iot_platform.storage.migrate import apply_migrations


def produce(settings: Settings, records: int, with_msg_id: bool) -> dict[int, int]:
    """Produce ``records`` records; returns the end offset of every partition."""
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True, "linger.ms": 20,
                         "compression.type": settings.kafka_compression, "queue.buffering.max.messages": 500_000})
    ends: dict[int, int] = {}

    def report(err, msg) -> None:  # type: ignore[no-untyped-def]
        if err is None:
            ends[msg.partition()] = max(ends.get(msg.partition(), 0), msg.offset() + 1)

    rng = random.Random(1)
    now_ms = int(time.time() * 1000)
    headers = {t: encode_envelope(Envelope(f"mtic/msg/client/realtime/{t}/p1/dev", t, "p1", 1, False, now_ms, "bench")) for t in
               (f"tenant{i}" for i in range(12))}
    for i in range(records):
        tenant = f"tenant{i % 12}"
        body = {"device_id": f"d{i % 500}", "seq": i, "ts": now_ms + i, "temperature": round(rng.uniform(-10, 40), 2),
                "humidity": round(rng.uniform(0, 100), 2), "battery": round(rng.random(), 3), "rssi": -rng.randint(40, 110)}
        if with_msg_id:
            body = {"msg_id": f"bench:{tenant}:{i}", **body}
        while True:
            try:
                producer.produce(settings.kafka_topic, value=json.dumps(body, separators=(",", ":")).encode(), key=tenant,
                                 headers=headers[tenant], on_delivery=report)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(120) == 0
    return ends


def _cpu_seconds(pid: int, *, reaped_children: bool = False) -> float:
    """User + system CPU seconds of ``pid`` (0 when it is gone), plus its reaped children's if asked."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    used = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if reaped_children else 0)
    return used / os.sysconf("SC_CLK_TCK")


def _machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy (not idle or waiting for I/O) since boot."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _tree_cpu_seconds(root: int | None) -> float:
    """CPU seconds of ``root`` and its children, live or exited (PostgreSQL: autovacuum workers come and go)."""
    if not root:
        return 0.0
    total = _cpu_seconds(root, reaped_children=True)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == root:
                total += _cpu_seconds(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return total


def _logged_batches(log_path: Path) -> int:
    """Batches the consumer wrote, from its "consumer stopped" log line (0 when absent)."""
    for line in reversed(log_path.read_text().splitlines()):
        if '"consumer stopped"' in line:
            return int(json.loads(line).get("totals", {}).get("batches", 0))
    return 0


def stored_positions(conn: psycopg2.extensions.connection, topic: str) -> tuple[dict[int, int], int]:
    # One long-lived autocommit connection: a new connection per poll (fork + SCRAM) cost the server
    # and this process several ms of CPU 20 times a second, taken from the consumer being measured.
    with conn.cursor() as cur:
        cur.execute("SELECT partition, next_offset FROM iot.ingest_offsets WHERE topic = %s", (topic,))
        positions = dict(cur.fetchall())
    return positions, sum(positions.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--no-msg-id", action="store_true", help="Payloads without msg_id (no dedupe table writes).")
    parser.add_argument("--profile", type=Path, help="Record the consumer with py-spy into this speedscope file.")
    args = parser.parse_args()
    with ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="iot-bench-consumer-"))
        stack.callback(shutil.rmtree, workdir, True)
        postgres = PostgresServer(workdir / "postgres", free_port())
        stack.callback(postgres.destroy)
        kafka = KafkaServer(workdir / "kafka", free_port(), free_port())
        stack.callback(kafka.kill)
        postgres.start()
        kafka.start()
        settings = Settings(home=workdir / "home", kafka_bootstrap=kafka.bootstrap, pg_host=postgres.host, pg_port=postgres.port,
                            consumer_metrics_port=0, consumer_batch_size=args.batch_size, heartbeat_interval_s=5.0)
        ensure_platform_role_and_databases(postgres.admin_dsn, settings, settings.pg_database)
        apply_migrations(settings)
        ensure_topics(settings)
        started = time.monotonic()
        ends = produce(settings, args.records, with_msg_id=not args.no_msg_id)
        print(f"produced {args.records:,} records in {time.monotonic() - started:.1f} s")

        env = settings.child_env()
        log_path = workdir / "consumer.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen([sys.executable, "-m", "iot_platform.cli", "consumer"], env=env, stdout=log, stderr=log)
        stack.callback(process.wait, 20)
        stack.callback(process.terminate)
        cpu_start: tuple[float, ...] | None = None
        backends: list[int] = []
        first_at = first_count = None
        poll = connect(settings, autocommit=True)
        stack.callback(poll.close)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            positions, total = stored_positions(poll, settings.kafka_topic)
            now = time.monotonic()
            if total and first_at is None:
                first_at, first_count = now, total
                with poll.cursor() as cur:  # the consumer's own backend(s), to tell them from autovacuum & co
                    cur.execute("SELECT pid FROM pg_stat_activity WHERE application_name = 'iot-platform' AND pid <> pg_backend_pid()")
                    backends = [pid for (pid,) in cur.fetchall()]
                cpu_start = (_cpu_seconds(process.pid), _tree_cpu_seconds(postgres.pid), _tree_cpu_seconds(kafka.pid),
                             sum(_cpu_seconds(pid) for pid in backends), _machine_busy_seconds())
                if args.profile:  # attached now, so the profile covers the measured window, not startup
                    spy = subprocess.Popen([shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy")), "record",
                                            "--pid", str(process.pid), "--idle", "--threads", "--rate", "100", "--format",
                                            "speedscope", "-o", str(args.profile)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    stack.callback(spy.wait, 30)
                    stack.callback(spy.send_signal, signal.SIGINT)
            if all(positions.get(p, 0) >= end for p, end in ends.items()):
                break
            time.sleep(0.05)
        else:
            print(log_path.read_text()[-3000:])
            raise SystemExit("consumer did not finish in 300 s")
        elapsed = now - first_at
        rows = total - first_count
        cpu_end = (_cpu_seconds(process.pid), _tree_cpu_seconds(postgres.pid), _tree_cpu_seconds(kafka.pid),
                   sum(_cpu_seconds(pid) for pid in backends), _machine_busy_seconds())
        consumer_cpu, postgres_cpu, kafka_cpu, backend_cpu, machine_cpu = (end - start for end, start in zip(cpu_end, cpu_start or cpu_end))
        conn = connect(settings)
        with conn.cursor() as cur:
            cur.execute("SELECT count(*), count(DISTINCT (kafka_partition, kafka_offset)) FROM iot.messages")
            stored, distinct = cur.fetchone()
        conn.close()
        process.terminate()  # its last log line holds the totals: how many transactions stored the rows
        process.wait(20)
        batches = _logged_batches(log_path)
        print(f"stored {stored:,} rows ({distinct:,} distinct) in {batches} transactions (at most {args.batch_size:,} records "
              f"each, mean {stored / max(batches, 1):,.0f}), msg_id={'no' if args.no_msg_id else 'yes'}")
        print(f"sustained: {rows:,} rows in {elapsed:.2f} s = {rows / elapsed:,.0f} rows/s (first stored batch to last)")
        print(f"cpu in that window: consumer {consumer_cpu:.2f} s, postgres {postgres_cpu:.2f} s (the consumer's backend "
              f"{backend_cpu:.2f} s), kafka {kafka_cpu:.2f} s; whole machine {machine_cpu / elapsed:.2f} of "
              f"{os.cpu_count()} cores busy; "
              f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The consumer on real Kafka and PostgreSQL: exactly-once effect under SIGKILL and a database
outage, byte-exact payloads, dedupe by payload message id, dead letters, no crash loop.

Records are produced here with the bridge's envelope headers; the consumer runs as a subprocess
(`python -m iot_platform.cli consumer`) so it can be SIGKILLed.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg2
import pytest
from confluent_kafka import Producer

from iot_platform.core.envelope import DeadLetterEnvelope, Envelope, encode_dead_letter, encode_envelope
from iot_platform.settings import Settings
from iot_platform.stack.databases import ensure_platform_role_and_databases
from iot_platform.stack.ports import free_port
from iot_platform.stack.postgres import PostgresServer
from iot_platform.storage.db import connect
from iot_platform.storage.migrate import apply_migrations
from iot_platform_tests.helpers import service_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
Coordinates = tuple[int, int]  # (partition, offset)


def _envelope(settings: Settings, tenant: str, received_at_ms: int) -> Envelope:
    return Envelope(f"mtic/msg/client/realtime/{tenant}/p1/telemetry", tenant, "p1", 1, False, received_at_ms, "test-bridge")


def produce(settings: Settings, records: list[tuple[str, bytes, list[tuple[str, bytes]]]], topic: str | None = None) -> dict[Coordinates, bytes]:
    """Produce (key, value, headers) records; returns each record's coordinates -> value."""
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True, "linger.ms": 20,
                         "compression.type": "lz4", "queue.buffering.max.messages": 200_000})
    stored: dict[Coordinates, bytes] = {}
    errors: list[str] = []

    def report(err, msg) -> None:  # type: ignore[no-untyped-def]
        if err is not None:
            errors.append(str(err))
        else:
            stored[(msg.partition(), msg.offset())] = msg.value()

    for key, value, headers in records:
        producer.produce(topic or settings.kafka_topic, value=value, key=key, headers=headers, on_delivery=report)
        producer.poll(0)
    assert producer.flush(60) == 0 and not errors, errors
    return stored


def telemetry(settings: Settings, count: int, *, seed: int = 7) -> list[tuple[str, bytes, list[tuple[str, bytes]]]]:
    """A realistic mix: JSON with a msg_id (most), JSON without one, and raw binary payloads."""
    rng = random.Random(seed)
    now_ms = int(time.time() * 1000)
    out = []
    for i in range(count):
        tenant = f"tenant{i % 5}"
        kind = i % 10
        if kind < 7:
            payload = json.dumps({"msg_id": f"m-{seed}-{i}", "device_id": f"d{i % 50}", "ts": now_ms + i, "temp": rng.uniform(-20, 40)}).encode()
        elif kind < 9:
            payload = json.dumps({"device_id": f"d{i % 50}", "values": [rng.random() for _ in range(3)]}).encode()
        else:
            payload = rng.randbytes(rng.randint(0, 64))
        out.append((tenant, payload, encode_envelope(_envelope(settings, tenant, now_ms - rng.randint(0, 5000)))))
    return out


@contextmanager
def consumer_process(settings: Settings, log_path: Path) -> Iterator[Callable[[], subprocess.Popen]]:
    """Start (and restart) `iot-platform consumer`; every process is SIGKILLed at exit if still alive."""
    processes: list[subprocess.Popen] = []
    log = open(log_path, "ab")

    def start() -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-m", "iot_platform.cli", "consumer"], env=service_env(settings),
                                   stdout=log, stderr=log)
        processes.append(process)
        return process

    try:
        yield start
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait(10)
        log.close()


def query(settings: Settings, statement: str, params: tuple = ()) -> list[tuple]:
    conn = connect(settings)
    try:
        with conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall()
    finally:
        conn.close()


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str, log_path: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except psycopg2.OperationalError:
            pass
        time.sleep(0.2)
    tail = log_path.read_text()[-3000:] if log_path and log_path.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")


def offsets_reached(settings: Settings, expected: dict[Coordinates, bytes], topic: str | None = None) -> Callable[[], bool]:
    """True once iot.ingest_offsets covers every produced record of ``topic``."""
    topic = topic or settings.kafka_topic
    wanted: dict[int, int] = {}
    for partition, offset in expected:
        wanted[partition] = max(wanted.get(partition, 0), offset + 1)

    def check() -> bool:
        stored = dict(query(settings, "SELECT partition, next_offset FROM iot.ingest_offsets WHERE topic = %s", (topic,)))
        return all(stored.get(p, -1) >= n for p, n in wanted.items())

    return check


def stored_payloads(settings: Settings) -> list[tuple[int, int, bytes]]:
    return [(p, o, bytes(b)) for p, o, b in query(settings, "SELECT kafka_partition, kafka_offset, payload FROM iot.messages")]


def test_sigkill_twice_mid_stream_stores_every_record_once(settings: Settings, tmp_path: Path) -> None:
    """50,000 records; the consumer is SIGKILLed twice mid-stream and restarted: stored rows equal
    records produced, each (partition, offset) once, payloads byte-exact, nothing dead-lettered."""
    settings = settings.model_copy(update={"consumer_batch_size": 1000, "consumer_session_timeout_ms": 6000})
    apply_migrations(settings)
    produced = produce(settings, telemetry(settings, 50_000))
    assert len(produced) == 50_000
    log_path = tmp_path / "consumer.log"
    with consumer_process(settings, log_path) as start:
        for threshold in (8_000, 25_000):
            process = start()
            wait_until(lambda: query(settings, "SELECT count(*) FROM iot.messages")[0][0] >= threshold, 90, f"{threshold} rows", log_path)
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            stored_at_kill = query(settings, "SELECT count(*) FROM iot.messages")[0][0]
            assert stored_at_kill < 50_000, "the kill must land mid-stream, with records left to store"
        start()
        wait_until(offsets_reached(settings, produced), 120, "all offsets stored", log_path)
    rows = stored_payloads(settings)
    assert len(rows) == 50_000
    assert {(p, o): b for p, o, b in rows} == produced
    assert query(settings, "SELECT count(*) FROM iot.dead_letters")[0][0] == 0
    assert query(settings, "SELECT count(*) FROM iot.duplicate_messages")[0][0] == 0
    starts = log_path.read_text().count('"consumer started"')
    assert starts == 3


def test_special_payloads_are_stored_byte_exact(settings: Settings, tmp_path: Path) -> None:
    """A JSON payload with a \\u0000 escape, a binary payload and a non-JSON text payload are stored
    byte-exact with payload_json NULL, never dead-lettered; a JSON payload keeps its jsonb; records
    that follow are stored too (no crash loop)."""
    apply_migrations(settings)
    now_ms = int(time.time() * 1000)
    headers = encode_envelope(_envelope(settings, "acme", now_ms))
    payloads = {
        "nul": b'{"msg_id": "n1", "text": "a\\u0000b"}',
        "binary": bytes(range(256)) + b"\x00\xff",
        "text": "température: 21.5 °C\tok\n\\N".encode(),
        "empty": b"",
        "json": b'{"msg_id": "j1", "device_id": "d1", "ts": "2026-11-01T10:00:00Z", "v": [1, 2.5, "\\\\x"]}',
    }
    produced = produce(settings, [("acme", value, headers) for value in payloads.values()])
    log_path = tmp_path / "consumer.log"
    with consumer_process(settings, log_path) as start:
        process = start()
        wait_until(offsets_reached(settings, produced), 60, "offsets stored", log_path)
        assert process.poll() is None, log_path.read_text()[-2000:]
    rows = {bytes(b): (j, m, d, ts) for b, j, m, d, ts in query(
        settings, "SELECT payload, payload_json, message_id, device_id, device_ts FROM iot.messages")}
    assert set(rows) == set(payloads.values())
    for name in ("nul", "binary", "text", "empty"):
        assert rows[payloads[name]][0] is None, name
    assert rows[payloads["nul"]][1] == "n1"
    json_doc, message_id, device_id, device_ts = rows[payloads["json"]]
    assert json_doc == json.loads(payloads["json"]) and (message_id, device_id) == ("j1", "d1")
    assert device_ts.isoformat() == "2026-11-01T10:00:00+00:00"
    assert query(settings, "SELECT count(*) FROM iot.dead_letters")[0][0] == 0
    assert query(settings, "SELECT received_at = to_timestamp(%s / 1000.0) FROM iot.messages LIMIT 1", (now_ms,))[0][0]


def test_duplicates_and_dead_letters(settings: Settings, tmp_path: Path) -> None:
    """A message produced twice with the same msg_id (two offsets, in either envelope format) is stored
    once and its copy recorded in iot.duplicate_messages; a record with undecodable headers becomes a consumer dead letter and the
    offset moves on; a DLQ-topic record becomes a bridge dead letter. Every offset is accounted for."""
    apply_migrations(settings)
    now_ms = int(time.time() * 1000)
    good = encode_envelope(_envelope(settings, "acme", now_ms))
    # The bridge received it again, and wrote envelope format 1 (as during a rolling upgrade).
    again = encode_envelope(_envelope(settings, "acme", now_ms + 1500), "1")
    other_tenant = encode_envelope(_envelope(settings, "globex", now_ms))
    dup = b'{"msg_id": "same", "v": 1}'
    bad_headers = [(k, v) for k, v in good if k != "envelope"]
    records = [("acme", dup, good), ("acme", b'{"v": 2}', good), ("acme", dup, again), ("acme", dup, again),
               ("acme", b"\x00bad", bad_headers), ("globex", dup, other_tenant), ("acme", b'{"v": 3}', good)]
    produced = produce(settings, records)
    dlq = produce(settings, [("", b"\xde\xad", encode_dead_letter(DeadLetterEnvelope("topic does not match the grammar", "x/y", now_ms, "b1", 2, False)))],
                  topic=settings.kafka_dlq_topic)
    log_path = tmp_path / "consumer.log"
    with consumer_process(settings, log_path) as start:
        start()
        wait_until(offsets_reached(settings, produced), 60, "offsets stored", log_path)
        wait_until(offsets_reached(settings, dlq, settings.kafka_dlq_topic), 30, "dlq offsets stored", log_path)
    assert sorted(bytes(r[0]) for r in query(settings, "SELECT payload FROM iot.messages")) == sorted([dup, dup, b'{"v": 2}', b'{"v": 3}'])
    assert query(settings, "SELECT tenant_id, count(*) FROM iot.messages WHERE message_id = 'same' GROUP BY 1 ORDER BY 1") == [("acme", 1), ("globex", 1)]
    assert query(settings, "SELECT count(*) FROM iot.duplicate_messages WHERE message_id = 'same' AND first_kafka_offset IS NOT NULL")[0][0] == 2
    letters = query(settings, "SELECT source, reason, payload, kafka_topic FROM iot.dead_letters ORDER BY source")
    assert [(s, bytes(p), t) for s, _, p, t in letters] == [("bridge", b"\xde\xad", settings.kafka_dlq_topic), ("consumer", b"\x00bad", settings.kafka_topic)]
    assert "'envelope' is missing" in letters[1][1]
    # Completeness: per partition, rows + consumer dead letters + duplicates == offsets consumed.
    accounted = query(settings, """
        SELECT o.partition, o.next_offset,
               (SELECT count(*) FROM iot.messages m WHERE m.kafka_partition = o.partition)
             + (SELECT count(*) FROM iot.dead_letters d WHERE d.kafka_topic = o.topic AND d.kafka_partition = o.partition)
             + (SELECT count(*) FROM iot.duplicate_messages x WHERE x.kafka_partition = o.partition)
        FROM iot.ingest_offsets o WHERE o.topic = %s""", (settings.kafka_topic,))
    assert accounted and all(next_offset == total for _, next_offset, total in accounted), accounted


@pytest.fixture
def private_postgres(tmp_path: Path) -> Iterator[PostgresServer]:
    """A PostgreSQL of this test alone, so stopping it disturbs no other test."""
    server = PostgresServer(tmp_path / "pg", free_port())
    try:
        yield server.start()
    finally:
        server.destroy()


def test_postgres_stopped_30s_mid_stream(settings: Settings, private_postgres: PostgresServer, tmp_path: Path) -> None:
    """PostgreSQL stopped in immediate mode for 30 s while records keep flowing, then started: every
    record is stored exactly once, byte-exact, nothing is dead-lettered because of the outage, and the
    same consumer process recovers by itself (it is never restarted)."""
    settings = settings.model_copy(update={"pg_port": private_postgres.port, "pg_connect_timeout_s": 3, "consumer_batch_size": 500})
    ensure_platform_role_and_databases(private_postgres.admin_dsn, settings, settings.pg_database)
    apply_migrations(settings)
    records = telemetry(settings, 24_000, seed=11)
    log_path = tmp_path / "consumer.log"
    produced: dict[Coordinates, bytes] = {}
    with consumer_process(settings, log_path) as start:
        process = start()
        produced |= produce(settings, records[:4_000])
        wait_until(lambda: query(settings, "SELECT count(*) FROM iot.messages")[0][0] >= 1_000, 60, "first rows", log_path)
        private_postgres.stop(mode="immediate")
        outage_started = time.monotonic()
        for chunk in range(4_000, 20_000, 2_000):  # records keep arriving during the outage
            produced |= produce(settings, records[chunk:chunk + 2_000])
            time.sleep(3)
        time.sleep(max(0.0, 30 - (time.monotonic() - outage_started)))
        private_postgres.start()
        produced |= produce(settings, records[20_000:])
        wait_until(offsets_reached(settings, produced), 120, "all offsets stored after the outage", log_path)
        assert process.poll() is None, "the consumer died instead of riding out the outage"
    log_text = log_path.read_text()
    assert log_text.count('"consumer started"') == 1
    assert '"infrastructure": true' in log_text  # the outage was seen and retried
    rows = stored_payloads(settings)
    assert len(rows) == len(produced) == 24_000
    assert {(p, o): b for p, o, b in rows} == produced
    assert query(settings, "SELECT count(*) FROM iot.dead_letters")[0][0] == 0

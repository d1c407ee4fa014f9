"""Faults of the brokers: Kafka SIGKILLed, Kafka SIGSTOPped 30 s, the bridge's Kafka link cut and
blackholed, the consumer stopped while its Kafka commit hangs, Mosquitto restarted.

One private stack for the module (these tests kill and pause servers): Mosquitto, and Kafka behind a
TCP proxy that the broker advertises, so every Kafka client's traffic crosses the proxy. Invariant of
every test: lost = 0, duplicates in the database = 0, dead letters = exactly the bad messages sent
(a bad message the bridge had to produce again is stored once: its copies go to
iot.duplicate_dead_letters),
and the pipeline recovers without any restart of the bridge or the consumer.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from iot_platform.settings import Settings
from iot_platform.storage.db import connect
from iot_platform_tests.faults.harness import PrivateStack, ServiceProcess, run_with_fault
from iot_platform_tests.helpers import wait_for
from iot_platform_tests.integration.test_consumer import offsets_reached, produce, stored_payloads, telemetry

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateStack]:
    private = PrivateStack(tmp_path_factory.mktemp("broker-faults"), kafka_proxy=True).start()
    try:
        yield private
    finally:
        private.stop()


@pytest.fixture
def settings(stack: PrivateStack, tmp_path: Path) -> Settings:
    return stack.settings(tmp_path / "home")


def test_kafka_sigkilled_and_restarted(stack: PrivateStack, settings: Settings, tmp_path: Path) -> None:
    """Invariant: Kafka SIGKILLed mid-stream and restarted 5 s later loses nothing (acks=all records are
    in the broker's page cache), and the bridge and consumer reconnect by themselves."""

    def fault() -> None:
        stack.kafka.kill()
        time.sleep(5)
        stack.kafka.start()

    run_with_fault(settings, tmp_path / "logs", fault)


def test_kafka_sigstopped_30s(stack: PrivateStack, settings: Settings, tmp_path: Path) -> None:
    """Invariant: Kafka frozen (SIGSTOP) for 30 s mid-stream: the bridge stops acking, Mosquitto keeps the
    messages, and after SIGCONT everything arrives; nothing lost, nothing stored twice.

    Kafka fences its only broker when it resumes, and a Metadata answer without brokers in that moment
    can leave the consumer's librdkafka client without any broker for good, an offset commit stuck in
    flight and its close() hanging (docs/design.md §4.2). The consumer, revoked by its session timeout,
    replaces a client the group never assigns again after its rejoin timeout (30 s here instead of 60 s,
    to keep the suite short: the new client starts after Kafka is back) and leaves the old one closing.
    On 2026-12-01, 5 runs of 5 passed; 2 of the 4 inspected needed that replacement, in one the old client's
    close had not returned 5 s later (left closing; the new client was assigned 0.1 s after)."""
    settings = settings.model_copy(update={"consumer_rejoin_timeout_s": 30.0, "consumer_close_timeout_s": 5.0})

    def fault() -> None:
        stack.kafka.pause()
        try:
            time.sleep(30)
        finally:
            stack.kafka.resume()

    run_with_fault(settings, tmp_path / "logs", fault, count=3_000, rate=600)


def test_kafka_link_cut(stack: PrivateStack, settings: Settings, tmp_path: Path) -> None:
    """Invariant: every Kafka connection reset and refused for 5 s: producers retry, nothing is acked to
    MQTT before Kafka has it, nothing is lost or stored twice."""

    def fault() -> None:
        assert stack.kafka_tcp is not None
        stack.kafka_tcp.cut()
        time.sleep(5)
        stack.kafka_tcp.heal()

    run_with_fault(settings, tmp_path / "logs", fault)


def test_kafka_link_blackholed_and_the_consumer_reopens_its_client(stack: PrivateStack, settings: Settings, tmp_path: Path) -> None:
    """Invariant: Kafka traffic blackholed (bytes held, nothing answered) for 30 s: the bridge's in-flight
    window fills and acks stop; the consumer's group session (10 s) and then a 5 s rejoin timeout run
    out, so it replaces its Kafka client (the recovery from a client that lost every broker after a
    broker stall), the old one closing in the background if its close waits on the unreachable
    coordinator; after healing, everything arrives exactly once in the database."""
    settings = settings.model_copy(update={"consumer_rejoin_timeout_s": 5.0})
    log_dir = tmp_path / "logs"

    def fault() -> None:
        assert stack.kafka_tcp is not None
        stack.kafka_tcp.blackhole()
        time.sleep(30)
        stack.kafka_tcp.heal()

    run_with_fault(settings, log_dir, fault, count=3_000, rate=600)
    reopened = [line for line in (log_dir / "consumer.log").read_text().splitlines() if "reopening the Kafka consumer" in line]
    assert reopened, "the consumer never reopened its Kafka client"
    print(f"\nconsumer reopened its Kafka client {len(reopened)} times")


def test_a_consumer_stopped_while_its_kafka_commit_hangs_exits_within_its_close_timeout(
    stack: PrivateStack, settings: Settings, tmp_path: Path,
) -> None:
    """Invariant: the consumer never hangs in librdkafka's close(), which waits for every offset commit in
    flight (for ever once the client lost every broker: docs/design.md §4.2). Here a batch waits on a
    table lock while Kafka's traffic is blackholed; released, it commits to PostgreSQL and its Kafka
    commit goes into the blackhole. Stopped then (SIGTERM), the consumer exits 1 once
    IOT_CONSUMER_CLOSE_TIMEOUT_S has passed, not when Kafka answers again, and the batch is stored."""
    # Fetches answered at once: the batch must be in the consumer before the blackhole, and a fetch that
    # Kafka holds for IOT_CONSUMER_FETCH_WAIT_MAX_MS could be caught by it (its records would only wait in
    # Kafka; this test is about the commit, not the fetch).
    settings = settings.model_copy(update={"consumer_close_timeout_s": 2.0, "consumer_fetch_min_bytes": 1})
    assert stack.kafka_tcp is not None
    consumer = ServiceProcess("consumer", settings, tmp_path / "logs").start()
    try:
        expected = produce(settings, telemetry(settings, 200, seed=1))
        wait_for(offsets_reached(settings, expected), 60, "the first records stored", interval_s=0.2)
        lock = connect(settings)
        try:
            with lock.cursor() as cur:  # the next batch waits on its offset rows
                cur.execute("LOCK TABLE iot.ingest_offsets IN SHARE ROW EXCLUSIVE MODE")
            expected |= produce(settings, telemetry(settings, 200, seed=2))
            wait_for(lambda: _lock_waiters(settings), 60, "a batch waiting on the offset rows", interval_s=0.2)
            stack.kafka_tcp.blackhole()
        finally:
            lock.close()
        wait_for(offsets_reached(settings, expected), 60, "the batch stored", interval_s=0.2)
        started = time.monotonic()
        code = consumer.stop(timeout_s=60)
        stopped_after_s = time.monotonic() - started
    finally:
        stack.kafka_tcp.heal()
        consumer.stop()
    assert code == 1 and stopped_after_s < 8, f"exit {code} after {stopped_after_s:.1f} s\n{consumer.log_tail()}"
    assert "did not close in time" in consumer.log_path.read_text()
    print(f"\nconsumer exited {code} {stopped_after_s:.1f} s after SIGTERM")


def _lock_waiters(settings: Settings) -> int:
    conn = connect(settings)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'iot.ingest_offsets'::regclass")
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def test_mosquitto_restarted_cleanly(stack: PrivateStack, settings: Settings, tmp_path: Path) -> None:
    """Invariant: Mosquitto stopped (SIGTERM, it saves its store) and started again on the same port: the
    publisher resends what was unacked, the bridge's persistent session gets what was queued, nothing lost."""

    def fault() -> None:
        stack.mosquitto.stop()
        time.sleep(2)
        stack.mosquitto.start()

    run_with_fault(settings, tmp_path / "logs", fault)

"""Faults of the brokers: Kafka SIGKILLed, Kafka SIGSTOPped 30 s, the bridge's Kafka link cut and
blackholed, Mosquitto restarted.

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
from iot_platform_tests.faults.harness import PrivateStack, run_with_fault

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


# Not run by default: failing, it waits out the whole 180 s settle (the suite must stay under 12 minutes).
# `pytest --runxfail iot_platform_tests/faults/test_broker_faults.py::test_kafka_sigstopped_30s` reproduces it.
@pytest.mark.xfail(
    run=False,
    reason="consumer defect (docs/design.md §2.7): frozen right after a batch commit, librdkafka stays stuck "
    "rejoining its group and the reopen's close() hangs, so the consumer stores nothing more; remove once fixed",
)
def test_kafka_sigstopped_30s(stack: PrivateStack, settings: Settings, tmp_path: Path) -> None:
    """Invariant: Kafka frozen (SIGSTOP) for 30 s mid-stream: the bridge stops acking, Mosquitto keeps the
    messages, and after SIGCONT everything arrives; nothing lost, nothing stored twice."""

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
    out, so it closes and reopens its Kafka client (the recovery from a librdkafka group stuck rejoining
    after a broker stall) without its close hanging on the unreachable coordinator; after healing,
    everything arrives exactly once in the database."""
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


def test_mosquitto_restarted_cleanly(stack: PrivateStack, settings: Settings, tmp_path: Path) -> None:
    """Invariant: Mosquitto stopped (SIGTERM, it saves its store) and started again on the same port: the
    publisher resends what was unacked, the bridge's persistent session gets what was queued, nothing lost."""

    def fault() -> None:
        stack.mosquitto.stop()
        time.sleep(2)
        stack.mosquitto.start()

    run_with_fault(settings, tmp_path / "logs", fault)

"""The bridge on real Mosquitto and Kafka: nothing the broker accepted is lost, bad input is dead-lettered.

The bridge runs as a subprocess (`python -m iot_platform.cli bridge`) so a test can SIGKILL it.
"""

from __future__ import annotations

import collections
import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from confluent_kafka import Consumer, TopicPartition

from iot_platform.access.connection import configure
from iot_platform.core.envelope import decode_dead_letter, decode_envelope
from iot_platform.settings import Settings
from iot_platform.stack.kafka import KafkaServer, ensure_topics
from iot_platform.stack.ports import free_port
from iot_platform_tests.helpers import mqtt_topic, publisher_credentials, service_env, wait_for

pytestmark = pytest.mark.integration


# -- harness ----------------------------------------------------------------------------------------


class BridgeProcess:
    """`iot-platform bridge` as a child process, its JSON log in ``log_path``."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> "BridgeProcess":
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "iot_platform.cli", "bridge"],
                env=service_env(self.settings),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def terminate(self, timeout_s: float = 30.0) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout_s)

    def wait_subscribed(self, timeout_s: float = 30.0, event: str = "mqtt subscribed") -> "BridgeProcess":
        """Block until the bridge's subscription exists: earlier publishes would reach no session."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(line.get("msg") == event for line in self.log_lines()):
                return self
            assert self.process is not None and self.process.poll() is None, self.log_path.read_text()[-3000:]
            time.sleep(0.1)
        raise AssertionError(f"bridge not subscribed after {timeout_s}s:\n{self.log_path.read_text()[-3000:]}")

    def log_lines(self) -> list[dict[str, object]]:
        lines = []
        for raw in self.log_path.read_text().splitlines():
            try:
                lines.append(json.loads(raw))
            except json.JSONDecodeError:
                continue
        return lines


@pytest.fixture
def bridge_factory(tmp_path: Path) -> Iterator[Callable[[Settings], BridgeProcess]]:
    started: list[BridgeProcess] = []

    def make(settings: Settings) -> BridgeProcess:
        bridge = BridgeProcess(settings, tmp_path / f"bridge-{len(started)}.log")
        started.append(bridge)
        return bridge

    yield make
    for bridge in started:
        bridge.kill()


class Publisher:
    """A QoS 1 publisher that knows which messages the broker acknowledged (PUBACK)."""

    def __init__(self, settings: Settings) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}")
        configure(self.client, settings, publisher_credentials(settings))
        self.client.max_inflight_messages_set(500)
        self.client.connect(settings.mqtt_host, settings.mqtt_port, keepalive=30)
        self.client.loop_start()
        self.sent: list[tuple[mqtt.MQTTMessageInfo, str, bytes]] = []

    def publish(self, topic: str, payload: bytes) -> None:
        self.sent.append((self.client.publish(topic, payload, qos=1), topic, payload))

    def acknowledged(self, timeout_s: float = 60.0) -> list[tuple[str, bytes]]:
        deadline = time.monotonic() + timeout_s
        for info, _, _ in self.sent:
            info.wait_for_publish(max(0.01, deadline - time.monotonic()))
        return [(topic, payload) for info, topic, payload in self.sent if info.is_published()]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass(frozen=True)
class Record:
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


def read_topic(bootstrap: str, topic: str, timeout_s: float = 30.0) -> list[Record]:
    """Every record of ``topic`` up to its current end."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex}", "enable.auto.commit": False}
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        records: list[Record] = []
        deadline = time.monotonic() + timeout_s
        pending = {p for p, end in ends.items() if end > 0}
        while pending and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            records.append(Record(message.key(), message.value(), list(message.headers() or [])))
            if message.offset() + 1 >= ends[message.partition()]:
                pending.discard(message.partition())
        assert not pending, f"could not read {topic} to its end within {timeout_s}s"
        return records
    finally:
        consumer.close()


def wait_for_count(bootstrap: str, topic: str, count: int, timeout_s: float) -> int:
    """Wait until ``topic`` holds at least ``count`` records (sum of high watermarks)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{uuid.uuid4().hex}"})
    try:
        deadline = time.monotonic() + timeout_s
        total = 0
        while time.monotonic() < deadline:
            partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            total = sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions)
            if total >= count:
                break
            time.sleep(0.2)
        return total
    finally:
        consumer.close()


def publish_paced(
    publisher: Publisher, messages: list[tuple[str, bytes]], rate_per_s: float, hold: tuple[int, threading.Event] | None = None
) -> threading.Thread:
    """Publish ``messages`` at ``rate_per_s`` in a thread; with ``hold=(index, event)`` message ``index``
    waits for ``event`` (the pace resumes from there), so a test can be sure messages remain for after it."""
    def run() -> None:
        start = time.monotonic()
        for index, (topic, payload) in enumerate(messages):
            if hold is not None and index == hold[0] and not hold[1].is_set():
                hold[1].wait()
                start = time.monotonic() - index / rate_per_s
            ahead = index / rate_per_s - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
            publisher.publish(topic, payload)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def telemetry(settings: Settings, count: int, tenants: int = 5) -> list[tuple[str, bytes]]:
    messages = []
    for seq in range(count):
        tenant = f"tenant{seq % tenants}"
        payload = json.dumps({"msg_id": f"m{seq}", "seq": seq, "temp": 20 + seq % 7}).encode()
        messages.append((mqtt_topic(settings, tenant, f"p{seq % 3}", f"dev{seq % 50}"), payload))
    return messages


def assert_all_present(settings: Settings, expected: list[tuple[str, bytes]], records: list[Record]) -> int:
    """Each expected message is in Kafka with the right key (the default ``device`` key: tenant/project/device)
    and headers; returns the duplicate count."""
    by_value: dict[bytes, list[Record]] = collections.defaultdict(list)
    for record in records:
        by_value[record.value].append(record)
    missing = [payload for _, payload in expected if payload not in by_value]
    assert not missing, f"{len(missing)} acknowledged messages missing from Kafka, e.g. {missing[:3]}"
    for topic, payload in expected:
        for record in by_value[payload]:
            envelope = decode_envelope(record.headers)
            tenant, project = topic.split("/")[-3:-1]
            assert (envelope.mqtt_topic, envelope.tenant_id, envelope.project_id, envelope.qos) == (topic, tenant, project, 1)
            assert record.key == "/".join(topic.split("/")[-3:]).encode()
    return sum(len(found) - 1 for found in by_value.values())


# -- tests -------------------------------------------------------------------------------------------


@pytest.mark.faults
@pytest.mark.parametrize("client_path", ["auto", "public"])
def test_sigkill_mid_stream_loses_nothing(settings: Settings, bridge_factory: Callable[[Settings], BridgeProcess], client_path: str) -> None:
    """20,000 QoS 1 messages over 5 tenants; the bridge is SIGKILLed mid-stream (at least 2,000 messages
    are published while no bridge runs) and restarted: every message the broker acknowledged to the
    publisher is in Kafka at least once, with the right key and headers (duplicates are allowed and
    counted). On both paho paths: the fast one (auto, with the pinned paho-mqtt) and paho's public API."""
    settings = settings.model_copy(update={"mqtt_client_path": client_path})
    first = bridge_factory(settings).start().wait_subscribed()
    assert [line["paho_path"] for line in first.log_lines() if line.get("msg") == "bridge started"] == [
        "fast" if client_path == "auto" else "public"
    ]
    messages = telemetry(settings, 20_000)
    publisher = Publisher(settings)
    # Message 8,000 waits for the kill: on a loaded machine the bridge can lag so far behind that the
    # publisher would otherwise be done before 4,000 records reach Kafka, and nothing would be published
    # while no bridge runs. Unloaded, the kill comes first and the stream never pauses.
    killed = threading.Event()
    try:
        thread = publish_paced(publisher, messages, rate_per_s=4_000, hold=(8_000, killed))
        assert wait_for_count(settings.kafka_bootstrap, settings.kafka_topic, 4_000, timeout_s=60) >= 4_000
        first.kill()
        killed_at = wait_for_count(settings.kafka_bootstrap, settings.kafka_topic, 0, timeout_s=1)
        published_at_kill = len(publisher.sent)
        killed.set()
        # Mid-stream: the publisher goes on while no bridge runs, so the broker queues for the dead
        # bridge's session (this wait fails if publishing stops before 2,000 more are sent).
        wait_for(lambda: len(publisher.sent) >= published_at_kill + 2_000, 30,
                 "2,000 messages published while no bridge runs", interval_s=0.05)
        second = bridge_factory(settings).start()
        thread.join(timeout=60)
        acknowledged = publisher.acknowledged()
    finally:
        publisher.close()
    assert len(acknowledged) == len(messages)
    wait_for_count(settings.kafka_bootstrap, settings.kafka_topic, len(acknowledged), timeout_s=60)
    # That count includes the kill's duplicates, so it can be reached while the last messages are still
    # on their way (a bridge stopped then leaves them, unacked, in its session): stop it only once every
    # acknowledged message is in Kafka, or fail below on what is missing.
    wanted = {payload for _, payload in acknowledged}

    def everything_in_kafka() -> list[Record] | None:
        records = read_topic(settings.kafka_bootstrap, settings.kafka_topic)
        return records if wanted <= {record.value for record in records} else None

    deadline = time.monotonic() + 60
    while (records := everything_in_kafka()) is None and time.monotonic() < deadline:
        time.sleep(1)
    assert second.terminate() == 0
    duplicates = assert_all_present(settings, acknowledged, records or read_topic(settings.kafka_bootstrap, settings.kafka_topic))
    print(f"\n{client_path} path: bridge SIGKILLed after {killed_at} records, {published_at_kill} published; "
          f"duplicates in Kafka: {duplicates}")


def test_batched_acks_are_accepted_so_a_restart_gets_no_redelivery(
    settings: Settings, bridge_factory: Callable[[Settings], BridgeProcess]
) -> None:
    """The bridge acks in batches (many PUBACKs in one write); Mosquitto must accept every one of
    them: after a clean stop, the next bridge on the same session is redelivered nothing. Positive
    control: a message published after it subscribed does reach it, and Mosquitto sends a resumed
    session's unacked messages right after CONNACK, before anything published later."""
    first = bridge_factory(settings).start().wait_subscribed()
    messages = telemetry(settings, 5_000)
    publisher = Publisher(settings)
    try:
        for topic, payload in messages:
            publisher.publish(topic, payload)
        assert len(publisher.acknowledged()) == len(messages)
    finally:
        publisher.close()
    assert wait_for_count(settings.kafka_bootstrap, settings.kafka_topic, len(messages), timeout_s=60) == len(messages)
    assert first.terminate() == 0
    stopped = [line for line in first.log_lines() if line.get("msg") == "bridge stopped"]
    assert stopped and stopped[0]["acked"] == len(messages) and stopped[0]["in_flight"] == 0, stopped
    second = bridge_factory(settings).start().wait_subscribed()
    probe = Publisher(settings)
    try:
        probe.publish(mqtt_topic(settings, "tenant0", "p0", "probe"), b'{"probe": true}')
        assert len(probe.acknowledged()) == 1
    finally:
        probe.close()
    assert wait_for_count(settings.kafka_bootstrap, settings.kafka_topic, len(messages) + 1, timeout_s=30) == len(messages) + 1
    assert second.terminate() == 0
    assert [line["received"] for line in second.log_lines() if line.get("msg") == "bridge stopped"] == [1], "only the probe"
    assert wait_for_count(settings.kafka_bootstrap, settings.kafka_topic, 0, timeout_s=5) == len(messages) + 1


def queue_in_session(settings: Settings, bridge_factory: Callable[[Settings], BridgeProcess], count: int,
                     payload_bytes: int = 0) -> None:
    """Create the bridge's persistent session, stop the bridge, and publish ``count`` messages into it
    (each padded with spaces, still JSON, to ``payload_bytes``)."""
    first = bridge_factory(settings).start().wait_subscribed()
    assert first.terminate() == 0
    publisher = Publisher(settings)
    try:
        for topic, payload in telemetry(settings, count):
            publisher.publish(topic, payload.ljust(payload_bytes))
        assert len(publisher.acknowledged()) == count
    finally:
        publisher.close()


def heartbeats(bridge: BridgeProcess) -> list[dict[str, object]]:
    return [line for line in bridge.log_lines() if line.get("msg") == "heartbeat"]


@pytest.mark.parametrize("client_path", ["auto", "public"])
def test_a_resumed_session_never_puts_more_than_the_window_in_memory(
    settings: Settings, bridge_factory: Callable[[Settings], BridgeProcess], client_path: str
) -> None:
    """10,000 messages wait in the session; the bridge resumes it with a window of 100. Mosquitto
    2.0.11 sends a resuming session more than its Receive Maximum (783-791 unacked seen with the code
    before the pause), but the bridge stops reading at the window: no heartbeat (every 0.1 s) shows
    more than 100 unacked, reading was paused at the window (so the window was really reached), and
    every message is acked. On both paho paths."""
    settings = settings.model_copy(update={"mqtt_receive_maximum": 100, "mqtt_client_path": client_path, "heartbeat_interval_s": 0.1})
    queue_in_session(settings, bridge_factory, 10_000)
    bridge = bridge_factory(settings).start().wait_subscribed(event="mqtt connected")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(h["acked"] == 10_000 for h in heartbeats(bridge)):
        time.sleep(0.5)
    seen = heartbeats(bridge)
    assert seen and seen[-1]["acked"] == 10_000, seen[-1:]
    assert max(int(h["in_flight"]) for h in seen) <= 100, "the window is never passed"
    assert seen[-1]["read_pauses"] > 0, "the window was never reached: this run did not test the pause"
    assert bridge.terminate() == 0


def test_paused_at_the_window_the_bridge_keeps_its_connection_through_keepalives(
    settings: Settings, bridge_factory: Callable[[Settings], BridgeProcess]
) -> None:
    """Kafka unreachable (no delivery report, no ack): the bridge holds its window of 100 and reads
    nothing more for 12 s, more than twice its 5 s keepalive; its PINGREQs keep the broker content and
    the fast path ignores the PINGRESP it leaves unread, so it stays on one connection. (The public
    path reconnects after about two keepalives there: paho_client.py.)"""
    settings = settings.model_copy(update={
        "kafka_bootstrap": f"127.0.0.1:{free_port()}",  # nothing listens: deliveries wait
        "mqtt_receive_maximum": 100, "mqtt_keepalive_s": 5, "bridge_shutdown_timeout_s": 1.0,
    })
    queue_in_session(settings, bridge_factory, 1_000)
    bridge = bridge_factory(settings).start().wait_subscribed(event="mqtt connected")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(heartbeats(bridge)) < 12:
        time.sleep(0.5)
    seen = heartbeats(bridge)
    assert len(seen) >= 12 and seen[-1]["in_flight"] == 100, seen[-1:]
    assert all(h["connected"] for h in seen) and len({h["generation"] for h in seen}) == 1, "no reconnect while paused"
    assert bridge.terminate() == 0


def test_large_payloads_stop_the_reading_at_the_producers_buffer_before_the_window(
    settings: Settings, private_kafka: KafkaServer, bridge_factory: Callable[[Settings], BridgeProcess]
) -> None:
    """Kafka stopped (SIGSTOP), 200 payloads of 16 KiB waiting in the session, a window of 1,000 and
    a producer buffer of 128 KiB: once librdkafka's queue is full the bridge reads nothing more, so it
    holds a few buffers' worth of messages (about 8 fit), not the 200 the window would let in. Kafka
    resumed, the reading resumes with it: all 200 reach Kafka and are acked."""
    settings = settings.model_copy(update={
        "kafka_bootstrap": private_kafka.bootstrap,
        "mqtt_receive_maximum": 1000, "bridge_buffer_kb": 128, "heartbeat_interval_s": 0.1,
    })
    ensure_topics(settings)
    queue_in_session(settings, bridge_factory, 200, payload_bytes=16 * 1024)
    private_kafka.pause()
    try:
        bridge = bridge_factory(settings).start().wait_subscribed(event="mqtt connected")
        time.sleep(3)
        seen = heartbeats(bridge)
    finally:
        private_kafka.resume()
    assert seen and seen[-1]["read_pauses"] > 0, "reading never paused: the buffer was not reached"
    held = max(int(h["in_flight"]) for h in seen)
    assert 0 < held <= 16, f"{held} messages of 16 KiB held with a 128 KiB buffer"
    assert wait_for_count(settings.kafka_bootstrap, settings.kafka_topic, 200, timeout_s=90) >= 200
    wait_for(lambda: any(h["acked"] == 200 for h in heartbeats(bridge)), 30, "all 200 acked", interval_s=0.2)
    assert bridge.terminate() == 0
    expected = [(topic, payload.ljust(16 * 1024)) for topic, payload in telemetry(settings, 200)]
    assert_all_present(settings, expected, read_topic(settings.kafka_bootstrap, settings.kafka_topic))


def test_mqtt_311_bridge_is_not_sent_an_acked_burst_again_after_a_clean_restart(
    settings: Settings, bridge_factory: Callable[[Settings], BridgeProcess]
) -> None:
    """The bridge on MQTT 3.1.1 (clean_session=false) takes a 100,000-message burst from 20
    `mosquitto_pub -q 1` publishers, acks it all, stops cleanly and reconnects: the broker sends it
    nothing again. With Mosquitto saving every 1,000 changes it was sent 30,287-60,289 of them again
    (18,125 and 0 with 50,000 messages, 0 with 20,000: the burst must be this large);
    benchmarks/mqtt_burst_redelivery.py measures both settings."""
    settings = settings.model_copy(update={"mqtt_protocol": "3.1.1"})
    first = bridge_factory(settings).start().wait_subscribed()
    prefix = mqtt_topic(settings, "x", "y").rsplit("/", 2)[0]
    publishers = []
    credentials = publisher_credentials(settings)
    tls = ["--cafile", str(settings.mqtt_ca_file)] if settings.mqtt_url.startswith("mqtts://") else []
    for index in range(20):
        publisher = subprocess.Popen(
            ["mosquitto_pub", "-h", settings.mqtt_host, "-p", str(settings.mqtt_port), *tls, "-q", "1", "-l",
             "-u", credentials.username, "-P", credentials.password.get_secret_value(),
             "-i", f"burst-{uuid.uuid4().hex[:8]}", "-t", f"{prefix}/tenant{index % 4}/p1/dev{index}"],
            stdin=subprocess.PIPE,
        )
        publishers.append((publisher, "".join(f'{{"msg_id":"{index}-{n}"}}\n' for n in range(5_000)).encode()))
    for publisher, lines in publishers:
        assert publisher.stdin is not None
        publisher.stdin.write(lines)
        publisher.stdin.close()
    assert all(publisher.wait(300) == 0 for publisher, _ in publishers)
    assert wait_for_count(settings.kafka_bootstrap, settings.kafka_topic, 100_000, timeout_s=180) == 100_000
    assert first.terminate() == 0
    [stopped] = [line for line in first.log_lines() if line.get("msg") == "bridge stopped"]
    assert stopped["acked"] == 100_000 and stopped["in_flight"] == 0, stopped
    second = bridge_factory(settings).start().wait_subscribed()  # a resumed session's messages come before the SUBACK
    probe = Publisher(settings)  # queued behind anything the session still held: once it is in Kafka, all that came
    try:
        probe.publish(mqtt_topic(settings, "tenant0", "p1", "probe"), b'{"probe": true}')
        assert len(probe.acknowledged()) == 1
    finally:
        probe.close()
    assert wait_for_count(settings.kafka_bootstrap, settings.kafka_topic, 100_001, timeout_s=60) >= 100_001
    assert second.terminate() == 0
    [again] = [line["received"] for line in second.log_lines() if line.get("msg") == "bridge stopped"]
    print(f"\nMQTT 3.1.1 bridge: 100,000-message burst acked; sent again after a clean restart: {again - 1}")
    assert again == 1, "only the probe"
    assert wait_for_count(settings.kafka_bootstrap, settings.kafka_topic, 0, timeout_s=5) == 100_001


def test_bad_input_is_dead_lettered_while_good_traffic_flows(
    settings: Settings, bridge_factory: Callable[[Settings], BridgeProcess]
) -> None:
    """Bad topics, invalid ids and oversized payloads go to the DLQ topic with their reasons and the
    original bytes (cut, and marked, only where Kafka cannot take them); good messages keep flowing."""
    settings = settings.model_copy(update={"max_payload_bytes": 10_000, "kafka_max_message_bytes": 100_000})
    bridge = bridge_factory(settings).start().wait_subscribed()
    prefix = mqtt_topic(settings, "x", "y").rsplit("/", 2)[0]
    bad = [
        (f"{prefix}/only-tenant", b"no project level", "topic_mismatch", False),
        (f"{prefix}/bad.tenant/p1", b"dot in tenant", "invalid_tenant_id", False),
        (f"{prefix}/t1/p%1/dev", b"percent in project", "invalid_project_id", False),
        (mqtt_topic(settings, "t1", "p1"), b"A" * 10_001, "payload_too_large", False),
        (mqtt_topic(settings, "t1", "p1"), bytes(range(256)) * 800, "payload_too_large", True),  # 204,800 bytes
    ]
    good = telemetry(settings, 2_000)
    publisher = Publisher(settings)
    try:
        for index, (topic, payload) in enumerate(good):
            publisher.publish(topic, payload)
            if index % 400 == 0 and index // 400 < len(bad):
                publisher.publish(*bad[index // 400][:2])
        acknowledged = publisher.acknowledged()
    finally:
        publisher.close()
    assert len(acknowledged) == len(good) + len(bad)
    wait_for_count(settings.kafka_bootstrap, settings.kafka_topic, len(good), timeout_s=60)
    wait_for_count(settings.kafka_bootstrap, settings.kafka_dlq_topic, len(bad), timeout_s=30)
    deadline = time.monotonic() + 10
    while not any(line.get("msg") == "heartbeat" for line in bridge.log_lines()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert bridge.terminate() == 0
    assert_all_present(settings, good, read_topic(settings.kafka_bootstrap, settings.kafka_topic))
    dead = {decode_dead_letter(r.headers).mqtt_topic + str(len(r.value)): r for r in read_topic(settings.kafka_bootstrap, settings.kafka_dlq_topic)}
    assert len(dead) == len(bad)
    for topic, payload, reason, truncated in bad:
        found = [r for r in dead.values() if decode_dead_letter(r.headers).mqtt_topic == topic and payload.startswith(r.value)]
        assert len(found) == 1, (topic, reason)
        letter = decode_dead_letter(found[0].headers)
        assert (letter.reason, letter.truncated, letter.original_size) == (reason, truncated, len(payload))
        assert found[0].value == payload if not truncated else 0 < len(found[0].value) < len(payload)
    heartbeats = [line for line in bridge.log_lines() if line.get("msg") == "heartbeat"]
    assert heartbeats, "the bridge logs a periodic heartbeat"
    assert len(bridge.log_lines()) < 100, "no log line per message"


@pytest.fixture
def private_kafka(tmp_path: Path) -> Iterator[KafkaServer]:
    """A Kafka of this test alone, so pausing it disturbs no other test."""
    server = KafkaServer(tmp_path / "kafka", free_port(), free_port())
    try:
        yield server.start()
    finally:
        server.resume()
        server.kill()


@pytest.mark.faults
def test_kafka_paused_30s_loses_nothing_and_recovers(
    settings: Settings, private_kafka: KafkaServer, bridge_factory: Callable[[Settings], BridgeProcess]
) -> None:
    """Kafka SIGSTOPped for 30 s mid-stream, then resumed: the bridge stops acking (the broker keeps
    the messages and stops sending once the receive maximum is unacked), retries deliveries that time
    out, recovers on its own, and nothing is lost."""
    settings = settings.model_copy(
        update={
            "kafka_bootstrap": private_kafka.bootstrap,
            # Shorter than the pause: deliveries time out and must be produced again, not dropped.
            "kafka_delivery_timeout_ms": 10_000,
            "kafka_request_timeout_ms": 5_000,
            "bridge_reconnect_max_backoff_s": 3.0,
        }
    )
    ensure_topics(settings)
    bridge = bridge_factory(settings).start().wait_subscribed()
    messages = telemetry(settings, 12_000)
    publisher = Publisher(settings)
    try:
        thread = publish_paced(publisher, messages, rate_per_s=300)
        assert wait_for_count(settings.kafka_bootstrap, settings.kafka_topic, 1_500, timeout_s=60) >= 1_500
        private_kafka.pause()
        try:
            time.sleep(2)  # deliveries confirmed just before the pause are acked by now
            frozen_from = len(bridge.log_lines())
            time.sleep(28)
            frozen_to = len(bridge.log_lines())
        finally:
            private_kafka.resume()
        thread.join(timeout=120)
        acknowledged = publisher.acknowledged()
    finally:
        publisher.close()
    assert len(acknowledged) == len(messages)
    wait_for_count(settings.kafka_bootstrap, settings.kafka_topic, len(acknowledged), timeout_s=90)
    assert bridge.process is not None and bridge.process.poll() is None, "the bridge recovered without a restart"
    assert bridge.terminate() == 0
    duplicates = assert_all_present(settings, acknowledged, read_topic(settings.kafka_bootstrap, settings.kafka_topic))
    lines = bridge.log_lines()
    frozen = [line for line in lines[frozen_from:frozen_to] if line.get("msg") == "heartbeat"]
    assert len(frozen) >= 20, "a heartbeat a second while Kafka was paused"
    assert len({line["acked"] for line in frozen}) == 1, "nothing is acked while Kafka cannot confirm"
    window = settings.mqtt_receive_maximum
    in_flight = max(int(line["in_flight"]) for line in frozen)
    assert window // 2 < in_flight <= window, f"in flight {in_flight}: the broker stops at the window ({window})"
    [stopped] = [line for line in lines if line.get("msg") == "bridge stopped"]
    assert stopped["acked"] > frozen[0]["acked"] and stopped["in_flight"] == 0, "acks resumed after the pause"
    assert stopped["retries"] > 0, "deliveries that timed out during the pause were produced again"
    print(f"\nkafka paused 30 s: duplicates {duplicates}, delivery retries {stopped['retries']}, in flight {in_flight}")

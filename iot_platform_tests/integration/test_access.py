"""Devices prove who they are: broker credentials, per-tenant/per-project ACLs and TLS, on real servers."""

from __future__ import annotations

import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from confluent_kafka import Consumer, TopicPartition
from pydantic import SecretStr

from iot_platform.access import operations
from iot_platform.access.connection import MqttCredentials, configure
from iot_platform.access.dynsec import DynsecClient
from iot_platform.core.envelope import decode_dead_letter, decode_envelope
from iot_platform.settings import Settings
from iot_platform.stack.certs import server_certificate
from iot_platform.stack.mosquitto import MosquittoServer, new_admin
from iot_platform.stack.ports import free_port
from iot_platform.storage.db import connect
from iot_platform.storage.migrate import apply_migrations
from iot_platform_tests.faults.harness import pipeline
from iot_platform_tests.helpers import mqtt_topic, service_env, wait_for

pytestmark = pytest.mark.integration
NOT_AUTHORIZED = 0x87


@dataclass
class Device:
    """A connected MQTT 5 client that records its CONNACK, DISCONNECT and every PUBACK reason code."""

    settings: Settings
    credentials: MqttCredentials | None
    client_id: str | None = None
    connack: mqtt.ReasonCode | None = None
    disconnected: threading.Event = field(default_factory=threading.Event)
    acks: dict[int, int] = field(default_factory=dict)

    def connect(self, timeout_s: float = 10.0) -> "Device":
        cid = self.client_id or (self.credentials.client_id if self.credentials else None) or f"t-{uuid.uuid4().hex[:8]}"
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
        configure(self.client, self.settings, self.credentials)
        answered = threading.Event()

        def on_connect(_c: object, _u: object, _f: object, rc: mqtt.ReasonCode, _p: object) -> None:
            self.connack = rc
            answered.set()

        self.client.on_connect = on_connect
        self.client.on_disconnect = lambda *_a: self.disconnected.set()
        self.client.on_publish = lambda _c, _u, mid, rc, _p: self.acks.__setitem__(mid, rc.value)
        self.client.reconnect_delay_set(60, 120)  # a kicked client must stay out for the assertion
        self.client.connect(self.settings.mqtt_host, self.settings.mqtt_port, keepalive=30)
        self.client.loop_start()
        assert answered.wait(timeout_s), "no CONNACK"
        return self

    @property
    def accepted(self) -> bool:
        return self.connack is not None and not self.connack.is_failure

    def publish(self, topic: str, payload: bytes = b'{"v":1}') -> int:
        """QoS 1; the PUBACK's reason code."""
        mid = self.client.publish(topic, payload, qos=1).mid
        return wait_for(lambda: self.acks.get(mid, -1) + 1, 10, f"PUBACK for {topic}", interval_s=0.02) - 1

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def devices() -> Iterator[list[Device]]:
    made: list[Device] = []
    yield made
    for device in made:
        device.close()


@pytest.fixture
def registry(settings: Settings) -> Settings:
    apply_migrations(settings)
    return settings


def _tag(settings: Settings) -> str:
    return settings.mqtt_client_id[-10:]


def _creds(issued: operations.IssuedCredentials) -> MqttCredentials:
    return MqttCredentials(issued.username, SecretStr(issued.password), issued.client_id)


def _device(settings: Settings, made: list[Device], credentials: MqttCredentials | None, **kw: object) -> Device:
    device = Device(settings, credentials, **kw)  # type: ignore[arg-type]
    made.append(device)
    return device.connect()


def test_anonymous_and_wrong_password_are_refused_on_both_listeners(registry: Settings, mosquitto_server: MosquittoServer, devices: list[Device]) -> None:
    """No listener accepts an anonymous client or a wrong password, loopback plain MQTT included; the right password connects."""
    t = f"a{_tag(registry)}"
    operations.add_tenant(registry, t)
    issued = _creds(operations.add_device(registry, t, "p1", "d1"))
    wrong = MqttCredentials(issued.username, SecretStr("not-the-password"), issued.client_id)
    plain = registry.model_copy(update={"mqtt_url": mosquitto_server.plain_url})
    for settings in (registry, plain):
        assert _device(settings, devices, None).connack.value == NOT_AUTHORIZED  # type: ignore[union-attr]
        assert _device(settings, devices, wrong).connack.is_failure  # type: ignore[union-attr]
        assert _device(settings, devices, issued).accepted
    # a device bound to its client id cannot connect under another one
    assert _device(registry, devices, issued, client_id="someone-else").connack.is_failure  # type: ignore[union-attr]


def test_disabled_device_and_tenant_are_refused_and_dropped_within_5s(registry: Settings, devices: list[Device]) -> None:
    """`devices disable` and `tenants disable` drop live connections within 5 s and refuse new ones; rotate replaces the password."""
    t = f"d{_tag(registry)}"
    operations.add_tenant(registry, t)
    one = _creds(operations.add_device(registry, t, "p1", "d1"))
    two = _creds(operations.add_device(registry, t, "p2", "d2"))
    live_one, live_two = _device(registry, devices, one), _device(registry, devices, two)
    assert live_one.accepted and live_two.accepted

    begin = time.monotonic()
    operations.disable_device(registry, t, "p1", "d1")
    assert live_one.disconnected.wait(5.0) and time.monotonic() - begin < 5.0
    assert _device(registry, devices, one).connack.is_failure  # type: ignore[union-attr]
    assert not live_two.disconnected.is_set()  # positive control: the other device stays

    begin = time.monotonic()
    operations.disable_tenant(registry, t)
    assert live_two.disconnected.wait(5.0) and time.monotonic() - begin < 5.0
    assert _device(registry, devices, two).connack.is_failure  # type: ignore[union-attr]


def test_rotate_invalidates_the_old_password(registry: Settings, devices: list[Device]) -> None:
    t = f"r{_tag(registry)}"
    operations.add_tenant(registry, t)
    old = _creds(operations.add_device(registry, t, "p1", "d1"))
    live = _device(registry, devices, old)
    new = _creds(operations.rotate_device(registry, t, "p1", "d1"))
    assert live.disconnected.wait(5.0)
    assert _device(registry, devices, old).connack.is_failure  # type: ignore[union-attr]
    assert _device(registry, devices, new).accepted


def _kafka_topics(settings: Settings) -> list[str]:
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"peek-{uuid.uuid4().hex[:6]}", "enable.auto.commit": False})
    try:
        found: list[str] = []
        for topic in (settings.kafka_topic, settings.kafka_dlq_topic):
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            parts = [TopicPartition(topic, p, 0) for p in meta.partitions]
            ends = [consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in parts]
            consumer.assign(parts)
            remaining = sum(ends)
            deadline = time.monotonic() + 20
            while remaining and time.monotonic() < deadline:
                for message in consumer.consume(100, timeout=1.0):
                    if message.error() is None:
                        decode = decode_envelope if message.topic() == settings.kafka_topic else decode_dead_letter
                        found.append(message.topic() + ":" + decode(message.headers()).mqtt_topic)
                        remaining -= 1
        return found
    finally:
        consumer.close()


def test_a_device_publishes_only_to_its_own_project(registry: Settings, devices: list[Device], tmp_path: Path) -> None:
    """Tenant A's device: QoS 1 to tenant B's topic and to another project of A gets PUBACK 0x87 and
    reaches neither Kafka nor PostgreSQL; to its own topic it lands exactly once."""
    a, b = f"x{_tag(registry)}", f"y{_tag(registry)}"
    for tenant in (a, b):
        operations.add_tenant(registry, tenant)
    device = _device(registry, devices, _creds(operations.add_device(registry, a, "p1", "d1")))
    operations.add_device(registry, b, "p1", "d1")
    with pipeline(registry, tmp_path / "logs"):
        assert device.publish(mqtt_topic(registry, b, "p1", "d1", "telemetry")) == NOT_AUTHORIZED
        assert device.publish(mqtt_topic(registry, a, "p2", "d1", "telemetry")) == NOT_AUTHORIZED
        own = mqtt_topic(registry, a, "p1", "d1", "telemetry")
        assert device.publish(own, b'{"msg_id":"own-1","v":1}') in (0, 0x10)

        def stored() -> list[tuple[str, str]]:
            conn = connect(registry)
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT tenant_id, project_id FROM iot.messages WHERE tenant_id IN (%s, %s)", (a, b))
                    return [tuple(r) for r in cur.fetchall()]  # type: ignore[misc]
            finally:
                conn.close()

        assert wait_for(stored, 30, "own message stored", interval_s=0.5) == [(a, "p1")]
        # The refused messages were published first: the stored own message bounds their arrival.
        kafka = _kafka_topics(registry)
    assert [t for t in kafka if f"/{b}/" in t or f"/{a}/p2/" in t] == []
    assert sum(1 for t in kafka if t.endswith(":" + own)) == 1


def test_the_bridge_may_subscribe_but_not_publish(settings: Settings, devices: list[Device]) -> None:
    """The bridge's client gets PUBACK 0x87 on its own filter; it may subscribe plainly and as a shared group."""
    assert settings.mqtt_username and settings.mqtt_password
    bridge = _device(settings, devices, MqttCredentials(settings.mqtt_username, settings.mqtt_password))
    assert bridge.publish(mqtt_topic(settings, "ta", "p1", "d", "telemetry")) == NOT_AUTHORIZED
    granted: dict[int, list[int]] = {}
    bridge.client.on_subscribe = lambda _c, _u, mid, rcs, _p: granted.__setitem__(mid, [r.value for r in rcs])
    plain = bridge.client.subscribe(settings.mqtt_topic_filter, qos=1)[1]
    shared = bridge.client.subscribe(f"$share/g1/{settings.mqtt_topic_filter}", qos=1)[1]
    other = bridge.client.subscribe("other/#", qos=1)[1]
    wait_for(lambda: len(granted) == 3, 10, "SUBACKs", interval_s=0.05)
    assert (granted[plain], granted[shared], granted[other]) == ([1], [1], [NOT_AUTHORIZED])


def test_a_client_that_does_not_trust_the_ca_cannot_connect(settings: Settings) -> None:
    """TLS is verified: without our CA the handshake fails; with it (and the host name in the SAN) it succeeds."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5)
    client.tls_set(cert_reqs=ssl.CERT_REQUIRED)  # the system's CAs only
    with pytest.raises(ssl.SSLCertVerificationError):
        client.connect(settings.mqtt_host, settings.mqtt_port, keepalive=10)
    trusting = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5)
    trusting.tls_set(ca_certs=str(settings.mqtt_ca_file))
    assert trusting.connect("localhost", settings.mqtt_port, keepalive=10) == mqtt.MQTT_ERR_SUCCESS
    trusting.disconnect()


def test_credentials_and_acls_survive_a_restart_and_a_sigkill(registry: Settings, tmp_path: Path, devices: list[Device]) -> None:
    """dynsec saves its file on every change: after a clean restart and after SIGKILL the device still
    connects with its password, a disabled device stays refused, and the ACL still refuses another project."""
    server = MosquittoServer(tmp_path / "mosquitto", None, admin=new_admin(), tls_port=free_port(),
                             tls=server_certificate(tmp_path / "tls", "mosquitto"))
    private = registry.model_copy(update={"mqtt_url": server.url, "mqtt_ca_file": server.ca_file,
                                          "mqtt_admin_username": server.admin.username, "mqtt_admin_password": server.admin.password})
    server.start()
    try:
        operations.add_tenant(private, "ta")
        good = _creds(operations.add_device(private, "ta", "p1", "d1"))
        off = _creds(operations.add_device(private, "ta", "p1", "d2"))
        operations.disable_device(private, "ta", "p1", "d2")
        for stop in (server.stop, server.kill):
            stop()
            server.start()
            device = _device(private, devices, good)
            assert device.accepted
            assert device.publish(mqtt_topic(private, "ta", "p2", "d1")) == NOT_AUTHORIZED
            assert device.publish(mqtt_topic(private, "ta", "p1", "d1")) in (0, 0x10)
            assert _device(private, devices, off).connack.is_failure  # type: ignore[union-attr]
    finally:
        for device in devices:
            device.close()
        devices.clear()
        server.kill()


def test_broker_state_matches_what_the_commands_did(registry: Settings) -> None:
    """The broker holds exactly the roles, group and client the commands created (names and ACLs)."""
    t = f"s{_tag(registry)}"
    operations.add_tenant(registry, t)
    operations.add_device(registry, t, "p1", "d1")
    with DynsecClient(registry) as admin:
        state = admin.read_state()
    client = state.clients[f"{t}.p1.d1"]
    assert client.roles == (f"project:{t}:p1",) and client.groups == (f"tenant:{t}",) and client.client_id == f"{t}.p1.d1"
    assert {a.topic for a in state.roles[f"project:{t}:p1"]} == {mqtt_topic(registry, t, "p1") + "/#", mqtt_topic(registry, t, "") + "#"}


def test_the_bridge_with_wrong_credentials_exits_naming_the_setting(settings: Settings) -> None:
    """A refused CONNECT is a misconfiguration: the bridge exits 1 and its log names IOT_MQTT_PASSWORD; no
    password at all is refused before connecting (exit 2, one line naming it)."""
    wrong = settings.model_copy(update={"mqtt_password": SecretStr("not-the-password")})
    done = subprocess.run([sys.executable, "-m", "iot_platform.cli", "bridge"], env=service_env(wrong),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert "IOT_MQTT_PASSWORD" in done.stdout + done.stderr
    missing = settings.model_copy(update={"mqtt_password": None})
    env = {k: v for k, v in service_env(missing).items() if k != "IOT_MQTT_PASSWORD"}
    done = subprocess.run([sys.executable, "-m", "iot_platform.cli", "bridge"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "IOT_MQTT_PASSWORD" in done.stderr and "Traceback" not in done.stderr

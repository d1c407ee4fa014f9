"""A private platform for tests and benchmarks: Mosquitto, Kafka and PostgreSQL of our own in a
temporary directory, the services as real ``iot-platform`` subprocesses, and a readiness probe.

The servers are secured like the platform's (Mosquitto: credentials on every listener, TLS with a
private CA; each ``settings()`` provisions its own bridge and test publisher) and can sit behind
:class:`~iot_platform.stack.tcp_proxy.TcpProxy` instances (Kafka then advertises the proxy's port, so
every client's traffic crosses it). Kafka is one broker, or three (``kafka_brokers=3``: one KRaft
quorum, topics with three replicas and ``min.insync.replicas=2``, as `dev up` runs them). The bridge and the consumer run in sessions of their own, so a
SIGKILL hits exactly them. The fault tests (``iot_platform_tests/faults/``) and ``benchmarks/`` share it.
"""

from __future__ import annotations

import contextlib
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import SecretStr

from iot_platform.access.connection import MqttCredentials
from iot_platform.access.dynsec import DynsecClient
from iot_platform.access.repair import acl_json, create_client
from iot_platform.access.state import ClientSpec, bridge_client
from iot_platform.devices.fleet import FleetSpec
from iot_platform.devices.simulate import new_run_id, simulate
from iot_platform.settings import DEFAULT_KAFKA_JIT, KafkaJit, Settings
from iot_platform.stack.certs import server_certificate
from iot_platform.stack.databases import ensure_platform_role_and_databases
from iot_platform.stack.kafka import ensure_topics
from iot_platform.stack.kafka_cluster import KafkaCluster, NodeAddress
from iot_platform.stack.mosquitto import MosquittoServer, new_admin
from iot_platform.stack.ports import free_port
from iot_platform.stack.postgres import PostgresServer
from iot_platform.stack.tcp_proxy import TcpProxy
from iot_platform.storage.migrate import apply_migrations


@dataclass
class PrivateStack:
    """Mosquitto, Kafka (1 or 3 brokers) and PostgreSQL of our own; optionally Kafka (one broker) and/or
    PostgreSQL behind a proxy."""

    root: Path
    kafka_proxy: bool = False
    pg_proxy: bool = False
    kafka_brokers: int = 1
    kafka_jit: KafkaJit = DEFAULT_KAFKA_JIT
    mosquitto: MosquittoServer = field(init=False)
    kafka: KafkaCluster = field(init=False)
    postgres: PostgresServer = field(init=False)
    kafka_tcp: TcpProxy | None = field(init=False, default=None)
    pg_tcp: TcpProxy | None = field(init=False, default=None)

    def start(self) -> "PrivateStack":
        self.mosquitto = MosquittoServer(
            self.root / "mosquitto", free_port(), admin=new_admin(), tls_port=free_port(),
            tls=server_certificate(self.root / "tls", "mosquitto"),
        )
        if self.kafka_proxy and self.kafka_brokers != 1:
            raise ValueError("a Kafka proxy stands in front of one broker only")
        proxy_port = free_port() if self.kafka_proxy else None
        nodes = [NodeAddress("127.0.0.1", free_port(), free_port(), proxy_port) for _ in range(self.kafka_brokers)]
        self.kafka = KafkaCluster(self.root / "kafka", nodes, jit=self.kafka_jit)
        self.postgres = PostgresServer(self.root / "postgres", free_port())
        try:
            self.mosquitto.start()
            if proxy_port is not None:
                self.kafka_tcp = TcpProxy(proxy_port, "127.0.0.1", nodes[0].port).start()
            self.kafka.start()
            self.postgres.start()
            if self.pg_proxy:
                self.pg_tcp = TcpProxy(free_port(), "127.0.0.1", self.postgres.port).start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for action in (
            lambda: self.kafka.resume(),
            lambda: self.kafka.kill(),
            lambda: self.mosquitto.kill(),
            lambda: self.postgres.destroy(),
            lambda: self.kafka_tcp and self.kafka_tcp.stop(),
            lambda: self.pg_tcp and self.pg_tcp.stop(),
        ):
            with contextlib.suppress(Exception):
                action()

    def settings(self, home: Path) -> Settings:
        """Settings isolated like the ``settings`` fixture: own topics, group, topic namespace, database."""
        tag = uuid.uuid4().hex[:10]
        settings = Settings(
            home=home,
            mqtt_url=self.mosquitto.url,
            mqtt_ca_file=self.mosquitto.ca_file,
            mqtt_admin_username=self.mosquitto.admin.username,
            mqtt_admin_password=self.mosquitto.admin.password,
            kafka_bootstrap=f"127.0.0.1:{self.kafka_tcp.port}" if self.kafka_tcp else self.kafka.bootstrap,
            kafka_brokers=self.kafka_brokers,
            pg_host="127.0.0.1",
            pg_port=self.pg_tcp.port if self.pg_tcp else self.postgres.port,
            bridge_metrics_port=0,
            consumer_metrics_port=0,
            heartbeat_interval_s=1.0,
            kafka_topic=f"iot-messages-{tag}",
            kafka_dlq_topic=f"iot-messages-dlq-{tag}",
            kafka_consumer_group=f"iot-postgres-writer-{tag}",
            mqtt_client_id=f"iot-bridge-{tag}",
            mqtt_topic_filter=f"t{tag}/mtic/msg/client/realtime/#",
            mqtt_topic_grammar=f"t{tag}/mtic/msg/client/realtime/{{tenant_id}}/{{project_id}}[/...]",
            pg_database=f"iot_fault_{tag}",
        )
        settings = provision_mqtt_access(settings)
        ensure_topics(settings)
        ensure_platform_role_and_databases(self.postgres.admin_dsn, settings, settings.pg_database)
        apply_migrations(settings)
        return settings


class ServiceProcess:
    """`iot-platform bridge|consumer` as a subprocess with these settings; its log in ``log_dir``."""

    def __init__(self, name: str, settings: Settings, log_dir: Path, extra_env: dict[str, str] | None = None) -> None:
        self.name, self.settings, self.log_dir = name, settings, log_dir
        self.extra_env = extra_env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def start(self) -> "ServiceProcess":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = self.settings.child_env() | self.extra_env
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "iot_platform.cli", self.name],
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.starts += 1
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no flush, no ack, no commit."""
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout_s``; returns the exit code."""
        if self.process is None:
            return None
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@contextlib.contextmanager
def pipeline(settings: Settings, log_dir: Path, consumer_env: dict[str, str] | None = None) -> Iterator[tuple[ServiceProcess, ServiceProcess]]:
    """Bridge and consumer running; both stopped (SIGTERM, then SIGKILL) when the block ends."""
    bridge = ServiceProcess("bridge", settings, log_dir)
    consumer = ServiceProcess("consumer", settings, log_dir, consumer_env)
    try:
        bridge.start()
        consumer.start()
        wait_pipeline_ready(settings, timeout_s=90, services=(bridge, consumer))
        yield bridge, consumer
    finally:
        for service in (bridge, consumer):
            with contextlib.suppress(Exception):
                service.stop(timeout_s=15)


def fleet_spec(settings: Settings, *, bad_fraction: float = 0.0, seed: int = 1, **overrides: object) -> FleetSpec:
    values: dict[str, object] = dict(
        tenants=3, projects=2, devices=5, topic_grammar=settings.mqtt_topic_grammar, run_id=new_run_id(),
        bad_fraction=bad_fraction, max_payload_bytes=settings.max_payload_bytes, seed=seed,
    )
    values.update(overrides)
    return FleetSpec(**values)  # type: ignore[arg-type]


def wait_pipeline_ready(settings: Settings, timeout_s: float, services: tuple[ServiceProcess, ...] = ()) -> None:
    """A probe message published to MQTT is stored in the database: the bridge has subscribed and
    both services work. Raises with the services' logs otherwise."""
    spec = fleet_spec(settings, tenants=1, projects=1, devices=1, run_id=f"probe{uuid.uuid4().hex[:6]}")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for service in services:
            if not service.alive():
                raise AssertionError(f"{service.name} exited early:\n{service.log_tail()}")
        simulate(settings, spec, credentials_for=publisher_for(settings), rate=None, count=1, drain_timeout_s=5)
        if stored_count(settings, spec.run_id):
            return
        time.sleep(1.0)
    logs = "\n".join(f"--- {s.name} ---\n{s.log_tail()}" for s in services)
    raise AssertionError(f"pipeline not ready within {timeout_s} s\n{logs}")


def stored_count(settings: Settings, run_id: str) -> int:
    """Rows of simulator run ``run_id`` in iot.messages (0 while the database is not ready)."""
    from iot_platform.storage.db import connect

    try:
        conn = connect(settings)
    except Exception:  # noqa: BLE001 - not ready yet
        return 0
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM iot.messages WHERE payload_json->>'run_id' = %s", (run_id,))
            return int(cur.fetchone()[0])
    except Exception:  # noqa: BLE001 - schema or partition not there yet
        return 0
    finally:
        conn.close()


_PUBLISHERS: dict[str, MqttCredentials] = {}


def provision_mqtt_access(settings: Settings) -> Settings:
    """Broker clients of one test's topic namespace; returns ``settings`` with the bridge's credentials.

    The bridge gets the platform's bridge role for this test's filter (subscribe, plain or shared;
    publish nothing). The test publisher (:func:`publisher_credentials`) may publish anywhere under the
    filter, bad topics included, so the bridge's dead-letter paths stay testable with ACLs on.
    Needs ``settings.mqtt_client_id`` unique per test (the fixtures tag it).
    """
    tag = settings.mqtt_client_id
    bridge = bridge_client(f"bridge-{tag}", settings.mqtt_topic_filter)
    bridge_password, publisher_password = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    publisher_role = f"publisher-{tag}"
    with DynsecClient(settings) as admin:
        admin.execute(
            [
                {"command": "createRole", "rolename": bridge.role,
                 "acls": [acl_json(a) for a in bridge.acls]},
                {"command": "createRole", "rolename": publisher_role,
                 "acls": [{"acltype": "publishClientSend", "topic": settings.mqtt_topic_filter, "allow": True}]},
                *create_client(ClientSpec(bridge.username, roles=(bridge.role,)), bridge_password),
                *create_client(ClientSpec(f"publisher-{tag}", roles=(publisher_role,)), publisher_password),
            ]
        )
    _PUBLISHERS[bridge.username] = MqttCredentials(f"publisher-{tag}", SecretStr(publisher_password))
    return settings.model_copy(update={"mqtt_username": bridge.username, "mqtt_password": SecretStr(bridge_password)})


def publisher_credentials(settings: Settings) -> MqttCredentials:
    """The publisher :func:`provision_mqtt_access` made for these settings."""
    assert settings.mqtt_username is not None, "settings without provision_mqtt_access"
    return _PUBLISHERS[settings.mqtt_username]


def publisher_for(settings: Settings) -> "Callable[[str, str], MqttCredentials]":
    """``credentials_for`` of :func:`iot_platform.devices.simulate.simulate`: the test publisher for every project."""
    credentials = publisher_credentials(settings)
    return lambda _tenant, _project: credentials

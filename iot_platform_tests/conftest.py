"""Session-wide real servers (Mosquitto, Kafka, PostgreSQL) on free loopback ports.

The servers are the same launchers `iot-platform dev up` uses, secured the same way by default:
Mosquitto refuses anonymous clients and serves TLS (certificate from a private CA of the session),
and each test gets broker clients of its own (:func:`iot_platform_tests.helpers.provision_mqtt_access`). Each lives in a temporary directory
and is stopped at the end of the session, also when tests fail. The function-scoped ``settings``
fixture isolates one test from another: its own Kafka topics and consumer group, its own MQTT topic
namespace and client id, and a fresh, empty database.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from iot_platform.settings import Settings
from iot_platform.stack.databases import drop_database, ensure_platform_role_and_databases
from iot_platform.stack.kafka import KafkaServer, ensure_topics
from iot_platform.stack.certs import server_certificate
from iot_platform.stack.mosquitto import MosquittoServer, new_admin
from iot_platform.stack.ports import free_port
from iot_platform.stack.postgres import PostgresServer
from iot_platform_tests.helpers import provision_mqtt_access


@pytest.fixture(scope="session")
def stack_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="iot-test-stack-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server(stack_dir: Path) -> Iterator[PostgresServer]:
    server = PostgresServer(stack_dir / "postgres", free_port())
    try:
        yield server.start()
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def kafka_server(stack_dir: Path) -> Iterator[KafkaServer]:
    # Retention checks every second (Kafka: 5 min), so a test can watch retention delete records.
    server = KafkaServer(stack_dir / "kafka", free_port(), free_port(), retention_check_interval_ms=1000)
    try:
        yield server.start()
    finally:
        server.resume()
        server.kill()


@pytest.fixture(scope="session")
def mosquitto_server(stack_dir: Path) -> Iterator[MosquittoServer]:
    server = MosquittoServer(
        stack_dir / "mosquitto", free_port(), admin=new_admin(), tls_port=free_port(),
        tls=server_certificate(stack_dir / "tls", "mosquitto"),
    )
    try:
        yield server.start()
    finally:
        server.kill()


@pytest.fixture(scope="session")
def base_settings(
    stack_dir: Path, postgres_server: PostgresServer, kafka_server: KafkaServer, mosquitto_server: MosquittoServer
) -> Settings:
    settings = Settings(
        home=stack_dir / "home",
        mqtt_url=mosquitto_server.url,
        mqtt_ca_file=mosquitto_server.ca_file,
        mqtt_admin_username=mosquitto_server.admin.username,
        mqtt_admin_password=mosquitto_server.admin.password,
        kafka_bootstrap=kafka_server.bootstrap,
        pg_host=postgres_server.host,
        pg_port=postgres_server.port,
        bridge_metrics_port=0,
        consumer_metrics_port=0,
        heartbeat_interval_s=1.0,
    )
    ensure_platform_role_and_databases(postgres_server.admin_dsn, settings, settings.pg_database)
    return settings


@pytest.fixture
def settings(base_settings: Settings, postgres_server: PostgresServer, tmp_path: Path) -> Iterator[Settings]:
    tag = uuid.uuid4().hex[:10]
    isolated = base_settings.model_copy(
        update={
            "home": tmp_path / "home",
            "kafka_topic": f"iot-messages-{tag}",
            "kafka_dlq_topic": f"iot-messages-dlq-{tag}",
            "kafka_consumer_group": f"iot-postgres-writer-{tag}",
            "mqtt_client_id": f"iot-bridge-{tag}",
            "mqtt_topic_filter": f"t{tag}/mtic/msg/client/realtime/#",
            "mqtt_topic_grammar": f"t{tag}/mtic/msg/client/realtime/{{tenant_id}}/{{project_id}}[/...]",
            "pg_database": f"iot_test_{tag}",
        }
    )
    isolated = provision_mqtt_access(isolated)
    ensure_topics(isolated)
    ensure_platform_role_and_databases(postgres_server.admin_dsn, isolated, isolated.pg_database)
    try:
        yield isolated
    finally:
        if postgres_server.is_running():
            drop_database(postgres_server.admin_dsn, isolated.pg_database)

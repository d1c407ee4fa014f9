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


# The modules that take longest, slowest first, with seconds from a serial run (2 cores; --durations):
# `make test` runs them first in two xdist workers, so neither worker is left with a long module at the
# end. The dev-platform modules share one platform (integration/conftest.py) and form one unit of work.
SLOWEST_FIRST = (
    "integration/test_dagster_services.py",  # 272 s, 42 s of it `dev up`
    "integration/test_dev_platform.py",  # 30 s on the same platform
    "faults/test_broker_faults.py",  # 146 s
    "integration/test_bridge.py",  # 121 s
    "faults/test_service_faults.py",  # 113 s
    "faults/test_database_faults.py",  # 100 s
    "faults/test_kafka_cluster_faults.py",  # 69 s
    "integration/test_consumer.py",  # 61 s
    "integration/test_access.py",  # 37 s
    "faults/test_consumer_replicas.py",  # 30 s
    "integration/test_cli_failures.py",  # 30 s
    "integration/test_bridge_replicas.py",  # 28 s
    "faults/test_bridge_replica_faults.py",  # 27 s
    "integration/test_dagster_assets.py",  # 23 s
    "integration/test_kafka_sasl.py",  # 20 s
    "faults/test_retention_faults.py",  # 19 s
)
SHARED_PLATFORM_MODULES = ("integration/test_dagster_services.py", "integration/test_dev_platform.py")


def _module(nodeid: str) -> str:
    return nodeid.split("::", 1)[0].removeprefix("iot_platform_tests/")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {module: index for index, module in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(_module(item.nodeid), len(rank)))  # stable: the rest keep their order


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """With ``--dist loadfile``: one module per unit of work, except the shared-platform modules, which
    are one unit; units go out in the collection order above (xdist would otherwise sort them by test count)."""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SlowestFirst(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "shared-platform" if _module(nodeid) in SHARED_PLATFORM_MODULES else super()._split_scope(nodeid)

    config.option.loadscopereorder = False
    return SlowestFirst(config, log)


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

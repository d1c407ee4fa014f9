"""Kafka over SASL_SSL (SCRAM-SHA-512): bridge and consumer work through it; a wrong password stops them with a clear error."""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from iot_platform.settings import Settings
from iot_platform.stack.certs import server_certificate
from iot_platform.stack.kafka import KafkaSecurity, KafkaServer, ensure_topics
from iot_platform.stack.ports import free_port
from iot_platform.storage.migrate import apply_migrations
from iot_platform_tests.faults.harness import Publisher, assert_invariants, fleet_spec, pipeline, settle_and_verify
from iot_platform_tests.helpers import service_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaServer]:
    """One SASL_SSL broker for this module: PEM keystore from our CA, SCRAM user made at format time."""
    root = tmp_path_factory.mktemp("secure-kafka")
    security = KafkaSecurity(server_certificate(root / "tls", "kafka"), "iot", secrets.token_urlsafe(18))
    server = KafkaServer(root / "kafka", free_port(), free_port(), security=security)
    try:
        yield server.start()
    finally:
        server.kill()


def _secure(settings: Settings, kafka: KafkaServer, password: str | None = None) -> Settings:
    security = kafka.config.security
    assert security is not None
    return settings.model_copy(update={
        "kafka_bootstrap": kafka.bootstrap, "kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "SCRAM-SHA-512",
        "kafka_sasl_username": security.username, "kafka_sasl_password": SecretStr(password or security.password),
        "kafka_ssl_ca_file": security.tls.ca,
    })


def test_bridge_and_consumer_work_through_sasl_ssl(settings: Settings, secure_kafka: KafkaServer, tmp_path: Path) -> None:
    """Topics are created, and 500 messages go MQTT -> bridge -> SASL_SSL Kafka -> consumer -> PostgreSQL, none lost."""
    secure = _secure(settings, secure_kafka)
    ensure_topics(secure)
    apply_migrations(secure)
    with pipeline(secure, tmp_path / "logs"):
        publisher = Publisher(secure, fleet_spec(secure, bad_fraction=0.02), count=500, rate=None)
        publisher.start()
        result = publisher.finish(timeout_s=60)
        report = settle_and_verify(secure, result, timeout_s=60)
    assert_invariants(report, result)


@pytest.mark.parametrize("service", ["bridge", "consumer"])
def test_a_wrong_kafka_password_stops_the_service_naming_the_setting(
    settings: Settings, secure_kafka: KafkaServer, service: str
) -> None:
    """Authentication failure is a misconfiguration: exit 1 with an error naming IOT_KAFKA_SASL_PASSWORD, no endless retry."""
    wrong = _secure(settings, secure_kafka, password="not-the-password")
    ensure_topics(_secure(settings, secure_kafka))
    apply_migrations(settings)
    done = subprocess.run([sys.executable, "-m", "iot_platform.cli", service], env=service_env(wrong),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert "IOT_KAFKA_SASL_PASSWORD" in done.stdout + done.stderr

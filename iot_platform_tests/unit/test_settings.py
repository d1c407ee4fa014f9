"""The settings object: IOT_ prefix, secrets hidden, round trip through a child's environment."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from iot_platform.settings import Settings


def test_defaults_match_the_public_interface() -> None:
    """Defaults are the public names of docs/design.md §3.2: topics, grammar, 72 h retention."""
    settings = Settings()
    assert settings.kafka_topic == "iot-messages"
    assert settings.kafka_dlq_topic == "iot-messages-dlq"
    assert settings.kafka_partitions == 6
    assert settings.kafka_retention_ms == 259_200_000
    assert settings.mqtt_topic_filter == "mtic/msg/client/realtime/#"
    assert settings.mqtt_topic_grammar == "mtic/msg/client/realtime/{tenant_id}/{project_id}[/...]"
    assert settings.retention_hours == 72
    assert settings.max_payload_bytes < settings.kafka_max_message_bytes


def test_environment_overrides_with_prefix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """IOT_* variables override defaults; the MQTT URL is split into host and port."""
    monkeypatch.setenv("IOT_MQTT_URL", "mqtt://broker.example:2883")
    monkeypatch.setenv("IOT_PG_PORT", "6543")
    monkeypatch.setenv("IOT_HOME", str(tmp_path / "state"))
    settings = Settings()
    assert (settings.mqtt_host, settings.mqtt_port) == ("broker.example", 2883)
    assert settings.pg_port == 6543
    assert settings.home == tmp_path / "state"


def test_secrets_never_appear_in_repr_or_password_free_dsn() -> None:
    """Passwords are SecretStr: hidden in repr; a DSN for display leaves them out."""
    settings = Settings(pg_password="s3cr3t!", mqtt_password="mq-secret")
    assert "s3cr3t" not in repr(settings)
    assert "mq-secret" not in repr(settings)
    assert "s3cr3t" not in settings.pg_dsn(with_password=False)
    assert "s3cr3t%21" in settings.pg_dsn()  # quoted for a URL


def test_as_env_round_trips(monkeypatch: pytest.MonkeyPatch) -> None:
    """A child process given settings.as_env() rebuilds exactly the same settings."""
    original = Settings(pg_password="pw", demo=False, kafka_key_mode="tenant_project", exit_with_parent=True)
    for name, value in original.as_env().items():
        monkeypatch.setenv(name, value)
    assert Settings() == original


@pytest.mark.parametrize(
    ("name", "value"),
    [("IOT_MQTT_QOS", "2"), ("IOT_KAFKA_KEY_MODE", "device"), ("IOT_RETENTION_HOURS", "0"), ("IOT_KAFKA_COMPRESSION", "brotli")],
)
def test_invalid_values_are_rejected(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    """QoS 2 is refused (docs/design.md §2.1), as are unknown modes and non-positive windows."""
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()

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
    [("IOT_MQTT_QOS", "2"), ("IOT_KAFKA_KEY_MODE", "partition"), ("IOT_RETENTION_HOURS", "0"),
     ("IOT_KAFKA_COMPRESSION", "brotli"), ("IOT_KAFKA_BROKERS", "2"), ("IOT_KAFKA_BROKERS", "0")],
)
def test_invalid_values_are_rejected(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    """QoS 2 is refused (docs/design.md §2.1), as are unknown modes, non-positive windows and a Kafka
    cluster of a size other than 1 or 3."""
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_platform_secrets_and_ca_come_from_iot_home_when_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`dev up` writes IOT_HOME/secrets/*; a command run by hand reads them; the environment wins."""
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "mqtt-admin-password").write_text("admin-pw\n")
    (tmp_path / "tls").mkdir()
    (tmp_path / "tls" / "ca.pem").write_text("-")
    monkeypatch.setenv("IOT_HOME", str(tmp_path))
    settings = Settings()
    assert settings.mqtt_admin_password is not None and settings.mqtt_admin_password.get_secret_value() == "admin-pw"
    assert settings.mqtt_password is None and settings.mqtt_ca_file == tmp_path / "tls" / "ca.pem"
    monkeypatch.setenv("IOT_MQTT_ADMIN_PASSWORD", "from-env")
    assert Settings().mqtt_admin_password.get_secret_value() == "from-env"  # type: ignore[union-attr]


@pytest.mark.parametrize("url", ["tcp://broker:1883", "ws://broker", "broker:1883", "http://x"])
def test_mqtt_url_must_be_mqtt_or_mqtts(url: str) -> None:
    with pytest.raises(ValidationError, match="mqtt:// or mqtts://"):
        Settings(mqtt_url=url)


def test_mqtt_default_ports_follow_the_scheme() -> None:
    assert (Settings(mqtt_url="mqtts://h").mqtt_port, Settings(mqtt_url="mqtt://h").mqtt_port) == (8883, 1883)
    assert Settings().mqtt_tls  # the default is TLS


def test_kafka_config_carries_the_security_settings() -> None:
    plain = Settings(kafka_bootstrap="k:9092").kafka_config()
    assert plain == {"bootstrap.servers": "k:9092", "security.protocol": "PLAINTEXT"}
    secure = Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_username="u", kafka_sasl_password="p",
                      kafka_ssl_ca_file=Path("/ca.pem")).kafka_config()
    assert secure["sasl.mechanism"] == "SCRAM-SHA-512" and secure["sasl.username"] == "u" and secure["sasl.password"] == "p"
    assert secure["ssl.ca.location"] == "/ca.pem" and secure["ssl.endpoint.identification.algorithm"] == "https"


@pytest.mark.parametrize(("pg", "grafana"), [("prefer", "require"), ("allow", "disable"), ("verify-full", "verify-full"), ("disable", "disable")])
def test_grafana_sslmode_follows_pg_sslmode(pg: str, grafana: str) -> None:
    assert Settings(pg_sslmode=pg).grafana_sslmode == grafana
    assert f"sslmode={pg}" in Settings(pg_sslmode=pg).pg_dsn()


def test_a_bad_setting_is_one_line_naming_it(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Every command refuses a bad IOT_* variable at start-up: exit 2, one line naming the variable, no traceback."""
    from iot_platform.cli import main

    monkeypatch.setenv("IOT_MQTT_URL", "tcp://broker:1883")
    assert main(["devices", "list"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("iot-platform devices list: invalid setting IOT_MQTT_URL='tcp://broker:1883':")
    assert "mqtts://" in err[0]


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("IOT_MQTT_URL", "http://x", "the scheme must be mqtt:// or mqtts://, not http://"),
        ("IOT_MQTT_URL", "mqtt://:1883", "expected mqtt://host:port"),
        ("IOT_MQTT_URL", "mqtts://broker:70000", "expected mqtt://host:port"),
        ("IOT_KAFKA_BOOTSTRAP", "kafka", "'kafka' is not host:port"),
        ("IOT_KAFKA_BOOTSTRAP", "k1:9092,k2", "'k2' is not host:port"),
        ("IOT_KAFKA_PARTITIONS", "0", "greater than or equal to 1"),
        ("IOT_PG_PORT", "0", "greater than or equal to 1"),
        ("IOT_PG_PORT", "65536", "less than or equal to 65535"),
        ("IOT_CONSUMER_METRICS_PORT", "-1", "greater than or equal to 0"),
    ],
)
def test_settings_that_can_never_work_are_refused_at_start_up(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, reason: str
) -> None:
    """One line naming the variable, its value and why; no pydantic help URL."""
    from iot_platform.errors import InvalidConfiguration

    monkeypatch.setenv(variable, value)
    with pytest.raises(InvalidConfiguration) as refused:
        Settings.load()
    line = str(refused.value)
    assert line.startswith(f"invalid setting {variable}={value!r}: ") and reason in line
    assert "\n" not in line and "https://" not in line


@pytest.mark.parametrize(
    ("variable", "value"),
    [("IOT_KAFKA_BOOTSTRAP", "k1:9092,k2:9094,[::1]:9096"), ("IOT_KAFKA_BOOTSTRAP", "SASL_SSL://kafka:9093"),
     ("IOT_MQTT_URL", "mqtts://broker"), ("IOT_CONSUMER_METRICS_PORT", "0")],
)
def test_settings_that_work_are_accepted(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    assert Settings.load().model_dump()[variable.removeprefix("IOT_").lower()] in (value, int(value) if value.isdigit() else value)


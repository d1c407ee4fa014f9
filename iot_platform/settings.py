"""The one settings object of the platform.

Every value comes from an environment variable with the ``IOT_`` prefix (``IOT_MQTT_URL``,
``IOT_PG_PORT``, ...) or from its default below; the README lists them all. Secrets are
``SecretStr`` so they never appear in logs or reprs. Nothing else in the package reads
``os.environ`` for configuration.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal
from urllib.parse import quote, urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_TOPIC_GRAMMAR = "mtic/msg/client/realtime/{tenant_id}/{project_id}[/...]"
DEFAULT_TOPIC_FILTER = "mtic/msg/client/realtime/#"
DEFAULT_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
THREE_DAYS_MS = 3 * 24 * 3600 * 1000


def _default_bridge_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Settings(BaseSettings):
    """Platform configuration; see the README's settings table for each variable."""

    model_config = SettingsConfigDict(env_prefix="IOT_", extra="ignore", frozen=True)

    # Local platform state (`iot-platform dev ...`).
    home: Path = Field(default=Path(".iot"), description="Directory of the local platform's data, logs and state.")
    demo: bool = Field(default=True, description="`dev up` starts a small simulated device fleet.")

    # MQTT (source of telemetry).
    mqtt_url: str = Field(default="mqtt://127.0.0.1:1883", description="Broker URL, mqtt://host:port.")
    mqtt_username: str | None = Field(default=None, description="Broker user name, if the broker needs one.")
    mqtt_password: SecretStr | None = Field(default=None, description="Broker password.")
    mqtt_topic_filter: str = Field(default=DEFAULT_TOPIC_FILTER, description="Subscription filter of the bridge.")
    mqtt_topic_grammar: str = Field(default=DEFAULT_TOPIC_GRAMMAR, description="Topic grammar with {tenant_id} and {project_id}.")
    mqtt_qos: int = Field(default=1, ge=1, le=1, description="Subscription QoS; only 1 is safe (docs/design.md §4.1).")
    mqtt_client_id: str = Field(default="iot-platform-bridge", description="Client id; the persistent session is keyed on it.")
    mqtt_keepalive_s: int = Field(default=30, ge=5, description="MQTT keepalive in seconds.")
    mqtt_connect_timeout_s: float = Field(default=10.0, gt=0, description="Timeout of one MQTT connect attempt.")
    mqtt_session_expiry_s: int = Field(default=7 * 24 * 3600, ge=0, description="How long the broker keeps the bridge's session.")
    mqtt_receive_maximum: int = Field(default=1000, ge=1, le=65535, description="Unacked QoS 1 messages the broker may send at once.")
    id_pattern: str = Field(default=DEFAULT_ID_PATTERN, description="Regular expression for tenant and project ids.")
    max_payload_bytes: int = Field(default=900_000, gt=0, description="Larger payloads go to the dead-letter topic.")
    stall_timeout_s: float = Field(default=120.0, gt=0, description="Connected but nothing received for this long: log a stall.")
    bridge_id: str = Field(default_factory=_default_bridge_id, description="Bridge identity written in every record's headers.")
    mqtt_protocol: Literal["5", "3.1.1"] = Field(default="5", description="MQTT version of the bridge: 5 (session expiry, receive maximum) or 3.1.1 (clean_session=false).")
    bridge_reconnect_max_backoff_s: float = Field(default=30.0, gt=0, description="Longest (jittered) wait between reconnects and delivery retries of the bridge.")
    bridge_shutdown_timeout_s: float = Field(default=10.0, gt=0, description="On SIGTERM the bridge flushes and acks for at most this long, then exits 0.")

    # Kafka.
    kafka_bootstrap: str = Field(default="127.0.0.1:9092", description="Kafka bootstrap servers.")
    kafka_controller_port: int = Field(default=9093, description="KRaft controller port of the local broker (`dev up`).")
    kafka_topic: str = Field(default="iot-messages", description="Topic of good messages.")
    kafka_dlq_topic: str = Field(default="iot-messages-dlq", description="Topic of dead letters.")
    kafka_partitions: int = Field(default=6, ge=1, description="Partitions of the messages topic.")
    kafka_retention_ms: int = Field(default=THREE_DAYS_MS, gt=0, description="Retention of both topics.")
    kafka_compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(default="lz4", description="Producer compression.")
    kafka_key_mode: Literal["tenant", "tenant_project"] = Field(default="tenant", description="Record key: tenant id, or tenant/project.")
    kafka_linger_ms: int = Field(default=5, ge=0, description="Producer linger.")
    kafka_delivery_timeout_ms: int = Field(default=120_000, gt=0, description="Producer delivery timeout; a timed-out message is retried, never acked.")
    kafka_request_timeout_ms: int = Field(default=30_000, gt=0, description="Timeout of one Kafka request.")
    kafka_consumer_group: str = Field(default="iot-postgres-writer", description="Consumer group of the PostgreSQL writer.")
    kafka_max_message_bytes: int = Field(default=1_048_576, gt=0, description="Kafka's max message size; keep above max_payload_bytes.")

    # Consumer.
    consumer_batch_size: int = Field(default=10_000, gt=0, description="Records per database transaction, at most.")
    consumer_batch_max_wait_ms: int = Field(default=100, gt=0, description="Longest wait to fill a batch (bounds latency at low rates).")
    fault_exit_after_commits: int = Field(default=0, ge=0, description="Testing only: the consumer exits right after its Nth database commit, before the Kafka commit (0: never).")
    message_id_field: str = Field(default="msg_id", description="JSON field that deduplicates messages produced twice.")
    consumer_session_timeout_ms: int = Field(default=10_000, ge=1_000, description="Kafka group session timeout: how long a crashed consumer's partitions wait before reassignment.")
    consumer_max_poll_interval_ms: int = Field(default=600_000, ge=10_000, description="Longest database outage a consumer rides out inside the group before it is treated as stuck.")
    consumer_rejoin_timeout_s: float = Field(default=60.0, gt=0, description="With no partition assignment (not even an empty one) for this long, the consumer reopens its Kafka client: librdkafka can stay stuck rejoining its group after a broker stall.")

    # PostgreSQL.
    pg_host: str = Field(default="127.0.0.1", description="PostgreSQL host.")
    pg_port: int = Field(default=5432, description="PostgreSQL port.")
    pg_user: str = Field(default="iot", description="PostgreSQL user of the platform.")
    pg_password: SecretStr = Field(default=SecretStr("iot"), description="Its password.")
    pg_database: str = Field(default="iot", description="Database of the telemetry.")
    pg_dagster_database: str = Field(default="dagster", description="Database of Dagster's run and event storage.")
    pg_connect_timeout_s: int = Field(default=10, gt=0, description="Connect timeout of every connection.")
    pg_statement_timeout_ms: int = Field(default=60_000, gt=0, description="statement_timeout of every session.")
    retention_hours: int = Field(default=72, gt=0, description="Raw messages and dead letters older than this are removed.")

    # Dagster and observability.
    dagster_host: str = Field(default="127.0.0.1", description="Dagster webserver host.")
    dagster_port: int = Field(default=3000, description="Dagster webserver port.")
    exit_with_parent: bool = Field(default=False, description="A service stops when the process that started it dies (set under Dagster).")
    heartbeat_interval_s: float = Field(default=30.0, gt=0, description="Interval of services' heartbeat log lines.")
    bridge_metrics_port: int = Field(default=9108, ge=0, description="Prometheus port of the bridge (0: off).")
    consumer_metrics_port: int = Field(default=9109, ge=0, description="Prometheus port of the consumer (0: off).")

    # Grafana (optional).
    grafana_url: str | None = Field(default=None, description="When set, dashboards are pushed through Grafana's HTTP API.")
    grafana_user: str = Field(default="admin", description="Grafana admin user.")
    grafana_password: SecretStr = Field(default=SecretStr("admin"), description="Grafana admin password.")
    grafana_timeout_s: float = Field(default=10.0, gt=0, description="Timeout of one Grafana HTTP API call.")
    grafana_pg_address: str | None = Field(default=None, description="host:port at which Grafana reaches PostgreSQL (default: pg_host:pg_port).")
    grafana_pg_sslmode: str = Field(default="disable", description="sslmode of Grafana's PostgreSQL data sources.")

    # Tenant roles (`iot-platform tenants sync`).
    tenant_role_prefix: str = Field(default="tenant_", description="Prefix of per-tenant login roles: tenant 'acme' reads as role tenant_acme, tenant 'Acme' as tenant_acme-<hash>.")
    tenant_password_key: SecretStr | None = Field(default=None, description="HMAC key from which each tenant/analyst/ingest role's password is derived (`tenants password` prints one); unset: roles get no password.")
    analyst_role: str = Field(default="analyst", description="Login role that reads every tenant (member of iot_analyst).")
    ingest_role: str = Field(default="ingest", description="Login role with only the consumer's privileges (member of iot_ingest).")

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def mqtt_host(self) -> str:
        return urlsplit(self.mqtt_url).hostname or "127.0.0.1"

    @property
    def mqtt_port(self) -> int:
        return urlsplit(self.mqtt_url).port or 1883

    @property
    def dagster_url(self) -> str:
        return f"http://{self.dagster_host}:{self.dagster_port}"

    def pg_dsn(self, database: str | None = None, *, with_password: bool = True) -> str:
        """libpq URL of the platform database (or another one on the same server)."""
        password = f":{quote(self.pg_password.get_secret_value(), safe='')}" if with_password else ""
        return (
            f"postgresql://{quote(self.pg_user, safe='')}{password}@{self.pg_host}:{self.pg_port}/"
            f"{database or self.pg_database}?connect_timeout={self.pg_connect_timeout_s}"
        )

    def child_env(self) -> dict[str, str]:
        """This process's environment with its IOT_* variables replaced by these settings."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("IOT_")}
        env.update(self.as_env())
        return env

    def as_env(self) -> dict[str, str]:
        """These settings as IOT_* variables, to hand to a child process (services, Dagster)."""
        env: dict[str, str] = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[f"IOT_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
        return env


def settings_table() -> str:
    """The README's settings table (Markdown), generated so documentation cannot drift."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        if field.default_factory is not None:
            default = "(computed)"
        elif isinstance(field.default, SecretStr):
            default = "(secret)"
        elif field.default is None:
            default = "(unset)"
        else:
            default = f"`{field.default}`"
        description = (field.description or "").replace("|", "\\|")
        rows.append(f"| `IOT_{name.upper()}` | {default} | {description} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(settings_table(), end="")

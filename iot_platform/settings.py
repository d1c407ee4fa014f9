"""The one settings object of the platform.

Every value comes from an environment variable with the ``IOT_`` prefix (``IOT_MQTT_URL``,
``IOT_PG_PORT``, ...) or from its default below; the README lists them all. Secrets are
``SecretStr`` so they never appear in logs or reprs. Nothing else in the package reads
``os.environ`` for configuration.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal
from urllib.parse import quote, urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from iot_platform.errors import InvalidConfiguration

DEFAULT_TOPIC_GRAMMAR = "mtic/msg/client/realtime/{tenant_id}/{project_id}[/...]"
DEFAULT_TOPIC_FILTER = "mtic/msg/client/realtime/#"
DEFAULT_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
THREE_DAYS_MS = 3 * 24 * 3600 * 1000
MQTT_SCHEMES = {"mqtt": 1883, "mqtts": 8883}
PORT = {"ge": 1, "le": 65535}
PORT_OR_OFF = {"ge": 0, "le": 65535}
# One Kafka bootstrap address: host:port (an IPv6 host in brackets), optionally after a listener name.
_KAFKA_ADDRESS = re.compile(r"^(?:[A-Za-z_]+://)?(?:\[[0-9A-Fa-f:.]+\]|[^\s:/,\[\]]+):(\d{1,5})$")
# Platform credentials that `dev up` generates into IOT_HOME/secrets/ (file name -> setting): a command
# run by hand finds them there when the setting is unset.
SECRET_FILES = {
    "mqtt-admin-password": "mqtt_admin_password",
    "mqtt-bridge-password": "mqtt_password",
}


def _default_bridge_id() -> str:
    return f"{os.uname().nodename}-{os.getpid()}"  # the host name, without the socket module


# The JIT of the brokers the platform starts itself (docs/design.md §11; stack/kafka.py's JIT_FLAGS).
KafkaJit = Literal["c1", "tiered"]
DEFAULT_KAFKA_JIT: KafkaJit = "c1"


class Settings(BaseSettings):
    """Platform configuration; see the README's settings table for each variable."""

    model_config = SettingsConfigDict(env_prefix="IOT_", extra="ignore", frozen=True)

    # Local platform state (`iot-platform dev ...`).
    home: Path = Field(default=Path(".iot"), description="Directory of the local platform's data, logs and state.")
    demo: bool = Field(default=True, description="`dev up` starts a small simulated device fleet.")

    # MQTT (source of telemetry).
    mqtt_url: str = Field(default="mqtts://127.0.0.1:8883", description="Broker URL: mqtts://host:port (TLS, verified against IOT_MQTT_CA_FILE) or mqtt://host:port (plain).")
    mqtt_ca_file: Path | None = Field(default=None, description="CA certificate (PEM) that signs the broker's certificate (default: IOT_HOME/tls/ca.pem when it exists).")
    mqtt_plain_port: int = Field(default=1883, **PORT_OR_OFF, description="Local broker (`dev up`): plain-MQTT listener on 127.0.0.1 for local tools, credentials still required (0: none).")
    mqtt_username: str | None = Field(default="iot-bridge", description="The bridge's broker user name.")
    mqtt_password: SecretStr | None = Field(default=None, description="The bridge's broker password (default: IOT_HOME/secrets/mqtt-bridge-password when it exists).")
    mqtt_admin_username: str = Field(default="iot-admin", description="Broker admin client that manages devices through the dynamic-security API.")
    mqtt_admin_password: SecretStr | None = Field(default=None, description="Its password (default: IOT_HOME/secrets/mqtt-admin-password when it exists).")
    dynsec_timeout_s: float = Field(default=10.0, gt=0, description="Timeout of one dynamic-security request to the broker.")
    mqtt_topic_filter: str = Field(default=DEFAULT_TOPIC_FILTER, description="Subscription filter of the bridge.")
    mqtt_topic_grammar: str = Field(default=DEFAULT_TOPIC_GRAMMAR, description="Topic grammar with {tenant_id} and {project_id}.")
    mqtt_qos: int = Field(default=1, ge=1, le=1, description="Subscription QoS; only 1 is safe (docs/design.md §4.1).")
    mqtt_client_id: str = Field(default="iot-platform-bridge", description="MQTT client id of the bridge (replica 0; replica i adds -{i}); its persistent session is keyed on it.")
    mqtt_keepalive_s: int = Field(default=30, ge=5, description="MQTT keepalive in seconds.")
    mqtt_connect_timeout_s: float = Field(default=10.0, gt=0, description="Timeout of one MQTT connect attempt.")
    mqtt_session_expiry_s: int = Field(default=7 * 24 * 3600, ge=0, description="How long the broker keeps the bridge's session.")
    mqtt_receive_maximum: int = Field(default=4000, ge=1, le=65535, description="Unacked QoS 1 messages the broker may send at once; the bridge reads nothing more while it holds this many. In a backlog drain each window waits one producer linger for Kafka, so the window bounds the drain rate (docs/design.md §11).")
    id_pattern: str = Field(default=DEFAULT_ID_PATTERN, description="Regular expression for tenant and project ids.")
    max_payload_bytes: int = Field(default=900_000, gt=0, description="Larger payloads go to the dead-letter topic.")
    stall_timeout_s: float = Field(default=120.0, gt=0, description="Connected but nothing received for this long: log a stall.")
    bridge_id: str = Field(default_factory=_default_bridge_id, description="Bridge identity written in every record's headers.")
    bridge_envelope_format: Literal["1", "2"] = Field(default="2", description="Headers of the records the bridge writes: 2 (three headers, the envelope packed in one) or 1 (eight headers), for a rolling upgrade while consumers older than format 2 still run (docs/deploy.md).")
    mqtt_protocol: Literal["5", "3.1.1"] = Field(default="5", description="MQTT version of the bridge: 5 (session expiry, receive maximum) or 3.1.1 (clean_session=false).")
    bridge_reconnect_max_backoff_s: float = Field(default=30.0, gt=0, description="Longest (jittered) wait between reconnects and delivery retries of the bridge.")
    mqtt_client_path: Literal["auto", "public"] = Field(default="auto", description="auto: the bridge's fast paho path when paho-mqtt is the version it was written for (2.2.0), else paho's public API; public: always the public API (slower, same guarantees).")
    bridge_batch_interval_ms: int = Field(default=5, ge=0, le=100, description="While messages stream in, the bridge reads its MQTT socket (fast paho path), and sends a batch of acks, at most once per this interval: each wake-up of its threads then serves many messages instead of one or two, which is less CPU per message at moderate rates for at most this much more latency each; 0 serves each packet and delivery report as it arrives (docs/design.md §11).")
    bridge_buffer_kb: int = Field(default=262_144, ge=1, le=2_097_151, description="KiB of records the bridge's producer may hold waiting for Kafka (librdkafka's queue.buffering.max.kbytes); while it is full the bridge reads nothing more from MQTT, so large payloads cannot fill its memory before the window does (docs/design.md §6.2).")
    bridge_shutdown_timeout_s: float = Field(default=10.0, gt=0, description="On SIGTERM the bridge flushes and acks for at most this long, then exits 0.")
    bridge_replicas: int = Field(default=1, ge=1, description="Bridge replicas sharing the MQTT subscription; above 1 each takes the MQTT 5 shared subscription $share/{IOT_MQTT_SHARE_GROUP}/{filter} (docs/design.md §9); service_watchdog keeps replicas 0 .. N-1 running, and drains a replica that lowering N removes.")
    mqtt_share_group: str = Field(default="iot-bridges", pattern=r"^[^/+#]+$", description="Shared-subscription group of the bridge replicas (no /, + or #).")
    replica_index: int = Field(default=0, ge=0, description="Which replica this bridge or consumer is (0-based; set per run by Dagster, or from the StatefulSet pod index): bridge replica i is MQTT client IOT_MQTT_CLIENT_ID-{i}, replica 0 keeps IOT_MQTT_CLIENT_ID (docs/design.md §9); consumer replica i is the static member IOT_KAFKA_CONSUMER_GROUP-{i} (docs/design.md §10).")

    # Kafka.
    kafka_bootstrap: str = Field(default="127.0.0.1:9092", description="Kafka bootstrap servers, host:port[,host:port...]. `dev up` runs its brokers there: with IOT_KAFKA_BROKERS=3 at each of three addresses, or at one address's port, +2 and +4.")
    kafka_controller_port: int = Field(default=9093, **PORT, description="KRaft controller port of the local broker (`dev up`); with 3 brokers, node i (0-2) uses this port + 2i.")
    kafka_brokers: int = Field(default=1, description="Kafka brokers: `dev up` runs 1, or 3 (KRaft, each also a controller); topics get one replica per broker, min.insync.replicas 2 of 3, no unclean leader election.")
    kafka_topic: str = Field(default="iot-messages", description="Topic of good messages.")
    kafka_dlq_topic: str = Field(default="iot-messages-dlq", description="Topic of dead letters.")
    kafka_partitions: int = Field(default=6, ge=1, description="Partitions of the messages topic.")
    kafka_retention_ms: int = Field(default=THREE_DAYS_MS, gt=0, description="Retention of both topics.")
    kafka_compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(default="lz4", description="Producer compression.")
    kafka_key_mode: Literal["device", "tenant", "tenant_project"] = Field(default="device", description="Record key, hence partition and the order Kafka keeps: device (the topic after the grammar's leading literal levels, tenant/project/device/...: per-device order, load spread over the partitions), tenant (per-tenant order, a large tenant is one hot partition) or tenant/project.")
    kafka_linger_ms: int = Field(default=50, ge=0, description="How long the bridge's producer waits to fill a batch (linger.ms): each Kafka produce request costs the broker CPU, so a longer linger is less CPU per message and up to this much more latency (docs/design.md §11).")
    kafka_local_jit: KafkaJit = Field(default=DEFAULT_KAFKA_JIT, description="JIT of the brokers `dev up` runs: c1 (client compiler only: no CPU spent compiling for peak speed, as short-lived and development JVMs run) or tiered (the JVM's default, for a broker that runs for weeks) (docs/design.md §11).")
    kafka_delivery_timeout_ms: int = Field(default=120_000, gt=0, description="Producer delivery timeout; a timed-out message is retried, never acked.")
    kafka_request_timeout_ms: int = Field(default=30_000, gt=0, description="Timeout of one Kafka request.")
    kafka_consumer_group: str = Field(default="iot-postgres-writer", description="Consumer group of the PostgreSQL writer.")
    kafka_max_message_bytes: int = Field(default=1_048_576, gt=0, description="Kafka's max message size; keep above max_payload_bytes.")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_SSL", "SASL_PLAINTEXT"] = Field(default="PLAINTEXT", description="security.protocol of every Kafka client.")
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = Field(default="SCRAM-SHA-512", description="SASL mechanism (SASL_* protocols).")
    kafka_sasl_username: str | None = Field(default=None, description="SASL user name (SASL_* protocols).")
    kafka_sasl_password: SecretStr | None = Field(default=None, description="SASL password (SASL_* protocols).")
    kafka_ssl_ca_file: Path | None = Field(default=None, description="CA certificate (PEM) that signs the Kafka brokers' certificates (SSL, SASL_SSL).")

    # Consumer.
    consumer_batch_size: int = Field(default=10_000, gt=0, description="Records per database transaction, at most.")
    consumer_batch_max_wait_ms: int = Field(default=50, gt=0, description="Longest wait to fill a batch while the database could take it (bounds latency at low rates); while the previous batch is still being written the batch stays open and grows (docs/design.md §11).")
    consumer_fetch_min_bytes: int = Field(default=1_048_576, ge=1, description="The consumer's fetch.min.bytes: Kafka holds a fetch until this much is there or IOT_CONSUMER_FETCH_WAIT_MAX_MS passes, so a steady stream is read in a few large fetches instead of one per produce request (docs/design.md §11).")
    consumer_fetch_wait_max_ms: int = Field(default=25, ge=0, description="The consumer's fetch.wait.max.ms: the most a record waits in Kafka for a fetch to fill (IOT_CONSUMER_FETCH_MIN_BYTES); added to the publish-to-row latency at low rates (docs/design.md §11).")
    fault_exit_after_commits: int = Field(default=0, ge=0, description="Testing only: the consumer exits right after its Nth database commit, before the Kafka commit (0: never).")
    message_id_field: str = Field(default="msg_id", description="JSON field that deduplicates messages produced twice.")
    consumer_session_timeout_ms: int = Field(default=10_000, ge=1_000, description="Kafka group session timeout: how long a crashed consumer's partitions wait before reassignment.")
    consumer_max_poll_interval_ms: int = Field(default=600_000, ge=10_000, description="Longest database outage a consumer rides out inside the group before it is treated as stuck.")
    consumer_rejoin_timeout_s: float = Field(default=60.0, gt=0, description="With no partition assignment (not even an empty one) for this long, the consumer replaces its Kafka client: librdkafka can lose every broker after a broker stall and never rejoin (docs/design.md §4.2).")
    consumer_close_timeout_s: float = Field(default=10.0, gt=0, description="Longest wait for the consumer's Kafka client to close. When it stops, past this it exits 1 (its supervisor restarts it; positions are in PostgreSQL); when it replaces a stuck client, the old one is left closing in the background.")

    # PostgreSQL.
    pg_host: str = Field(default="127.0.0.1", description="PostgreSQL host.")
    pg_port: int = Field(default=5432, **PORT, description="PostgreSQL port.")
    pg_user: str = Field(default="iot", description="PostgreSQL user of the platform.")
    pg_password: SecretStr = Field(default=SecretStr("iot"), description="Its password.")
    pg_database: str = Field(default="iot", description="Database of the telemetry.")
    pg_dagster_database: str = Field(default="dagster", description="Database of Dagster's run and event storage.")
    pg_sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = Field(default="prefer", description="libpq sslmode of every PostgreSQL connection.")
    pg_sslrootcert: Path | None = Field(default=None, description="CA certificate (PEM) for sslmode verify-ca / verify-full.")
    pg_connect_timeout_s: int = Field(default=10, gt=0, description="Connect timeout of every connection.")
    pg_statement_timeout_ms: int = Field(default=60_000, gt=0, description="statement_timeout of every session.")
    retention_hours: int = Field(default=72, gt=0, description="Raw messages and dead letters older than this are removed.")

    # Dagster and observability.
    dagster_host: str = Field(default="127.0.0.1", description="Dagster webserver host.")
    dagster_port: int = Field(default=3000, **PORT, description="Dagster webserver port.")
    exit_with_parent: bool = Field(default=False, description="A service stops when the process that started it dies (set under Dagster).")
    heartbeat_interval_s: float = Field(default=30.0, gt=0, description="Interval of services' heartbeat log lines.")
    consumer_replicas: int = Field(default=1, ge=1, description="Consumers in the group IOT_KAFKA_CONSUMER_GROUP; replica i (IOT_REPLICA_INDEX, or `consumer --replica i`) is the static member IOT_KAFKA_CONSUMER_GROUP-{i} (docs/design.md §10); service_watchdog keeps replicas 0 .. N-1 running and stops one that lowering N removes.")
    dagster_supervises_services: bool = Field(default=True, description="service_watchdog launches and supervises the bridge and consumer replicas; false: another supervisor (Kubernetes) runs them and the watchdog launches nothing.")
    service_stall_timeout_s: float = Field(default=300.0, gt=0, description="service_watchdog kills and relaunches a service that made no progress while work waited (unacked messages, records not stored) or stopped reporting for this long.")
    bridge_metrics_port: int = Field(default=9108, **PORT_OR_OFF, description="Prometheus port of the bridge (0: off).")
    consumer_metrics_port: int = Field(default=9109, **PORT_OR_OFF, description="Prometheus port of the consumer (0: off).")

    # Grafana (optional).
    grafana_url: str | None = Field(default=None, description="When set, dashboards are pushed through Grafana's HTTP API.")
    grafana_user: str = Field(default="admin", description="Grafana admin user.")
    grafana_password: SecretStr = Field(default=SecretStr("admin"), description="Grafana admin password.")
    grafana_timeout_s: float = Field(default=10.0, gt=0, description="Timeout of one Grafana HTTP API call.")
    grafana_pg_address: str | None = Field(default=None, description="host:port at which Grafana reaches PostgreSQL (default: pg_host:pg_port).")
    grafana_pg_sslmode: Literal["disable", "require", "verify-ca", "verify-full"] | None = Field(default=None, description="sslmode of Grafana's PostgreSQL data sources (default: IOT_PG_SSLMODE, with prefer read as require and allow as disable: Grafana has neither).")

    # Tenant roles (`iot-platform tenants sync`).
    tenant_role_prefix: str = Field(default="tenant_", description="Prefix of per-tenant login roles: tenant 'acme' reads as role tenant_acme, tenant 'Acme' as tenant_acme-<hash>.")
    tenant_password_key: SecretStr | None = Field(default=None, description="HMAC key from which each tenant/analyst/ingest role's password is derived (`tenants password` prints one); unset: roles get no password.")
    analyst_role: str = Field(default="analyst", description="Login role that reads every tenant (member of iot_analyst).")
    ingest_role: str = Field(default="ingest", description="Login role with only the consumer's privileges (member of iot_ingest).")

    @model_validator(mode="before")
    @classmethod
    def _platform_secrets(cls, data: object) -> object:
        """Unset platform credentials and CA file come from IOT_HOME, where `dev up` wrote them."""
        if not isinstance(data, dict):
            return data
        home = Path(str(data.get("home") or ".iot")).expanduser()
        for file_name, name in SECRET_FILES.items():
            path = home / "secrets" / file_name
            if data.get(name) is None and path.is_file():
                data[name] = path.read_text().strip()
        ca = home / "tls" / "ca.pem"
        if data.get("mqtt_ca_file") is None and ca.is_file():
            data["mqtt_ca_file"] = ca
        return data

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("kafka_brokers")
    @classmethod
    def _cluster_size(cls, value: int) -> int:
        if value not in (1, 3):
            raise ValueError(f"IOT_KAFKA_BROKERS {value}: 1 or 3 (a quorum of three tolerates one broker down; two would not)")
        return value

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in MQTT_SCHEMES:
            raise ValueError(f"the scheme must be mqtt:// or mqtts://, not {parts.scheme + '://' if parts.scheme else 'none'}")
        try:
            port = parts.port
        except ValueError:
            port = -1
        if not parts.hostname or port == 0 or port == -1:
            raise ValueError("expected mqtt://host:port or mqtts://host:port (port 1-65535, default 1883 / 8883)")
        return value

    @field_validator("kafka_bootstrap")
    @classmethod
    def _kafka_addresses(cls, value: str) -> str:
        for address in value.split(","):
            match = _KAFKA_ADDRESS.match(address.strip())
            if match is None or not 1 <= int(match[1]) <= 65535:
                raise ValueError(f"{address.strip()!r} is not host:port (several: host1:port1,host2:port2)")
        return value

    @classmethod
    def load(cls) -> Settings:
        """The settings from the environment; a bad value is an :class:`InvalidConfiguration` whose one line names each."""
        try:
            return cls()
        except ValidationError as exc:
            raise InvalidConfiguration(describe_invalid(exc)) from None

    @property
    def mqtt_tls(self) -> bool:
        return urlsplit(self.mqtt_url).scheme == "mqtts"

    @property
    def mqtt_host(self) -> str:
        return urlsplit(self.mqtt_url).hostname or "127.0.0.1"

    @property
    def mqtt_port(self) -> int:
        parts = urlsplit(self.mqtt_url)
        return parts.port or MQTT_SCHEMES[parts.scheme]

    @property
    def consumer_instance_id(self) -> str:
        """This consumer replica's static group membership (``group.instance.id``): a restarted replica
        takes its partitions back without a rebalance (docs/design.md §10)."""
        return f"{self.kafka_consumer_group}-{self.replica_index}"

    @property
    def bridge_client_id(self) -> str:
        """This bridge replica's MQTT client id, which keys its persistent session (docs/design.md §9).

        Replica 0 keeps ``mqtt_client_id``: a single bridge's session, and whatever the broker queued in
        it, carries over when it becomes replica 0 of several.
        """
        return self.mqtt_client_id if self.replica_index == 0 else f"{self.mqtt_client_id}-{self.replica_index}"

    @property
    def dagster_url(self) -> str:
        return f"http://{self.dagster_host}:{self.dagster_port}"

    def pg_dsn(self, database: str | None = None, *, with_password: bool = True) -> str:
        """libpq URL of the platform database (or another one on the same server)."""
        password = f":{quote(self.pg_password.get_secret_value(), safe='')}" if with_password else ""
        return (
            f"postgresql://{quote(self.pg_user, safe='')}{password}@{self.pg_host}:{self.pg_port}/"
            f"{database or self.pg_database}?connect_timeout={self.pg_connect_timeout_s}"
            f"&sslmode={self.pg_sslmode}" + (f"&sslrootcert={quote(str(self.pg_sslrootcert))}" if self.pg_sslrootcert else "")
        )

    @property
    def grafana_sslmode(self) -> str:
        if self.grafana_pg_sslmode is not None:
            return self.grafana_pg_sslmode
        return {"prefer": "require", "allow": "disable"}.get(self.pg_sslmode, self.pg_sslmode)

    def kafka_config(self) -> dict[str, str]:
        """librdkafka's connection and security properties: every Kafka client of the platform starts from these."""
        config = {"bootstrap.servers": self.kafka_bootstrap, "security.protocol": self.kafka_security_protocol}
        if self.kafka_security_protocol.startswith("SASL_"):
            config["sasl.mechanism"] = self.kafka_sasl_mechanism
            config["sasl.username"] = self.kafka_sasl_username or ""
            config["sasl.password"] = self.kafka_sasl_password.get_secret_value() if self.kafka_sasl_password else ""
        if self.kafka_security_protocol in ("SSL", "SASL_SSL"):
            if self.kafka_ssl_ca_file is not None:
                config["ssl.ca.location"] = str(self.kafka_ssl_ca_file)
            config["ssl.endpoint.identification.algorithm"] = "https"  # verify the broker's host name
        return config

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


def describe_invalid(exc: ValidationError) -> str:
    """One line for every bad setting: its variable, its value (never a secret's) and why, without pydantic's URLs."""
    problems = []
    for error in exc.errors(include_url=False):
        name = "_".join(str(part) for part in error["loc"])
        field = Settings.model_fields.get(name)
        reason = str(error["ctx"]["error"]) if error["type"] == "value_error" and "ctx" in error else error["msg"]
        shown = "" if field is None or "SecretStr" in str(field.annotation) or "input" not in error else f"={str(error['input'])[:80]!r}"
        problems.append(f"invalid setting IOT_{name.upper()}{shown}: {reason}")
    return "; ".join(problems)


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

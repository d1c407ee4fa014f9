"""A private single-node Apache Kafka (KRaft) from jars resolved from Maven Central, and the topics.

The broker version is pinned in ``deploy/kafka/pom.xml``; Maven resolves the classpath once into
``~/.m2`` and we cache the resolved classpath beside the user's caches. The storage directory is
formatted once and reused across restarts. Durability note: a single broker acknowledges
``acks=all`` once the record is in its page cache, which survives a broker crash (SIGKILL) but not
a machine crash; see the README.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from iot_platform.stack.certs import ServerCertificate
from iot_platform.stack.ports import ensure_port_free
from iot_platform.stack.process import StackError, pid_alive, require_binary, spawn, stop_group, wait_until
from iot_platform.stack.kafka_topics import ensure_topics  # re-exported: callers reach topics through the broker

DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy" / "kafka"
HEAP = "-Xmx512m"


@dataclass(frozen=True)
class KafkaSecurity:
    """A SASL_SSL listener: TLS with a certificate of our CA (PEM keystore), SCRAM-SHA-512 users
    created when the storage is formatted (``--add-scram``); the broker talks to itself as ``username``."""

    tls: ServerCertificate
    username: str
    password: str
    mechanism: str = "SCRAM-SHA-512"


@dataclass(frozen=True)
class KafkaConfig:
    port: int
    controller_port: int
    data_dir: Path
    host: str = "127.0.0.1"
    advertised_port: int | None = None  # a TCP proxy in front of the broker (fault tests)
    default_partitions: int = 6
    retention_ms: int = 259_200_000
    message_max_bytes: int = 1_048_588
    retention_check_interval_ms: int = 300_000  # Kafka's default; tests of retention use seconds
    security: KafkaSecurity | None = None


def _security_properties(security: KafkaSecurity) -> dict[str, str]:
    jaas = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required"
        f' username="{security.username}" password="{security.password}";'
    )
    return {
        "sasl.enabled.mechanisms": security.mechanism,
        "sasl.mechanism.inter.broker.protocol": security.mechanism,
        f"listener.name.sasl_ssl.{security.mechanism.lower()}.sasl.jaas.config": jaas,
        # PEM keystore (key + chain in one file) and truststore: no JKS, no keytool.
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(security.tls.cert.with_suffix(".keystore.pem")),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(security.tls.ca),
        "ssl.endpoint.identification.algorithm": "https",
    }


def render_server_properties(config: KafkaConfig) -> str:
    """server.properties of a combined broker+controller node (pure)."""
    advertised = config.advertised_port or config.port
    listener = "SASL_SSL" if config.security else "PLAINTEXT"
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{config.host}:{config.controller_port}",
        "listeners": f"{listener}://{config.host}:{config.port},CONTROLLER://{config.host}:{config.controller_port}",
        "advertised.listeners": f"{listener}://{config.host}:{advertised}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": listener,
        "listener.security.protocol.map": f"{listener}:{listener},CONTROLLER:PLAINTEXT",
        "log.dirs": str(config.data_dir),
        "num.partitions": str(config.default_partitions),
        "auto.create.topics.enable": "false",
        "log.retention.ms": str(config.retention_ms),
        "log.retention.check.interval.ms": str(config.retention_check_interval_ms),
        "log.initial.task.delay.ms": str(min(30_000, config.retention_check_interval_ms)),
        "message.max.bytes": str(config.message_max_bytes),
        # One node: every internal topic has a single replica.
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "6",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "min.insync.replicas": "1",
        "group.initial.rebalance.delay.ms": "0",
        "num.network.threads": "2",
        "num.io.threads": "4",
    }
    if config.security is not None:
        props |= _security_properties(config.security)
    return "".join(f"{key}={value}\n" for key, value in props.items())


JAVA_HINT = "install a JDK 17+ (sudo apt-get install openjdk-17-jre-headless)"


def kafka_classpath(cache_dir: Path | None = None) -> str:
    """The broker's classpath, resolved by Maven from the pinned pom and cached per pom content."""
    pom = DEPLOY_DIR / "pom.xml"
    if not pom.exists():
        raise StackError(f"{pom} is missing: run from a checkout of the repository")
    cache_dir = cache_dir or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "iot-platform"
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:16]
    cached = cache_dir / f"kafka-classpath-{digest}.txt"
    if cached.exists():
        classpath = cached.read_text().strip()
        if all(Path(jar).exists() for jar in classpath.split(os.pathsep)):
            return classpath
    mvn = require_binary("mvn", "install Maven (sudo apt-get install maven) and a JDK 17+")
    cache_dir.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [mvn, "-q", "-B", "-f", str(pom), "dependency:build-classpath", f"-Dmdep.outputFile={cached}"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if result.returncode != 0 or not cached.exists():
        raise StackError(f"Maven could not resolve the Kafka jars:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return cached.read_text().strip()


class KafkaServer:
    """Kafka on ``127.0.0.1:port`` (controller on ``controller_port``), data and logs under ``workdir``."""

    def __init__(
        self, workdir: Path, port: int, controller_port: int, *, advertised_port: int | None = None,
        retention_check_interval_ms: int = 300_000, security: KafkaSecurity | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.config = KafkaConfig(
            port=port, controller_port=controller_port, data_dir=self.workdir / "data", advertised_port=advertised_port,
            retention_check_interval_ms=retention_check_interval_ms, security=security,
        )
        self.pid: int | None = None

    @property
    def port(self) -> int:
        return self.config.port

    @property
    def bootstrap(self) -> str:
        return f"{self.config.host}:{self.config.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "logs" / "server.log"

    def client_config(self) -> dict[str, str]:
        """librdkafka properties of a client with the broker's own (admin) credentials."""
        config = {"bootstrap.servers": self.bootstrap}
        security = self.config.security
        if security is not None:
            config |= {
                "security.protocol": "SASL_SSL", "sasl.mechanism": security.mechanism, "sasl.username": security.username,
                "sasl.password": security.password, "ssl.ca.location": str(security.tls.ca),
            }
        return config

    def _java(self, main_class: str, *args: str) -> list[str]:
        java = require_binary("java", JAVA_HINT)
        return [
            java,
            HEAP,
            "-Xms256m",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={self.workdir / 'logs'}",
            f"-Dlog4j2.configurationFile={DEPLOY_DIR / 'log4j2.properties'}",
            "-cp",
            kafka_classpath(),
            main_class,
            *args,
        ]

    def _format_once(self, properties: Path) -> None:
        if (self.config.data_dir / "meta.properties").exists():
            return
        security = self.config.security
        scram = (
            ["--add-scram", f"{security.mechanism}=[name={security.username},password={security.password}]"] if security else []
        )
        result = subprocess.run(
            self._java("kafka.tools.StorageTool", "format", f"--cluster-id={_cluster_id()}", "--config", str(properties), *scram),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise StackError(f"formatting Kafka storage failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")

    def start(self, timeout_s: float = 90.0) -> "KafkaServer":
        if self.is_running():
            return self
        ensure_port_free(self.config.host, self.config.port, "IOT_KAFKA_BOOTSTRAP")
        ensure_port_free(self.config.host, self.config.controller_port, "IOT_KAFKA_CONTROLLER_PORT")
        self.workdir.mkdir(parents=True, exist_ok=True)
        properties = self.workdir / "server.properties"
        if self.config.security is not None:
            tls = self.config.security.tls
            keystore = tls.cert.with_suffix(".keystore.pem")
            keystore.write_bytes(tls.key.read_bytes() + tls.cert.read_bytes())
            os.chmod(keystore, 0o600)
        properties.write_text(render_server_properties(self.config))
        os.chmod(properties, 0o600)  # holds the broker's SCRAM password when secured
        self._format_once(properties)
        process = spawn(self._java("kafka.Kafka", str(properties)), self.workdir / "kafka.stdout.log")
        self.pid = process.pid
        wait_until(
            lambda: broker_ready(self.client_config()),
            timeout_s=timeout_s,
            what="kafka",
            alive=lambda: process.poll() is None,
            log_path=self.log_path,
            interval_s=0.5,
        )
        return self

    def is_running(self) -> bool:
        return pid_alive(self.pid)

    def stop(self, timeout_s: float = 30.0) -> None:
        stop_group(self.pid, timeout_s)

    def kill(self) -> None:
        stop_group(self.pid, timeout_s=0)

    def pause(self) -> None:
        if self.pid:
            os.killpg(self.pid, 19)  # SIGSTOP

    def resume(self) -> None:
        if self.pid:
            os.killpg(self.pid, 18)  # SIGCONT


def _cluster_id() -> str:
    # Kafka wants a base64url UUID of 22 characters, as `kafka-storage random-uuid` prints.
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


# librdkafka logs every refused connection while the broker boots; readiness polling expects those.
_QUIET = logging.getLogger("iot_platform.stack.kafka.readiness")
_QUIET.setLevel(logging.CRITICAL)


def broker_ready(client_config: dict[str, str] | str, timeout_s: float = 3.0) -> bool:
    """The broker answers metadata requests and has a controller (``client_config``: a bootstrap or librdkafka properties)."""
    from confluent_kafka.admin import AdminClient

    config = {"bootstrap.servers": client_config} if isinstance(client_config, str) else dict(client_config)
    admin = AdminClient({**config, "socket.timeout.ms": int(timeout_s * 1000)}, logger=_QUIET)
    try:
        metadata = admin.list_topics(timeout=timeout_s)
        return bool(metadata.brokers) and metadata.controller_id >= 0
    except Exception:  # noqa: BLE001 - any failure means "not ready yet"
        return False


def java_available() -> bool:
    return shutil.which("java") is not None

__all__ = ["KafkaConfig", "KafkaSecurity", "KafkaServer", "broker_ready", "ensure_topics", "kafka_classpath", "render_server_properties"]

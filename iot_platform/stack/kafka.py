"""One Apache Kafka node (KRaft, broker and controller in one process) from jars resolved from Maven Central.

The broker version is pinned in ``deploy/kafka/pom.xml``; Maven resolves the classpath once into
``~/.m2`` and we cache the resolved classpath beside the user's caches. The storage directory is
formatted once and reused across restarts. A node runs alone (the default) or as one of the three
voters of a cluster (``stack/kafka_cluster.py``), which formats every node with one cluster id.
Durability note: a single broker acknowledges ``acks=all`` once the record is in its page cache,
which survives a broker crash (SIGKILL) but not a machine crash; three brokers hold every record on
at least two of them (``min.insync.replicas=2``) before acknowledging it; see the README.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from iot_platform.settings import DEFAULT_KAFKA_JIT, KafkaJit
from iot_platform.stack.certs import ServerCertificate
from iot_platform.stack.ports import ensure_port_free
from iot_platform.stack.process import StackError, pid_alive, require_binary, spawn, stop_group, wait_until
from iot_platform.stack.kafka_topics import ensure_topics, min_insync_replicas  # ensure_topics re-exported: callers reach topics through the broker

DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy" / "kafka"
# Maximum heap of one node: alone, 512 MiB (docs/design.md §4.4); one of three on the same machine,
# 384 MiB each (measured resident size in docs/benchmarks.md).
HEAP_MB = {1: 512, 3: 384}
# JIT of a local broker (``IOT_KAFKA_LOCAL_JIT``). "c1": the client compiler only, as short-lived JVMs
# run; a broker of `dev up`, of a test or of a benchmark then spends no CPU on the optimizing
# compiler, which took 53-57% of a fresh broker's CPU in a 100,000-message drain after a 20,000-message
# warm-up, at the cost of slower steady-state code (docs/benchmarks.md, issue 15). "tiered": the
# JVM's default, what a long-running production broker wants (the Helm chart does not set it).
JIT_FLAGS: dict[KafkaJit, tuple[str, ...]] = {"c1": ("-XX:TieredStopAtLevel=1",), "tiered": ()}


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
    node_id: int = 1
    # The cluster's controller quorum, "id@host:port" per voter; empty: this node alone.
    voters: tuple[str, ...] = ()
    jit: KafkaJit = DEFAULT_KAFKA_JIT

    @property
    def cluster_size(self) -> int:
        return max(1, len(self.voters))

    @property
    def min_insync_replicas(self) -> int:
        return min_insync_replicas(self.cluster_size)


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
    """server.properties of a combined broker+controller node, alone or one of a cluster's voters (pure)."""
    advertised = config.advertised_port or config.port
    listener = "SASL_SSL" if config.security else "PLAINTEXT"
    voters = ",".join(config.voters) or f"{config.node_id}@{config.host}:{config.controller_port}"
    replicas, min_isr = str(config.cluster_size), str(config.min_insync_replicas)
    props = {
        "process.roles": "broker,controller",
        "node.id": str(config.node_id),
        "controller.quorum.voters": voters,
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
        # Internal topics (group offsets above all) are replicated like ours: on every broker, 1 or 3.
        "offsets.topic.replication.factor": replicas,
        "offsets.topic.num.partitions": "6",
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": min_isr,
        "share.coordinator.state.topic.replication.factor": replicas,
        "share.coordinator.state.topic.min.isr": min_isr,
        "default.replication.factor": replicas,
        "min.insync.replicas": min_isr,
        # Kafka's default, stated: a replica that missed acknowledged records never becomes leader.
        "unclean.leader.election.enable": "false",
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
    """One Kafka node on ``host:port`` (controller on ``controller_port``), data and logs under ``workdir``.

    Alone (the default) it is its own controller quorum. As node ``node_id`` of a cluster it gets the
    quorum's ``voters`` and the ``cluster_id`` every node is formatted with; :meth:`launch` then
    starts it without waiting, since no node is ready before a majority of the voters runs
    (``stack/kafka_cluster.py`` launches them all, then waits)."""

    def __init__(
        self, workdir: Path, port: int, controller_port: int, *, advertised_port: int | None = None,
        retention_check_interval_ms: int = 300_000, security: KafkaSecurity | None = None,
        host: str = "127.0.0.1", node_id: int = 1, voters: tuple[str, ...] = (), cluster_id: str | None = None,
        jit: KafkaJit = DEFAULT_KAFKA_JIT,
    ) -> None:
        self.workdir = Path(workdir)
        self.config = KafkaConfig(
            port=port, controller_port=controller_port, data_dir=self.workdir / "data", host=host,
            advertised_port=advertised_port, retention_check_interval_ms=retention_check_interval_ms,
            security=security, node_id=node_id, voters=voters, jit=jit,
        )
        self.cluster_id = cluster_id
        self.pid: int | None = None

    @property
    def port(self) -> int:
        return self.config.port

    @property
    def node_id(self) -> int:
        return self.config.node_id

    @property
    def bootstrap(self) -> str:
        return f"{self.config.host}:{self.config.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "logs" / "server.log"

    def client_config(self) -> dict[str, str]:
        """librdkafka properties of a client with the broker's own (admin) credentials."""
        return client_config(self.bootstrap, self.config.security)

    def _java(self, main_class: str, *args: str) -> list[str]:
        java = require_binary("java", JAVA_HINT)
        heap = HEAP_MB[3 if self.config.cluster_size >= 3 else 1]
        return [
            java,
            f"-Xmx{heap}m",
            "-Xms256m",
            "-XX:+UseG1GC",
            *JIT_FLAGS[self.config.jit],
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
        cluster_id = self.cluster_id or new_cluster_id()
        result = subprocess.run(
            self._java("kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "--config", str(properties), *scram),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise StackError(f"formatting Kafka storage failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")

    def launch(self) -> "KafkaServer":
        """Format the storage once and start the process; returns without waiting for readiness."""
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
        self.pid = spawn(self._java("kafka.Kafka", str(properties)), self.workdir / "kafka.stdout.log").pid
        return self

    def wait_ready(self, timeout_s: float = 90.0) -> "KafkaServer":
        """Return once this node answers metadata requests and is a registered broker of its cluster."""
        wait_until(
            lambda: self.node_id in registered_brokers(self.client_config()),
            timeout_s=timeout_s,
            what=f"kafka node {self.node_id}" if self.config.voters else "kafka",
            alive=self.is_running,
            log_path=self.log_path,
            interval_s=0.5,
        )
        return self

    def start(self, timeout_s: float = 90.0) -> "KafkaServer":
        """Launch and wait until ready (a cluster's node: once the others of its quorum run)."""
        if self.is_running():
            return self
        return self.launch().wait_ready(timeout_s)

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


def client_config(bootstrap: str, security: KafkaSecurity | None) -> dict[str, str]:
    """librdkafka properties of an admin client of our brokers (their own credentials when secured)."""
    config = {"bootstrap.servers": bootstrap}
    if security is not None:
        config |= {
            "security.protocol": "SASL_SSL", "sasl.mechanism": security.mechanism, "sasl.username": security.username,
            "sasl.password": security.password, "ssl.ca.location": str(security.tls.ca),
        }
    return config


def new_cluster_id() -> str:
    """A cluster id as `kafka-storage random-uuid` prints it: a base64url UUID of 22 characters."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


# librdkafka logs every refused connection while the broker boots; readiness polling expects those.
_QUIET = logging.getLogger("iot_platform.stack.kafka.readiness")
_QUIET.setLevel(logging.CRITICAL)


def registered_brokers(client_config: dict[str, str] | str, timeout_s: float = 3.0) -> set[int]:
    """Node ids of the brokers the cluster lists as alive (registered, unfenced) while it has a controller;
    empty while it does not answer (``client_config``: a bootstrap or librdkafka properties)."""
    from confluent_kafka.admin import AdminClient

    config = {"bootstrap.servers": client_config} if isinstance(client_config, str) else dict(client_config)
    admin = AdminClient({**config, "socket.timeout.ms": int(timeout_s * 1000)}, logger=_QUIET)
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except Exception:  # noqa: BLE001 - any failure means "not ready yet"
        return set()
    return set(metadata.brokers) if metadata.controller_id >= 0 else set()


def java_available() -> bool:
    return shutil.which("java") is not None

__all__ = ["KafkaConfig", "KafkaSecurity", "KafkaServer", "client_config", "ensure_topics", "kafka_classpath",
           "new_cluster_id", "registered_brokers", "render_server_properties"]

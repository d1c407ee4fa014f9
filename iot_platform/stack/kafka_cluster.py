"""Kafka on one machine: one node, or three nodes in one KRaft quorum (``IOT_KAFKA_BROKERS``).

Each node is a combined broker and controller (``stack/kafka.py``). Three combined nodes rather than
three brokers beside separate controllers: three JVMs instead of six on a 2-core machine, a quorum of
three voters that, like the partitions (replication factor 3, ``min.insync.replicas=2``), keeps
working with any one node down; and a node killed in a test takes a controller with it, often the
active one, which is the harder failover. Production runs dedicated controllers (Strimzi,
docs/design.md §8), where brokers and controllers are sized and restarted apart.

Guarantee: :meth:`KafkaCluster.start` returns once every node is a registered broker of the one
cluster (all formatted with one cluster id, read back from a node already formatted); if a node
cannot start, the nodes this call launched are killed again and the error carries that node's log.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from iot_platform.settings import DEFAULT_KAFKA_JIT, KafkaJit
from iot_platform.stack.kafka import KafkaSecurity, KafkaServer, client_config, new_cluster_id, registered_brokers
from iot_platform.stack.process import StackError, stop_groups, tail

CLUSTER_SIZES = (1, 3)
NODE_PORT_STRIDE = 2  # node i of `dev up`: the first bootstrap port + 2i, the controller port + 2i


@dataclass(frozen=True)
class NodeAddress:
    """Where one node listens: clients on ``port`` (advertised as ``advertised_port``, e.g. a proxy), voters on ``controller_port``."""

    host: str
    port: int
    controller_port: int
    advertised_port: int | None = None


def local_node_addresses(bootstrap: str, controller_port: int, brokers: int) -> list[NodeAddress]:
    """The nodes `dev up` runs for ``IOT_KAFKA_BOOTSTRAP``, ``IOT_KAFKA_CONTROLLER_PORT`` and ``IOT_KAFKA_BROKERS`` (pure).

    Node i (from 0) listens at the i-th bootstrap address, or, when the bootstrap names one address
    and there are three brokers, at that port + 2i; its controller at the controller port + 2i. So
    the defaults give 9092/9093, 9094/9095, 9096/9097. ValueError (naming the settings) when the
    bootstrap lists neither one address nor one per broker, or two ports coincide.
    """
    if brokers not in CLUSTER_SIZES:
        raise ValueError(f"IOT_KAFKA_BROKERS={brokers}: the local platform runs 1 or 3 Kafka brokers")
    addresses = []
    for item in bootstrap.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"IOT_KAFKA_BOOTSTRAP={bootstrap!r}: expected host:port[,host:port...]")
        addresses.append((host, int(port)))
    if len(addresses) == 1 and brokers > 1:
        host, port = addresses[0]
        addresses = [(host, port + NODE_PORT_STRIDE * i) for i in range(brokers)]
    if len(addresses) != brokers:
        raise ValueError(
            f"IOT_KAFKA_BOOTSTRAP={bootstrap!r} lists {len(addresses)} addresses for IOT_KAFKA_BROKERS={brokers}: "
            f"give one address (the others follow at +{NODE_PORT_STRIDE}, +{2 * NODE_PORT_STRIDE}) or {brokers}"
        )
    nodes = [NodeAddress(host, port, controller_port + NODE_PORT_STRIDE * i) for i, (host, port) in enumerate(addresses)]
    ports = [(n.host, p) for n in nodes for p in (n.port, n.controller_port)]
    if len(set(ports)) != len(ports):
        raise ValueError(
            f"Kafka ports collide: brokers at {[n.port for n in nodes]}, controllers at {[n.controller_port for n in nodes]}; "
            "set IOT_KAFKA_BOOTSTRAP and IOT_KAFKA_CONTROLLER_PORT apart (each node takes the controller port + 2i)"
        )
    return nodes


def node_dir(workdir: Path, node_id: int, size: int) -> Path:
    """A node's directory: ``workdir`` itself for a single node (the layout of one broker), else ``workdir/node-{id}``."""
    return workdir if size == 1 else workdir / f"node-{node_id}"


def formatted_sizes(workdir: Path) -> list[int]:
    """The cluster sizes whose storage is formatted under ``workdir`` (normally none or one)."""
    return [size for size in CLUSTER_SIZES
            if any((node_dir(workdir, i, size) / "data" / "meta.properties").exists() for i in range(1, size + 1))]


class KafkaCluster:
    """``len(nodes)`` Kafka nodes under ``workdir``: one node in ``workdir`` itself (the layout of a
    single broker), three in ``workdir/node-{1,2,3}``; node ids 1..N."""

    def __init__(
        self, workdir: Path, nodes: Sequence[NodeAddress], *, retention_check_interval_ms: int = 300_000,
        security: KafkaSecurity | None = None, jit: KafkaJit = DEFAULT_KAFKA_JIT,
    ) -> None:
        if len(nodes) not in CLUSTER_SIZES:
            raise ValueError(f"a local Kafka cluster has 1 or 3 nodes, not {len(nodes)}")
        self.workdir = Path(workdir)
        self.security = security
        many = len(nodes) > 1
        voters = tuple(f"{i}@{n.host}:{n.controller_port}" for i, n in enumerate(nodes, start=1)) if many else ()
        self.nodes = [
            KafkaServer(
                node_dir(self.workdir, i, len(nodes)), n.port, n.controller_port,
                advertised_port=n.advertised_port, retention_check_interval_ms=retention_check_interval_ms,
                security=security, host=n.host, node_id=i, voters=voters, jit=jit,
            )
            for i, n in enumerate(nodes, start=1)
        ]

    @property
    def size(self) -> int:
        return len(self.nodes)

    @property
    def bootstrap(self) -> str:
        """Every node's address: a client bootstraps through whichever answers."""
        return ",".join(node.bootstrap for node in self.nodes)

    @property
    def pids(self) -> list[int | None]:
        return [node.pid for node in self.nodes]

    def node(self, node_id: int) -> KafkaServer:
        return self.nodes[node_id - 1]

    def client_config(self) -> dict[str, str]:
        return client_config(self.bootstrap, self.security)

    def _cluster_id(self) -> str:
        for node in self.nodes:
            meta = node.config.data_dir / "meta.properties"
            if meta.exists():
                for line in meta.read_text().splitlines():
                    if line.startswith("cluster.id="):
                        return line.split("=", 1)[1].strip()
        return new_cluster_id()

    def start(self, timeout_s: float = 120.0) -> "KafkaCluster":
        """Launch every node that is not running, then wait until all are registered brokers."""
        cluster_id = self._cluster_id()
        launched: list[KafkaServer] = []
        try:
            for node in self.nodes:
                if not node.is_running():
                    node.cluster_id = cluster_id
                    launched.append(node.launch())
            self.wait_ready(timeout_s)
        except BaseException:
            stop_groups([node.pid for node in launched], timeout_s=0)
            raise
        return self

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Every node runs and the cluster lists all of them as brokers; a node that exits fails it at once, with its log."""
        expected = {node.node_id for node in self.nodes}
        deadline = time.monotonic() + timeout_s
        while True:
            for node in self.nodes:
                if not node.is_running():
                    raise StackError(f"kafka node {node.node_id} exited while starting\n"
                                     f"--- last lines of {node.log_path} ---\n{tail(node.log_path)}")
            registered = registered_brokers(self.client_config())
            if expected <= registered:
                return
            if time.monotonic() > deadline:
                missing = sorted(expected - registered)
                raise StackError(f"kafka nodes {missing} were not registered brokers within {timeout_s:.0f} s\n"
                                 f"--- last lines of {self.node(missing[0]).log_path} ---\n{tail(self.node(missing[0]).log_path)}")
            time.sleep(0.5)

    def is_running(self) -> bool:
        return all(node.is_running() for node in self.nodes)

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM every node at once (one by one, the last ones wait for a quorum that is leaving), SIGKILL after ``timeout_s``."""
        stop_groups(self.pids, timeout_s)

    def kill(self) -> None:
        stop_groups(self.pids, timeout_s=0)

    def pause(self) -> None:
        for node in self.nodes:
            node.pause()

    def resume(self) -> None:
        for node in self.nodes:
            node.resume()


__all__ = ["CLUSTER_SIZES", "KafkaCluster", "NodeAddress", "formatted_sizes", "local_node_addresses", "node_dir"]

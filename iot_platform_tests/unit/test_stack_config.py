"""Generated server configurations: nothing that drops, throttles or exposes data."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from iot_platform.settings import Settings
from iot_platform.stack.certs import ServerCertificate
from iot_platform.stack.kafka import JIT_FLAGS, KafkaConfig, render_server_properties
from iot_platform.stack.kafka_cluster import KafkaCluster, NodeAddress, formatted_sizes, local_node_addresses, node_dir
from iot_platform.stack.mosquitto import MosquittoConfig, render_config
from iot_platform.stack.platform import LocalPlatform, PlatformState
from iot_platform.stack.ports import ensure_port_free, free_port
from iot_platform.stack.postgres import render_conf
from iot_platform.stack.process import StackError


def _mosquitto_options(text: str) -> dict[str, list[str]]:
    options: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        options.setdefault(key, []).append(value)
    return options


def test_mosquitto_config_keeps_every_message(tmp_path: Path) -> None:
    """Large queues (not 0, broken in 2.0.x), wide inflight, persistence saved every second (not on
    changes: 2.0.11 then redelivers acked messages to persistent sessions, see the module docstring)."""
    options = _mosquitto_options(render_config(MosquittoConfig(plain_port=1883, data_dir=tmp_path, log_path=tmp_path / "l", dynsec_plugin=tmp_path / "d.so")))
    assert options["listener"] == ["1883 127.0.0.1"]
    assert options["persistence"] == ["true"]
    assert options["autosave_on_changes"] == ["false"]
    assert options["autosave_interval"] == ["1"]
    assert int(options["max_queued_messages"][0]) >= 1_000_000
    assert int(options["max_queued_bytes"][0]) > 0
    assert int(options["max_inflight_messages"][0]) >= 1000
    assert int(options["max_packet_size"][0]) < 1_048_576
    assert options["persistence_location"] == [f"{tmp_path}/"]
    assert "user" not in options


def test_mosquitto_config_can_keep_the_current_user(tmp_path: Path) -> None:
    config = MosquittoConfig(plain_port=1, data_dir=tmp_path, log_path=tmp_path / "l", dynsec_plugin=tmp_path / "d.so", run_as_user="root")
    assert _mosquitto_options(render_config(config))["user"] == ["root"]


def test_mosquitto_config_authenticates_every_listener(tmp_path: Path) -> None:
    """No anonymous client on any listener; dynsec loaded; plain MQTT on loopback only; TLS with our certificate."""
    tls = ServerCertificate(cert=tmp_path / "m.pem", key=tmp_path / "m.key", ca=tmp_path / "ca.pem")
    config = MosquittoConfig(plain_port=1883, tls_port=8883, tls=tls, host="0.0.0.0", data_dir=tmp_path,
                             log_path=tmp_path / "l", dynsec_plugin=tmp_path / "d.so")
    options = _mosquitto_options(render_config(config))
    assert options["allow_anonymous"] == ["false"] and options["per_listener_settings"] == ["false"]
    assert options["listener"] == ["1883 127.0.0.1", "8883 0.0.0.0"]
    assert options["plugin"] == [str(tmp_path / "d.so")]
    assert options["plugin_opt_config_file"] == [str(tmp_path / "dynamic-security.json")]
    assert (options["certfile"], options["keyfile"], options["cafile"]) == ([str(tls.cert)], [str(tls.key)], [str(tls.ca)])


def test_kafka_properties_single_node_kraft(tmp_path: Path) -> None:
    """One combined node: replication factor 1 everywhere, no auto-created topics, 3-day retention."""
    text = render_server_properties(KafkaConfig(port=9092, controller_port=9093, data_dir=tmp_path))
    props = dict(line.split("=", 1) for line in text.splitlines())
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9092"
    assert props["auto.create.topics.enable"] == "false"
    assert props["log.retention.ms"] == "259200000"
    assert props["offsets.topic.replication.factor"] == props["transaction.state.log.replication.factor"] == "1"
    assert props["min.insync.replicas"] == "1" and props["unclean.leader.election.enable"] == "false"
    assert props["log.dirs"] == str(tmp_path)


def test_kafka_properties_can_advertise_a_proxy(tmp_path: Path) -> None:
    text = render_server_properties(KafkaConfig(port=9092, controller_port=9093, data_dir=tmp_path, advertised_port=19092))
    assert "advertised.listeners=PLAINTEXT://127.0.0.1:19092\n" in text
    assert "listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093\n" in text


def test_kafka_properties_of_one_node_of_three(tmp_path: Path) -> None:
    """Node 2 of a three-voter quorum: its own id, every voter, internal topics on 3 replicas, min ISR 2,
    no unclean leader election (docs/design.md §1.3)."""
    voters = ("1@127.0.0.1:9093", "2@127.0.0.1:9095", "3@127.0.0.1:9097")
    config = KafkaConfig(port=9094, controller_port=9095, data_dir=tmp_path, node_id=2, voters=voters)
    props = dict(line.split("=", 1) for line in render_server_properties(config).splitlines())
    assert props["node.id"] == "2" and props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == ",".join(voters)
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9094,CONTROLLER://127.0.0.1:9095"
    for name in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor",
                 "share.coordinator.state.topic.replication.factor", "default.replication.factor"):
        assert props[name] == "3", name
    assert props["min.insync.replicas"] == props["transaction.state.log.min.isr"] == "2"
    assert props["unclean.leader.election.enable"] == "false"


def test_dev_up_kafka_nodes_follow_the_bootstrap_and_controller_port() -> None:
    """One address and 3 brokers: port pairs +0, +2, +4 from the defaults; three addresses: used as given,
    controllers still + 2i; one broker: today's single address and controller port."""
    assert local_node_addresses("127.0.0.1:9092", 9093, 1) == [NodeAddress("127.0.0.1", 9092, 9093)]
    assert [(n.port, n.controller_port) for n in local_node_addresses("127.0.0.1:9092", 9093, 3)] == [
        (9092, 9093), (9094, 9095), (9096, 9097)]
    given = local_node_addresses("127.0.0.1:19092, 127.0.0.1:29092,127.0.0.1:39092", 19093, 3)
    assert [(n.port, n.controller_port) for n in given] == [(19092, 19093), (29092, 19095), (39092, 19097)]


@pytest.mark.parametrize(("jit", "flags"), [("c1", ["-XX:TieredStopAtLevel=1"]), ("tiered", [])])
def test_dev_up_brokers_run_the_jit_the_setting_names(tmp_path: Path, jit: str, flags: list[str]) -> None:
    """IOT_KAFKA_LOCAL_JIT reaches every node `dev up` runs; c1 (the default) stops at the client compiler."""
    platform = LocalPlatform(Settings(home=tmp_path, kafka_brokers=3, kafka_local_jit=jit))  # type: ignore[arg-type]
    assert {node.config.jit for node in platform.kafka.nodes} == {jit}
    assert list(JIT_FLAGS[jit]) == flags
    assert Settings().kafka_local_jit == KafkaConfig(port=1, controller_port=2, data_dir=tmp_path).jit == "c1"


@pytest.mark.parametrize(
    ("bootstrap", "controller_port", "brokers", "message"),
    [
        ("127.0.0.1:9092,127.0.0.1:9094", 9093, 3, "lists 2 addresses for IOT_KAFKA_BROKERS=3"),
        ("127.0.0.1:9092,127.0.0.1:9094", 9093, 1, "lists 2 addresses for IOT_KAFKA_BROKERS=1"),
        ("127.0.0.1:9092", 9094, 3, "ports collide"),
        ("127.0.0.1:9092", 9092, 1, "ports collide"),
        ("localhost", 9093, 1, "expected host:port"),
        ("127.0.0.1:9092", 9093, 2, "1 or 3"),
    ],
)
def test_dev_up_refuses_kafka_addresses_it_cannot_run(bootstrap: str, controller_port: int, brokers: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        local_node_addresses(bootstrap, controller_port, brokers)


def test_a_cluster_layout_of_the_other_size_is_recognised(tmp_path: Path) -> None:
    """One broker keeps today's layout (IOT_HOME/kafka/data), three live in node-{1,2,3}: dev up can tell
    which size a home's Kafka was formatted with before it starts an empty cluster of the other size."""
    assert formatted_sizes(tmp_path) == []
    (node_dir(tmp_path, 2, 3) / "data").mkdir(parents=True)
    (node_dir(tmp_path, 2, 3) / "data" / "meta.properties").write_text("cluster.id=x\n")
    assert formatted_sizes(tmp_path) == [3]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "meta.properties").write_text("cluster.id=y\n")
    assert formatted_sizes(tmp_path) == [1, 3]
    nodes = KafkaCluster(tmp_path, local_node_addresses("127.0.0.1:9092", 9093, 3)).nodes
    assert [n.workdir for n in nodes] == [tmp_path / "node-1", tmp_path / "node-2", tmp_path / "node-3"]
    assert KafkaCluster(tmp_path, local_node_addresses("127.0.0.1:9092", 9093, 1)).nodes[0].workdir == tmp_path


def test_postgres_conf_is_loopback_and_durable(tmp_path: Path) -> None:
    conf = render_conf(5433, tmp_path)
    assert "port = 5433" in conf
    assert "listen_addresses = '127.0.0.1'" in conf
    assert "fsync = on" in conf and "synchronous_commit = on" in conf


def test_busy_port_names_the_setting() -> None:
    """A port in use fails with the port and the IOT_ variable that changes it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(StackError, match=rf"127\.0\.0\.1:{port}.*IOT_PG_PORT"):
            ensure_port_free("127.0.0.1", port, "IOT_PG_PORT")
    ensure_port_free("127.0.0.1", free_port(), "IOT_PG_PORT")


def test_status_lists_every_kafka_node_and_service_replica_of_a_home(tmp_path: Path) -> None:
    """`dev status` of a three-broker home with two bridge replicas: a pid per Kafka node and per replica
    index, null for a dead node or a missing pid file; `pids` keeps the first node and replica 0."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    me = os.getpid()
    PlatformState(pids={"kafka": me}, nodes={"kafka": [me, dead.pid, me]}).save(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "bridge.pid").write_text(f"{me}\n")
    (tmp_path / "run" / "consumer-1.pid").write_text(f"{me}\n")  # above IOT_CONSUMER_REPLICAS=1: not listed
    platform = LocalPlatform(Settings(home=tmp_path, kafka_brokers=3, bridge_replicas=2))
    status = platform.status()
    assert status["replicas"] == {"bridge": [me, None], "consumer": [None], "kafka": [me, None, me]}
    assert (status["pids"]["kafka"], status["pids"]["bridge"], status["pids"]["consumer"]) == (me, me, None)
    assert status["kafka"]["brokers"] == 3

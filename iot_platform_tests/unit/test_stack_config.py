"""Generated server configurations: nothing that drops, throttles or exposes data."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from iot_platform.stack.certs import ServerCertificate
from iot_platform.stack.kafka import KafkaConfig, render_server_properties
from iot_platform.stack.mosquitto import MosquittoConfig, render_config
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
    """Large queues (not 0, broken in 2.0.x), wide inflight, persistence saved on changes."""
    options = _mosquitto_options(render_config(MosquittoConfig(plain_port=1883, data_dir=tmp_path, log_path=tmp_path / "l", dynsec_plugin=tmp_path / "d.so")))
    assert options["listener"] == ["1883 127.0.0.1"]
    assert options["persistence"] == ["true"]
    assert options["autosave_on_changes"] == ["true"]
    assert 0 < int(options["autosave_interval"][0]) <= 10_000
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
    assert props["log.dirs"] == str(tmp_path)


def test_kafka_properties_can_advertise_a_proxy(tmp_path: Path) -> None:
    text = render_server_properties(KafkaConfig(port=9092, controller_port=9093, data_dir=tmp_path, advertised_port=19092))
    assert "advertised.listeners=PLAINTEXT://127.0.0.1:19092\n" in text
    assert "listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093\n" in text


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

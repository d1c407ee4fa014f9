"""A private Mosquitto broker, configured so that it neither drops nor throttles telemetry.

Mosquitto 2.0.x defaults lose data (docs/design.md §4.3): ``max_queued_messages 1000`` silently drops
beyond that for a disconnected persistent session, inflight is 20, and ``autosave_interval 1800``
means a broker crash forgets half an hour of accepted messages. The configuration below raises the
queues, keeps sessions for a week, and saves the store after every ``autosave_changes`` changes,
which bounds what a SIGKILLed broker can lose (docs/benchmarks.md measures the cost).
"""

from __future__ import annotations

import getpass
import os
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from iot_platform.stack.ports import ensure_port_free, port_open
from iot_platform.stack.process import StackError, pid_alive, require_binary, spawn, stop_group, wait_until

INSTALL_HINT = "install Debian's package: sudo apt-get install mosquitto"


@dataclass(frozen=True)
class MosquittoConfig:
    port: int
    data_dir: Path
    log_path: Path
    host: str = "127.0.0.1"
    max_queued_messages: int = 1_000_000
    max_queued_bytes: int = 2 * 1024**3  # 0 ("unlimited") is broken in several 2.0.x releases
    max_inflight_messages: int = 1000
    max_packet_size: int = 1_000_000  # below Kafka's 1 MiB, above the bridge's payload limit
    autosave_changes: int = 1000
    session_expiry: str = "7d"
    run_as_user: str | None = None


def render_config(config: MosquittoConfig) -> str:
    """mosquitto.conf text for ``config`` (pure)."""
    lines = [
        f"listener {config.port} {config.host}",
        "allow_anonymous true",
        "persistence true",
        f"persistence_location {config.data_dir}/",
        "persistence_file mosquitto.db",
        "autosave_on_changes true",
        f"autosave_interval {config.autosave_changes}",
        f"persistent_client_expiration {config.session_expiry}",
        f"max_queued_messages {config.max_queued_messages}",
        f"max_queued_bytes {config.max_queued_bytes}",
        f"max_inflight_messages {config.max_inflight_messages}",
        "max_inflight_bytes 0",
        f"max_packet_size {config.max_packet_size}",
        "queue_qos0_messages false",
        "set_tcp_nodelay true",
        f"log_dest file {config.log_path}",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        "connection_messages false",
    ]
    if config.run_as_user:
        lines.append(f"user {config.run_as_user}")
    return "\n".join(lines) + "\n"


class MosquittoServer:
    """Mosquitto on ``host:port`` with its store and log under ``workdir``."""

    def __init__(self, workdir: Path, port: int, host: str = "127.0.0.1", autosave_changes: int = 1000) -> None:
        self.workdir = Path(workdir)
        self.host = host
        self.port = port
        self.config = MosquittoConfig(
            port=port,
            host=host,
            data_dir=self.workdir / "data",
            log_path=self.workdir / "mosquitto.log",
            autosave_changes=autosave_changes,
            # As root, Mosquitto would otherwise switch to the 'mosquitto' account and lose its store.
            run_as_user=getpass.getuser() if os.geteuid() == 0 else None,
        )
        self.pid: int | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.config.log_path

    def start(self, timeout_s: float = 20.0) -> "MosquittoServer":
        if self.is_running():
            return self
        # Debian installs the broker in /usr/sbin, which is not on every user's PATH.
        binary = "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else require_binary("mosquitto", INSTALL_HINT)
        ensure_port_free(self.host, self.port, "IOT_MQTT_URL")
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(render_config(self.config))
        process = spawn([binary, "-c", str(conf)], self.workdir / "mosquitto.stdout.log")
        self.pid = process.pid
        wait_until(
            lambda: port_open(self.host, self.port) and round_trip(self.host, self.port),
            timeout_s=timeout_s,
            what="mosquitto",
            alive=lambda: process.poll() is None,
            log_path=self.log_path,
        )
        return self

    def is_running(self) -> bool:
        return pid_alive(self.pid)

    def stop(self, timeout_s: float = 20.0) -> None:
        stop_group(self.pid, timeout_s)

    def kill(self) -> None:
        stop_group(self.pid, timeout_s=0)


def round_trip(host: str, port: int, timeout_s: float = 5.0) -> bool:
    """Publish one QoS 1 message to ourselves: the broker really routes messages."""
    import paho.mqtt.client as mqtt

    topic = f"iot-platform/health/{uuid.uuid4().hex}"
    received = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"iot-health-{uuid.uuid4().hex[:8]}")
    client.on_message = lambda _c, _u, _m: received.set()
    try:
        client.connect(host, port, keepalive=10)
        client.loop_start()
        client.subscribe(topic, qos=1)
        client.publish(topic, b"ping", qos=1)
        return received.wait(timeout_s)
    except OSError:
        return False
    finally:
        client.loop_stop()
        client.disconnect()


__all__ = ["MosquittoConfig", "MosquittoServer", "StackError", "render_config", "round_trip"]

"""A private Mosquitto broker that authenticates every client and neither drops nor throttles telemetry.

Mosquitto 2.0.x defaults lose data (docs/design.md §4.3): ``max_queued_messages 1000`` silently drops
beyond that for a disconnected persistent session, inflight is 20, and ``autosave_interval 1800``
means a broker crash forgets half an hour of accepted messages. The configuration below raises the
queues, keeps sessions for a week, and saves the store every second, which bounds what a SIGKILLed
broker can lose to the messages it accepted in the last second (docs/benchmarks.md measures it).
Not every 1,000 changes (``autosave_on_changes``), although that bounds the loss by a count: with it
2.0.11 sent a persistent subscriber (the bridge, on MQTT 5 as on 3.1.1) 30,000-60,000 messages of a
100,000-message burst a second time after it had acked them all and reconnected cleanly; a save
per second showed none (benchmarks/mqtt_burst_redelivery.py).

Access: ``allow_anonymous false`` on every listener and the dynamic-security plugin, whose JSON file
in the data directory we write once before the first start (only the admin client); after that the
plugin owns it (it saves it on every change) and the platform changes it only through
``$CONTROL/dynamic-security/v1`` (:mod:`iot_platform.access`). Listeners: MQTT over TLS on
``tls_port`` (certificate from the platform's CA) and/or plain MQTT on ``plain_port``, which binds
to loopback only; both require credentials.
"""

from __future__ import annotations

import getpass
import glob
import json
import os
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from iot_platform.access.connection import MqttCredentials
from iot_platform.access.dynsec_json import initial_config
from iot_platform.stack.certs import ServerCertificate
from iot_platform.stack.ports import ensure_port_free, port_open
from iot_platform.stack.process import StackError, pid_alive, require_binary, spawn, stop_group, wait_until

INSTALL_HINT = "install Debian's package: sudo apt-get install mosquitto"
DYNSEC_LIBRARY = "mosquitto_dynamic_security.so"
_DYNSEC_GLOBS = ("/usr/lib/*/mosquitto_dynamic_security.so", "/usr/lib/mosquitto_dynamic_security.so",
                 "/usr/local/lib/*/mosquitto_dynamic_security.so", "/usr/local/lib/mosquitto_dynamic_security.so")


def dynsec_plugin_path() -> Path:
    """Debian ships the plugin in the multiarch library directory; look there and in the usual places."""
    for pattern in _DYNSEC_GLOBS:
        found = sorted(glob.glob(pattern))
        if found:
            return Path(found[0])
    raise StackError(f"{DYNSEC_LIBRARY} not found (Mosquitto's dynamic security plugin): {INSTALL_HINT}")


@dataclass(frozen=True)
class MosquittoConfig:
    plain_port: int | None
    data_dir: Path
    log_path: Path
    dynsec_plugin: Path
    host: str = "127.0.0.1"  # of the TLS listener; the plain one is always on loopback
    tls_port: int | None = None
    tls: ServerCertificate | None = None
    max_queued_messages: int = 1_000_000
    max_queued_bytes: int = 2 * 1024**3  # 0 ("unlimited") is broken in several 2.0.x releases
    max_inflight_messages: int = 1000
    max_packet_size: int = 1_000_000  # below Kafka's 1 MiB, above the bridge's payload limit
    autosave_interval: int = 1  # seconds; or changes, with autosave_on_changes (benchmarks only)
    autosave_on_changes: bool = False
    session_expiry: str = "7d"
    run_as_user: str | None = None


def render_config(config: MosquittoConfig) -> str:
    """mosquitto.conf text for ``config`` (pure)."""
    lines = [
        "per_listener_settings false",
        "allow_anonymous false",
        f"plugin {config.dynsec_plugin}",
        f"plugin_opt_config_file {config.data_dir / DYNSEC_FILE}",
    ]
    if config.plain_port is not None:
        lines.append(f"listener {config.plain_port} 127.0.0.1")
    if config.tls_port is not None and config.tls is not None:
        lines += [
            f"listener {config.tls_port} {config.host}",
            f"cafile {config.tls.ca}",
            f"certfile {config.tls.cert}",
            f"keyfile {config.tls.key}",
            "tls_version tlsv1.2",
        ]
    lines += [
        "persistence true",
        f"persistence_location {config.data_dir}/",
        "persistence_file mosquitto.db",
        f"autosave_on_changes {str(config.autosave_on_changes).lower()}",
        f"autosave_interval {config.autosave_interval}",
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


DYNSEC_FILE = "dynamic-security.json"


def mosquitto_binary() -> str:
    # Debian installs the broker in /usr/sbin, which is not on every user's PATH.
    return "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else require_binary("mosquitto", INSTALL_HINT)


class MosquittoServer:
    """Mosquitto with its store, dynsec file and log under ``workdir``.

    ``tls``: listen with TLS on ``host:tls_port``; ``plain_port``: plain MQTT on 127.0.0.1. The
    ``admin`` client (dynsec's only client at first start) is the one the health check uses.
    """

    def __init__(
        self,
        workdir: Path,
        plain_port: int | None,
        host: str = "127.0.0.1",
        autosave_interval: int = 1,
        autosave_on_changes: bool = False,
        *,
        admin: MqttCredentials,
        tls_port: int | None = None,
        tls: ServerCertificate | None = None,
    ) -> None:
        if (tls_port is None) != (tls is None) or (plain_port is None and tls_port is None):
            raise ValueError("give a plain port, or a TLS port with its certificate, or both")
        self.workdir = Path(workdir)
        self.host = host
        self.admin = admin
        self.config = MosquittoConfig(
            plain_port=plain_port,
            tls_port=tls_port,
            tls=tls,
            host=host,
            data_dir=self.workdir / "data",
            log_path=self.workdir / "mosquitto.log",
            dynsec_plugin=dynsec_plugin_path(),
            autosave_interval=autosave_interval,
            autosave_on_changes=autosave_on_changes,
            # As root, Mosquitto would otherwise switch to the 'mosquitto' account and lose its store.
            run_as_user=getpass.getuser() if os.geteuid() == 0 else None,
        )
        self.pid: int | None = None

    @property
    def port(self) -> int:
        """The port clients should use: TLS when there is a TLS listener."""
        port = self.config.tls_port if self.config.tls_port is not None else self.config.plain_port
        assert port is not None
        return port

    @property
    def url(self) -> str:
        return f"mqtts://{self.host}:{self.config.tls_port}" if self.config.tls_port is not None else self.plain_url

    @property
    def plain_url(self) -> str:
        return f"mqtt://127.0.0.1:{self.config.plain_port}"

    @property
    def ca_file(self) -> Path | None:
        return self.config.tls.ca if self.config.tls else None

    @property
    def log_path(self) -> Path:
        return self.config.log_path

    def start(self, timeout_s: float = 20.0) -> "MosquittoServer":
        if self.is_running():
            return self
        binary = mosquitto_binary()
        if self.config.tls_port is not None:
            ensure_port_free(self.host, self.config.tls_port, "IOT_MQTT_URL")
        if self.config.plain_port is not None:
            ensure_port_free("127.0.0.1", self.config.plain_port, "IOT_MQTT_PLAIN_PORT")
        self.config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._write_initial_dynsec()
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(render_config(self.config))
        process = spawn([binary, "-c", str(conf)], self.workdir / "mosquitto.stdout.log")
        self.pid = process.pid
        host = self.host if self.config.tls_port is not None else "127.0.0.1"
        wait_until(
            lambda: port_open(host, self.port) and round_trip(host, self.port, self.admin, self.ca_file),
            timeout_s=timeout_s,
            what="mosquitto",
            alive=lambda: process.poll() is None,
            log_path=self.log_path,
        )
        return self

    def _write_initial_dynsec(self) -> None:
        """Only before the first start: afterwards the plugin owns the file (it holds every device)."""
        path = self.config.data_dir / DYNSEC_FILE
        if path.exists():
            return
        config = initial_config(self.admin.username, self.admin.password.get_secret_value())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(config, out, indent=1)

    def is_running(self) -> bool:
        return pid_alive(self.pid)

    def stop(self, timeout_s: float = 20.0) -> None:
        stop_group(self.pid, timeout_s)

    def kill(self) -> None:
        stop_group(self.pid, timeout_s=0)


def round_trip(host: str, port: int, admin: MqttCredentials, ca_file: Path | None = None, timeout_s: float = 5.0) -> bool:
    """The admin authenticates and the dynamic-security plugin answers a request: the broker is up,
    routes messages, and checks credentials (an anonymous health check would pass on a broken config)."""
    import paho.mqtt.client as mqtt

    received = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"iot-health-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5)
    client.username_pw_set(admin.username, admin.password.get_secret_value())
    if ca_file is not None:
        client.tls_set(ca_certs=str(ca_file))
    client.on_message = lambda _c, _u, _m: received.set()
    try:
        client.connect(host, port, keepalive=10)
        client.loop_start()
        client.subscribe("$CONTROL/dynamic-security/v1/response", qos=1)
        client.publish("$CONTROL/dynamic-security/v1", json.dumps({"commands": [{"command": "getDefaultACLAccess"}]}), qos=1)
        return received.wait(timeout_s)
    except OSError:
        return False
    finally:
        client.loop_stop()
        client.disconnect()


def new_admin(username: str = "iot-admin") -> MqttCredentials:
    """Admin credentials for a private broker (tests, benchmarks)."""
    import secrets

    return MqttCredentials(username, SecretStr(secrets.token_urlsafe(24)))


__all__ = ["MosquittoConfig", "MosquittoServer", "StackError", "dynsec_plugin_path", "new_admin", "render_config", "round_trip"]

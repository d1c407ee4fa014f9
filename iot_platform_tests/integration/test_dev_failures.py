"""`iot-platform dev up` fails cleanly: a clear error, nothing left running, nothing of others stopped."""

from __future__ import annotations

import getpass
import json
import os
import re
import socket
import subprocess
from pathlib import Path

import pytest

from iot_platform.observability.instance_lock import acquire
from iot_platform.stack.ports import free_port, port_open
from iot_platform.stack.postgres import PostgresServer
from iot_platform.stack.process import pid_alive
from iot_platform_tests.helpers import run_cli, wait_for

pytestmark = pytest.mark.integration


def test_busy_port_fails_naming_port_and_setting_and_stops_what_started(tmp_path: Path) -> None:
    """PostgreSQL starts first; Kafka's port is taken: `up` exits 1 naming the port and IOT_KAFKA_BOOTSTRAP,
    and the PostgreSQL it had started is stopped again."""
    home = tmp_path / ".iot"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IOT_", "DAGSTER_"))}
    env.update(IOT_HOME=str(home), IOT_PG_PORT=str(free_port()), IOT_MQTT_URL=f"mqtt://127.0.0.1:{free_port()}",
               IOT_KAFKA_CONTROLLER_PORT=str(free_port()), IOT_DAGSTER_PORT=str(free_port()))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        kafka_address = f"127.0.0.1:{busy.getsockname()[1]}"
        env["IOT_KAFKA_BOOTSTRAP"] = kafka_address
        result = run_cli(env, "dev", "up", "--no-demo", timeout=180)
    try:
        assert result.returncode == 1
        assert kafka_address in result.stderr and "IOT_KAFKA_BOOTSTRAP" in result.stderr
        assert "stopping what this call started: postgres" in result.stderr
        started = re.search(r"postgres: ready in [0-9.]+ s \(pid (\d+)\)", result.stderr)
        assert started, result.stderr
        assert not pid_alive(int(started.group(1))), "postgres was left running"
        recorded = json.loads((home / "state.json").read_text())["pids"]
        assert not any(pid_alive(pid) for pid in recorded.values()), recorded
    finally:
        PostgresServer(home / "postgres", int(env["IOT_PG_PORT"])).destroy()


def _isolated_env(home: Path, **ports: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IOT_", "DAGSTER_"))}
    env.update(IOT_HOME=str(home), IOT_PG_PORT=str(free_port()), IOT_MQTT_URL=f"mqtt://127.0.0.1:{free_port()}",
               IOT_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}", IOT_KAFKA_CONTROLLER_PORT=str(free_port()),
               IOT_DAGSTER_PORT=str(free_port()))
    env.update(ports)
    return env


def test_a_system_broker_on_the_mqtt_port_fails_dev_up_naming_the_setting_and_keeps_running(tmp_path: Path) -> None:
    """A Mosquitto of the machine's own (configured like a system broker: `listener PORT`, every
    interface) holds the platform's MQTT port: `up` starts nothing, exits 1 naming the port and
    IOT_MQTT_URL, and the system broker is left running."""
    port = free_port()
    conf = tmp_path / "system-mosquitto.conf"
    conf.write_text(f"listener {port}\nallow_anonymous true\n" + (f"user {getpass.getuser()}\n" if os.geteuid() == 0 else ""))
    system_broker = subprocess.Popen(["/usr/sbin/mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: port_open("127.0.0.1", port), 20, "the system broker listening", interval_s=0.1)
        home = tmp_path / ".iot"
        result = run_cli(_isolated_env(home, IOT_MQTT_URL=f"mqtt://127.0.0.1:{port}"), "dev", "up", "--no-demo", timeout=120)
        assert result.returncode == 1, result.stderr
        assert f"127.0.0.1:{port}" in result.stderr and "IOT_MQTT_URL" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
        assert "postgres: starting" not in result.stderr, "nothing is started before the port check"
        assert system_broker.poll() is None, "dev up stopped a broker it did not start"
    finally:
        system_broker.kill()
        system_broker.wait(10)


def test_dev_up_refuses_while_another_dev_up_works_on_the_same_home(tmp_path: Path) -> None:
    """Two `dev up` on one home at once would start two of everything: the second is refused, naming the first's pid."""
    home = tmp_path / ".iot"
    fd = acquire(home / "run" / "locks" / "dev.lock", "a test standing in for another `dev up`")
    try:
        result = run_cli(_isolated_env(home), "dev", "up", "--no-demo", timeout=120)
    finally:
        os.close(fd)
    assert result.returncode == 1, result.stderr
    assert f"pid {os.getpid()}" in result.stderr and "already running" in result.stderr, result.stderr
    assert not (home / "state.json").exists() or not any(
        pid_alive(pid) for pid in json.loads((home / "state.json").read_text())["pids"].values()
    )

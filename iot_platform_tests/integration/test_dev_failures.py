"""`iot-platform dev up` fails cleanly: a clear error, nothing left running, nothing of others stopped."""

from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path

import pytest

from iot_platform.observability.instance_lock import acquire
from iot_platform.stack.ports import free_port
from iot_platform.stack.postgres import PostgresServer
from iot_platform.stack.process import pid_alive
from iot_platform_tests.helpers import run_cli

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

"""One real `iot-platform dev up --no-demo` shared by the tests that need the whole platform.

It runs in a private IOT_HOME on free ports; at the end `dev down` must leave none of the processes
it started alive (and anything left is killed, so a failing test never leaks a process).
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator

import pytest

from iot_platform.observability.pidfile import live_replica_pids
from iot_platform.stack.ports import free_port
from iot_platform.stack.postgres import PostgresServer
from iot_platform.stack.process import pid_alive
from iot_platform_tests.helpers import run_cli


@pytest.fixture(scope="session")
def dev_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    home = tmp_path_factory.mktemp("platform") / ".iot"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IOT_", "DAGSTER_"))}
    env.update(
        IOT_HOME=str(home),
        IOT_MQTT_URL=f"mqtts://127.0.0.1:{free_port()}",
        IOT_MQTT_PLAIN_PORT=str(free_port()),
        IOT_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}",
        IOT_KAFKA_CONTROLLER_PORT=str(free_port()),
        IOT_PG_PORT=str(free_port()),
        IOT_DAGSTER_PORT=str(free_port()),
        IOT_BRIDGE_METRICS_PORT="0",
        IOT_CONSUMER_METRICS_PORT="0",
        IOT_HEARTBEAT_INTERVAL_S="5",
        IOT_SERVICE_STALL_TIMEOUT_S="20",  # test_dagster_services freezes a service and waits for its replacement
    )
    up = run_cli(env, "dev", "up", "--no-demo")
    try:
        assert up.returncode == 0, f"dev up failed:\n{up.stdout}\n{up.stderr}"
        status = json.loads(run_cli(env, "dev", "status", "--json").stdout)
        yield {"env": env, "status": status, "url": status["dagster"]["url"], "home": home}
    finally:
        recorded = json.loads((home / "state.json").read_text())["pids"] if (home / "state.json").exists() else {}
        down = run_cli(env, "dev", "down", timeout=180)
        leftovers = {name: pid for name, pid in recorded.items() if pid and pid_alive(pid)}
        for pid in leftovers.values():
            os.killpg(pid, signal.SIGKILL)
        services = {f"{name}-{index}": pid for name in ("bridge", "consumer") for index, pid in live_replica_pids(home, name).items()}
        for pid in services.values():
            os.kill(pid, signal.SIGKILL)
        # As root the cluster may live outside IOT_HOME (pytest's temp dirs are private): delete it.
        PostgresServer(home / "postgres", int(env["IOT_PG_PORT"])).destroy()
        assert down.returncode == 0, down.stderr
        assert not leftovers and not services, f"dev down left processes alive: {leftovers} {services}"

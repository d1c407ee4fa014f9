"""One real `iot-platform dev up --no-demo` shared by the tests that need the whole platform.

It runs in a private IOT_HOME on free ports; when the last test that needs it is done, `dev down` must
leave none of the processes it started alive (and anything left is killed, so a failing test never
leaks a process).
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


class SharedPlatform:
    """The platform the tests that ask for ``dev_platform`` share: started by the first, stopped by
    :func:`pytest_runtest_teardown` once the next test does not need it (the suite orders those tests
    next to each other), so it does not idle beside the rest of the suite until the session ends."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._tmp_path_factory = tmp_path_factory
        self.running: dict | None = None

    def get(self) -> dict:
        if self.running is None:
            self.running = _start_platform(self._tmp_path_factory)
        return self.running

    def stop(self) -> None:
        if self.running is not None:
            platform, self.running = self.running, None
            _stop_platform(platform)


_SHARED = pytest.StashKey[SharedPlatform]()


@pytest.fixture(scope="session")
def shared_platform(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedPlatform]:
    shared = request.config.stash[_SHARED] = SharedPlatform(tmp_path_factory)
    try:
        yield shared
    finally:
        shared.stop()


@pytest.fixture
def dev_platform(shared_platform: SharedPlatform) -> dict:
    return shared_platform.get()


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    shared = item.config.stash.get(_SHARED, None)
    if shared is not None and nextitem is not None and "dev_platform" not in getattr(nextitem, "fixturenames", ()):
        shared.stop()


def _start_platform(tmp_path_factory: pytest.TempPathFactory) -> dict:
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
    platform = {"env": env, "home": home}
    try:
        assert up.returncode == 0, f"dev up failed:\n{up.stdout}\n{up.stderr}"
        status = json.loads(run_cli(env, "dev", "status", "--json").stdout)
    except BaseException:
        _stop_platform(platform)
        raise
    return platform | {"status": status, "url": status["dagster"]["url"]}


def _stop_platform(platform: dict) -> None:
    env, home = platform["env"], platform["home"]
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

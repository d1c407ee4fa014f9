"""One process per service identity: a second bridge (same client id) or consumer (same instance)
refuses to start, naming the first one's pid; the lock goes with its holder."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from iot_platform.observability.identity import service_identity
from iot_platform.observability.instance_lock import lock_path
from iot_platform.settings import Settings
from iot_platform.stack.ports import free_port
from iot_platform_tests.helpers import run_cli, wait_for

pytestmark = pytest.mark.integration


def _start(service: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "iot_platform.cli", service], env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT)


@pytest.mark.parametrize(("service", "setting"), [("bridge", "IOT_MQTT_CLIENT_ID"), ("consumer", "IOT_KAFKA_CONSUMER_GROUP-IOT_REPLICA_INDEX")])
def test_a_second_instance_of_an_identity_refuses_to_start_and_names_the_first(tmp_path: Path, service: str, setting: str) -> None:
    """The first instance runs (its servers are unreachable, so it keeps retrying); the second exits 1
    within seconds naming the first's pid and the setting, and leaves the first alone. Once the first
    is SIGKILLed, the kernel has released the lock: a third starts."""
    settings = Settings(home=tmp_path / "home", mqtt_url=f"mqtt://127.0.0.1:{free_port()}", kafka_bootstrap=f"127.0.0.1:{free_port()}",
                        mqtt_username="bridge", mqtt_password=SecretStr("unused: no broker listens"),
                        pg_port=free_port(), bridge_metrics_port=0, consumer_metrics_port=0)
    env = settings.child_env()
    lock = lock_path(settings.home, service, service_identity(service, settings))
    first = _start(service, env, tmp_path / "first.log")
    third = None
    try:
        wait_for(lambda: lock.exists() and lock.read_text().strip() == str(first.pid), 60, "the first instance's lock", interval_s=0.2)
        second = run_cli(env, service, timeout=60)
        assert second.returncode == 1, second.stdout + second.stderr
        output = second.stdout + second.stderr
        assert f"pid {first.pid}" in output and f"{setting}={service_identity(service, settings)}" in output, output
        assert first.poll() is None, "the first instance is untouched"
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        third = _start(service, env, tmp_path / "third.log")
        wait_for(lambda: lock.read_text().strip() == str(third.pid), 60, "the lock taken over after a SIGKILL", interval_s=0.2)
        assert third.poll() is None
    finally:
        for process in (first, third):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(10)

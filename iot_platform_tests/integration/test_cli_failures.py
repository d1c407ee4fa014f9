"""Every command turns an expected failure into one line and an exit code by kind, never a traceback.

Each row runs `iot-platform ...` as a subprocess and checks: the exit code (2: an invalid argument or
setting, 3: a server that did not answer, 1: anything else expected), stderr is exactly one line
``iot-platform <command>: ...`` holding the row's fragments (what failed, the setting or argument
to change, the endpoint tried), and nothing on stdout. The first table needs no server: every
endpoint is an unused port. The second points single settings of a real platform at the wrong place.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from iot_platform.settings import Settings
from iot_platform.stack.ports import free_port
from iot_platform.storage.migrate import apply_migrations
from iot_platform_tests.helpers import wait_for

PG, MQTT, KAFKA = free_port(), free_port(), free_port()
DOWN_PG = f"127.0.0.1:{PG}"


@dataclass(frozen=True)
class Row:
    argv: tuple[str, ...]
    code: int
    fragments: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return " ".join(self.argv) + "".join(f" {k}={v}" for k, v in self.env.items() if k != "PATH")


def row(argv: str, code: int, *fragments: str, **env: str) -> Row:
    return Row(tuple(argv.split()), code, fragments, env)


WITH_PASSWORD = {"IOT_MQTT_PASSWORD": "some-password"}
NO_SERVER_ROWS = [
    # invalid settings: exit 2 at start-up, the variable and its value named, no pydantic help URL
    row("dev up --no-demo", 2, "invalid setting IOT_KAFKA_PARTITIONS='0'", "greater than or equal to 1", IOT_KAFKA_PARTITIONS="0"),
    row("dev status", 2, "invalid setting IOT_KAFKA_PARTITIONS='0'", IOT_KAFKA_PARTITIONS="0"),
    row("dev down", 2, "invalid setting IOT_PG_PORT='abc'", IOT_PG_PORT="abc"),
    row("bridge", 2, "invalid setting IOT_MQTT_URL='http://x'", "mqtt:// or mqtts://", IOT_MQTT_URL="http://x"),
    row("consumer", 2, "invalid setting IOT_KAFKA_BOOTSTRAP='kafka'", "host:port", IOT_KAFKA_BOOTSTRAP="kafka"),
    row("migrate", 2, "invalid setting IOT_PG_PORT='70000'", IOT_PG_PORT="70000"),
    row("simulate --count 5", 2, "invalid setting IOT_MQTT_URL='mqtt://:1883'", IOT_MQTT_URL="mqtt://:1883"),
    row("verify", 2, "invalid setting IOT_CONSUMER_BATCH_SIZE='0'", IOT_CONSUMER_BATCH_SIZE="0"),
    row("tenants list", 2, "invalid setting IOT_MQTT_URL='tcp://x:1'", IOT_MQTT_URL="tcp://x:1"),
    row("devices list", 2, "invalid setting IOT_PG_PORT='0'", IOT_PG_PORT="0"),
    # invalid arguments: exit 2 before anything is reached, the argument and its bound named
    row("simulate --rate -5", 2, "argument --rate: must be at least 0 (0: as fast as possible), not -5"),
    row("simulate --count 0", 2, "argument --count: must be at least 1, not 0"),
    row("simulate --bad-fraction 2", 2, "argument --bad-fraction: must be between 0 and 1, not 2"),
    row("simulate --max-in-flight 70000", 2, "argument --max-in-flight: must be between 1 and 65534"),
    row("verify --since yesterday", 2, "argument --since", "ISO time", "'yesterday'"),
    row("verify --since 1h --until 2h", 2, "--since", "is not before --until"),
    row("verify --wait -1", 2, "argument --wait: must be at least 0"),
    row("verify --expect /nonexistent/summary.json", 2, "--expect /nonexistent/summary.json: No such file or directory"),
    row("migrate --partitions-ahead -1", 2, "argument --partitions-ahead: must be between 0 and 366"),
    row("tenants add bad!id", 2, "tenant id 'bad!id' is not valid", "IOT_ID_PATTERN"),
    row("devices add acme line1 d.1", 2, "device id 'd.1' is not valid", "IOT_ID_PATTERN"),
    row("devices rotate acme", 2, "the following arguments are required: project, device"),
    row("dev sideways", 2, "invalid choice: 'sideways'"),
    row("sideways", 2, "invalid choice: 'sideways'"),
    # missing settings: exit 2, the variable named
    row("tenants password --analyst", 2, "IOT_TENANT_PASSWORD_KEY is not set"),
    row("bridge", 2, "IOT_MQTT_USERNAME / IOT_MQTT_PASSWORD are not set"),
    # the database unreachable: exit 3, endpoint and settings named
    *(row(argv, 3, f"cannot reach PostgreSQL at {DOWN_PG} (IOT_PG_HOST, IOT_PG_PORT)", "Connection refused")
      for argv in ("migrate", "verify", "verify --no-kafka", "tenants list", "tenants sync", "tenants add acme",
                   "devices list", "devices add acme line1 sensor-7", "simulate --count 5")),
    # a program missing, a port taken: exit 1 before anything is started
    row("dev up --no-demo", 1, "java is not installed", "openjdk", PATH="/nonexistent"),
]


def _isolated_env(home: Path, extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IOT_", "DAGSTER_"))}
    env.update(
        IOT_HOME=str(home), IOT_PG_PORT=str(PG), IOT_PG_CONNECT_TIMEOUT_S="2", IOT_MQTT_URL=f"mqtts://127.0.0.1:{MQTT}",
        IOT_MQTT_PLAIN_PORT="0", IOT_KAFKA_BOOTSTRAP=f"127.0.0.1:{KAFKA}", IOT_KAFKA_CONTROLLER_PORT=str(free_port()),
        IOT_DAGSTER_PORT=str(free_port()), IOT_BRIDGE_METRICS_PORT="0", IOT_CONSUMER_METRICS_PORT="0",
    )
    env.update(extra)
    return env


def run(argv: tuple[str, ...], env: Mapping[str, str], timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "iot_platform.cli", *argv], env=dict(env), capture_output=True, text=True,
                          timeout=timeout_s)


ACTIONS = {"dev": {"up", "status", "down"}, "tenants": {"add", "disable", "list", "sync", "password"},
           "devices": {"add", "rotate", "disable", "list"}}


def prefix(argv: tuple[str, ...]) -> str:
    """``iot-platform <command> [<action>]`` as the line starts (just ``iot-platform`` for an unknown command)."""
    words = [w for w in argv if not w.startswith("-")]
    if words[0] not in {"bridge", "consumer", "migrate", "simulate", "verify", *ACTIONS}:
        return "iot-platform"
    action = words[1:2] if len(words) > 1 and words[1] in ACTIONS.get(words[0], ()) else []
    return " ".join(["iot-platform", words[0], *action])


def problem(case: Row, done: subprocess.CompletedProcess[str]) -> str | None:
    """Why ``done`` is not the one-line failure ``case`` expects, or None."""
    lines = done.stderr.strip().splitlines()
    if done.returncode != case.code:
        return f"exit {done.returncode}, expected {case.code}"
    if len(lines) != 1 or "Traceback" in done.stderr:
        return f"{len(lines)} lines on stderr"
    if not lines[0].startswith(prefix(case.argv) + ": ") or any(f not in lines[0] for f in case.fragments):
        return "line lacks the prefix or a fragment"
    if done.stdout.strip():
        return "output on stdout"
    return None


def check_rows(rows: list[Row], env_for: Callable[[Row], Mapping[str, str]]) -> list[tuple[str, str, str]]:
    """Run every row (four at a time); each failure as (row, why, stderr)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda case: (case, run(case.argv, env_for(case))), rows))
    return [(case.name, why, done.stderr[-600:]) for case, done in results if (why := problem(case, done)) is not None]


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_every_command_fails_in_one_line_without_any_server(tmp_path: Path, taken_port: int) -> None:
    rows = [
        *NO_SERVER_ROWS,
        row("dev up --no-demo", 1, f"port 127.0.0.1:{taken_port} is already in use", "IOT_MQTT_URL",
            IOT_MQTT_URL=f"mqtts://127.0.0.1:{taken_port}"),
        row("bridge", 2, f"cannot serve /metrics on port {taken_port}", "IOT_BRIDGE_METRICS_PORT",
            IOT_BRIDGE_METRICS_PORT=str(taken_port), **WITH_PASSWORD),
        row("consumer", 2, f"cannot serve /metrics on port {taken_port}", "IOT_CONSUMER_METRICS_PORT",
            IOT_CONSUMER_METRICS_PORT=str(taken_port)),
    ]
    homes = {id(case): tmp_path / f"home{i}" for i, case in enumerate(rows)}
    assert check_rows(rows, lambda case: _isolated_env(homes[id(case)], case.env)) == []


def test_debug_adds_the_traceback_and_keeps_the_line_and_the_code(tmp_path: Path) -> None:
    done = run(("--debug", "migrate"), _isolated_env(tmp_path / "home", {}))
    assert done.returncode == 3
    assert "Traceback (most recent call last)" in done.stderr and "psycopg2.OperationalError" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"iot-platform migrate: cannot reach PostgreSQL at {DOWN_PG}")


def test_failures_against_the_real_servers(settings: Settings) -> None:
    """One setting of a working platform points at the wrong place: the line names it, the code says its kind."""
    apply_migrations(settings)
    down = free_port()
    rows = [
        row("verify", 3, f"cannot reach Kafka at 127.0.0.1:{down} (IOT_KAFKA_BOOTSTRAP)", IOT_KAFKA_BOOTSTRAP=f"127.0.0.1:{down}"),
        row("tenants add acme", 3, f"cannot reach the MQTT broker at mqtts://127.0.0.1:{down} (IOT_MQTT_URL)",
            IOT_MQTT_URL=f"mqtts://127.0.0.1:{down}"),
        row("simulate --count 5", 3, f"cannot reach the MQTT broker at mqtts://127.0.0.1:{down} (IOT_MQTT_URL)",
            IOT_MQTT_URL=f"mqtts://127.0.0.1:{down}"),
        row("tenants add acme", 2, "refused the admin client", "(IOT_MQTT_ADMIN_USERNAME, IOT_MQTT_ADMIN_PASSWORD)",
            IOT_MQTT_ADMIN_PASSWORD="not-the-password"),
        row("verify --no-kafka", 2, f"PostgreSQL at {settings.pg_host}:{settings.pg_port} refused user 'iot'",
            "(IOT_PG_USER, IOT_PG_PASSWORD)", IOT_PG_PASSWORD="not-the-password"),
        row("devices list", 2, "has no database 'nowhere'", "(IOT_PG_DATABASE", IOT_PG_DATABASE="nowhere"),
        row("verify --no-kafka", 1, "lacks the platform's schema", "run `iot-platform migrate`", IOT_PG_DATABASE="postgres"),
    ]
    assert check_rows(rows, lambda case: {**settings.child_env(), **case.env}) == []


@pytest.mark.parametrize("service", ["bridge", "consumer"])
def test_services_keep_retrying_what_may_come_back(tmp_path: Path, service: str) -> None:
    """The broker, Kafka and the database all unreachable is an outage, not a misconfiguration: the service
    keeps retrying (it logs its retries and stays up) until it is stopped, then exits 0."""
    env = _isolated_env(tmp_path / "home", WITH_PASSWORD)
    process = subprocess.Popen([sys.executable, "-m", "iot_platform.cli", service], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    retries: list[str] = []
    try:
        assert process.stderr is not None
        retried = "mqtt reconnecting" if service == "bridge" else "Connection refused"

        def retried_twice() -> bool:
            line = process.stderr.readline()  # type: ignore[union-attr]
            if retried in line:
                retries.append(line)
            return len(retries) >= 2 or process.poll() is not None

        wait_for(retried_twice, 60, f"{service} retrying twice", interval_s=0)
        assert process.poll() is None, "the service gave up on an outage"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert all(json.loads(line)["level"] in ("warning", "error") for line in retries)

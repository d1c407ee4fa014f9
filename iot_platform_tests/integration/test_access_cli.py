"""`iot-platform tenants|devices ...` as a user runs them: output, and bad input that changes nothing."""

from __future__ import annotations

import json

import pytest

from iot_platform.access.dynsec import DynsecClient
from iot_platform.access.repair import create_client
from iot_platform.access.state import ClientSpec
from iot_platform.cli import main
from iot_platform.settings import Settings
from iot_platform.stack.ports import free_port
from iot_platform.storage.db import connect
from iot_platform.storage.migrate import apply_migrations

pytestmark = pytest.mark.integration


def _run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], settings: Settings, *argv: str) -> tuple[int, str, str]:
    with monkeypatch.context() as env:
        for name, value in settings.as_env().items():
            env.setenv(name, value)
        code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _registry_rows(settings: Settings) -> list[tuple[str, ...]]:
    conn = connect(settings)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT tenant_id, project_id, device_id, status FROM iot.devices ORDER BY 1, 2, 3")
            return [tuple(r) for r in cur.fetchall()]
    finally:
        conn.close()


def _broker_clients(settings: Settings, prefix: str) -> list[str]:
    with DynsecClient(settings) as admin:
        return sorted(u for u in admin.read_state().clients if u.startswith(prefix))


def test_commands_print_credentials_once_and_list_the_registry(settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    apply_migrations(settings)
    t = f"c{settings.mqtt_client_id[-10:]}"
    assert _run(monkeypatch, capsys, settings, "tenants", "add", t, "--name", "Acme")[0] == 0
    code, out, _ = _run(monkeypatch, capsys, settings, "devices", "add", t, "line1", "sensor-7", "--json")
    issued = json.loads(out)
    assert code == 0 and set(issued) == {"tenant", "project", "device", "username", "password", "client_id", "mqtt_url", "ca_file"}
    assert issued["username"] == f"{t}.line1.sensor-7" and len(issued["password"]) >= 24
    assert issued["mqtt_url"] == settings.mqtt_url and issued["ca_file"] == str(settings.mqtt_ca_file)
    code, out, _ = _run(monkeypatch, capsys, settings, "devices", "list", "--tenant", t, "--json")
    listed = json.loads(out)
    assert code == 0 and [(d["device"], d["status"]) for d in listed] == [("sensor-7", "enabled")]
    assert issued["password"] not in out  # shown once, never again
    code, out, _ = _run(monkeypatch, capsys, settings, "tenants", "list", "--json")
    assert code == 0 and {"tenant": t, "name": "Acme", "status": "enabled"} in json.loads(out)


BAD_INPUT = [
    # (argv with {t} for the test's tenant, exit code: 2 an id the settings refuse, 1 a refused change; fragment of the one-line error)
    (("tenants", "add", "bad id"), 2, "IOT_ID_PATTERN"),
    (("tenants", "add", "{t}"), 1, "exists already"),
    (("tenants", "disable", "nobody"), 1, "unknown tenant"),
    (("devices", "add", "nobody", "p1", "d9"), 1, "unknown tenant"),
    (("devices", "add", "{t}", "p/1", "d9"), 2, "project id 'p/1' is not valid"),
    (("devices", "add", "{t}", "p1", "d.9"), 2, "IOT_ID_PATTERN"),
    (("devices", "add", "{t}", "p1", "d1"), 1, "exists already: use `iot-platform devices rotate"),
    (("devices", "rotate", "{t}", "p1", "nope"), 1, "unknown device"),
    (("devices", "disable", "{t}", "p1", "nope"), 1, "unknown device"),
]


def test_bad_input_is_one_line_non_zero_and_changes_nothing(settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Each bad input: exit 1 or 2, one line on stderr naming the problem, registry and broker unchanged;
    also with the broker or the database unreachable (exit 3), and when the broker refuses half-way."""
    apply_migrations(settings)
    t = f"b{settings.mqtt_client_id[-10:]}"
    assert _run(monkeypatch, capsys, settings, "tenants", "add", t)[0] == 0
    assert _run(monkeypatch, capsys, settings, "devices", "add", t, "p1", "d1")[0] == 0
    before = (_registry_rows(settings), _broker_clients(settings, t))
    failures = []
    for argv, expected, fragment in BAD_INPUT:
        code, out, err = _run(monkeypatch, capsys, settings, *(a.format(t=t) for a in argv))
        if code != expected or fragment not in err or len(err.strip().splitlines()) != 1 or out:
            failures.append((argv, code, out, err))
    no_broker = settings.model_copy(update={"mqtt_url": f"mqtts://127.0.0.1:{free_port()}"})
    code, _, err = _run(monkeypatch, capsys, no_broker, "devices", "add", t, "p1", "d2")
    if code != 3 or "cannot reach the MQTT broker" not in err or "IOT_MQTT_URL" not in err:
        failures.append(("broker unreachable", code, err))
    no_database = settings.model_copy(update={"pg_port": free_port(), "pg_connect_timeout_s": 2})
    code, _, err = _run(monkeypatch, capsys, no_database, "devices", "add", t, "p1", "d3")
    if code != 3 or "cannot reach PostgreSQL" not in err or "IOT_PG_PORT" not in err:
        failures.append(("database unreachable", code, err))
    assert failures == []
    assert (_registry_rows(settings), _broker_clients(settings, t)) == before

    # The broker refuses half-way (a client of that name exists there, not in the registry): the
    # registry row is rolled back.
    with DynsecClient(settings) as admin:
        admin.execute(create_client(ClientSpec(f"{t}.p1.d4"), "x"))
    code, _, err = _run(monkeypatch, capsys, settings, "devices", "add", t, "p1", "d4")
    assert code == 1 and "Client already exists" in err
    assert _registry_rows(settings) == before[0]

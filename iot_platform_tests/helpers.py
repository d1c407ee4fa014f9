"""Small helpers shared by the tests."""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from typing import TypeVar

import psycopg2
from psycopg2 import sql as pgsql
from pydantic import SecretStr

from iot_platform.access.connection import MqttCredentials
from iot_platform.access.dynsec import DynsecClient
from iot_platform.access.repair import acl_json, create_client
from iot_platform.access.state import ClientSpec, bridge_client
from iot_platform.settings import Settings

T = TypeVar("T")


def mqtt_topic(settings: Settings, tenant: str, project: str, *rest: str) -> str:
    """A topic that matches this test's grammar (which lives under a per-test first level)."""
    prefix = settings.mqtt_topic_grammar.split("{tenant_id}")[0]
    return "/".join([prefix.rstrip("/"), tenant, project, *rest])


_PUBLISHERS: dict[str, MqttCredentials] = {}


def provision_mqtt_access(settings: Settings) -> Settings:
    """Broker clients of one test's topic namespace; returns ``settings`` with the bridge's credentials.

    The bridge gets the platform's bridge role for this test's filter (subscribe, plain or shared;
    publish nothing). The test publisher (:func:`publisher_credentials`) may publish anywhere under the
    filter, bad topics included, so the bridge's dead-letter paths stay testable with ACLs on.
    Needs ``settings.mqtt_client_id`` unique per test (the fixtures tag it).
    """
    tag = settings.mqtt_client_id
    bridge = bridge_client(f"bridge-{tag}", settings.mqtt_topic_filter)
    bridge_password, publisher_password = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    publisher_role = f"publisher-{tag}"
    with DynsecClient(settings) as admin:
        admin.execute(
            [
                {"command": "createRole", "rolename": bridge.role,
                 "acls": [acl_json(a) for a in bridge.acls]},
                {"command": "createRole", "rolename": publisher_role,
                 "acls": [{"acltype": "publishClientSend", "topic": settings.mqtt_topic_filter, "allow": True}]},
                *create_client(ClientSpec(bridge.username, roles=(bridge.role,)), bridge_password),
                *create_client(ClientSpec(f"publisher-{tag}", roles=(publisher_role,)), publisher_password),
            ]
        )
    _PUBLISHERS[bridge.username] = MqttCredentials(f"publisher-{tag}", SecretStr(publisher_password))
    return settings.model_copy(update={"mqtt_username": bridge.username, "mqtt_password": SecretStr(bridge_password)})


def publisher_credentials(settings: Settings) -> MqttCredentials:
    """The publisher :func:`provision_mqtt_access` made for these settings."""
    assert settings.mqtt_username is not None, "settings without provision_mqtt_access"
    return _PUBLISHERS[settings.mqtt_username]


def publisher_for(settings: Settings) -> "Callable[[str, str], MqttCredentials]":
    """``credentials_for`` of :func:`iot_platform.devices.simulate.simulate`: the test publisher for every project."""
    credentials = publisher_credentials(settings)
    return lambda _tenant, _project: credentials


def service_env(settings: Settings) -> dict[str, str]:
    """Environment for running `iot-platform bridge|consumer` as a subprocess with these settings."""
    return settings.child_env()


def wait_for(predicate: Callable[[], T], timeout_s: float, what: str, interval_s: float = 1.0) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"{what} did not happen within {timeout_s:.0f} s")


def run_cli(env: dict[str, str], *args: str, timeout: float = 420) -> subprocess.CompletedProcess[str]:
    """Run `iot-platform ARGS` as a subprocess with exactly this environment."""
    return subprocess.run(
        [sys.executable, "-m", "iot_platform.cli", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def drop_roles(admin_dsn: str, database: str, roles: list[str]) -> None:
    """Drop cluster-wide roles a test created (and what they own in ``database``)."""
    conn = psycopg2.connect(admin_dsn.replace("/postgres?", f"/{database}?"))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for role in sorted(set(roles)):
                cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
                if cur.fetchone():
                    cur.execute(pgsql.SQL("DROP OWNED BY {0}; DROP ROLE {0}").format(pgsql.Identifier(role)))
    finally:
        conn.close()

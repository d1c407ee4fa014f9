"""Small helpers shared by the tests."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TypeVar

import psycopg2
from psycopg2 import sql as pgsql
from pydantic import SecretStr

from iot_platform.settings import Settings
from iot_platform.stack.sandbox import provision_mqtt_access, publisher_credentials, publisher_for  # noqa: F401 - re-exported

T = TypeVar("T")


def mqtt_topic(settings: Settings, tenant: str, project: str, *rest: str) -> str:
    """A topic that matches this test's grammar (which lives under a per-test first level)."""
    prefix = settings.mqtt_topic_grammar.split("{tenant_id}")[0]
    return "/".join([prefix.rstrip("/"), tenant, project, *rest])


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


@contextlib.contextmanager
def private_roles(settings: Settings, admin_dsn: str, password_key: str) -> Iterator[Settings]:
    """Settings whose tenant, analyst and ingest login roles (cluster-wide) belong to this test alone, with a
    password key; every such role is dropped afterwards."""
    tag = uuid.uuid4().hex[:8]
    own = settings.model_copy(update={"tenant_role_prefix": f"t{tag}_", "tenant_password_key": SecretStr(password_key),
                                      "analyst_role": f"analyst_{tag}", "ingest_role": f"ingest_{tag}"})
    try:
        yield own
    finally:
        conn = psycopg2.connect(admin_dsn)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s)", (own.tenant_role_prefix,))
                tenants = [row[0] for row in cur.fetchall()]
        finally:
            conn.close()
        drop_roles(admin_dsn, settings.pg_database, tenants + [own.analyst_role, own.ingest_role])

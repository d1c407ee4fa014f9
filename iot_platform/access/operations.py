"""Registry and broker changes made together: tenants add/disable, devices add/rotate/disable.

Guarantee: a failure changes nothing half-way. Each operation checks its input, connects to
PostgreSQL and to the broker before writing anything, then writes the registry row in an open
transaction, makes the broker change, and commits; a broker failure rolls the transaction back, and
a failed commit undoes the broker change where it can (a rotated password cannot be restored: the
error then says to rotate again). Passwords are generated here, returned once, never logged or stored
(the broker keeps a PBKDF2 hash).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg2
import psycopg2.extensions

from iot_platform.access import registry
from iot_platform.access.dynsec import DynsecClient
from iot_platform.access.names import project_role, tenant_role, validate_id
from iot_platform.access.repair import acl_json, create_client
from iot_platform.access.state import DISABLED, ENABLED, DeviceRecord, TenantRecord, device_client, project_acls, tenant_acls
from iot_platform.errors import PlatformError
from iot_platform.settings import Settings
from iot_platform.storage.db import connect

_EXISTS = frozenset({"Role already exists", "Group already exists"})


class AccessError(PlatformError):
    """A refused change (unknown or existing tenant or device); the message says what to do."""


def new_password() -> str:
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class IssuedCredentials:
    tenant: str
    project: str
    device: str
    username: str
    password: str
    client_id: str
    mqtt_url: str
    ca_file: str | None

    def as_json(self) -> dict[str, Any]:
        return dict(vars(self))


@contextlib.contextmanager
def session(settings: Settings) -> Iterator[tuple[psycopg2.extensions.cursor, DynsecClient]]:
    """A registry transaction and an admin broker connection; both checked before any write."""
    conn = connect(settings)  # unreachable: psycopg2's error, which the command line reports in one line
    try:
        with DynsecClient(settings) as broker:
            with conn.cursor() as cur:
                try:
                    yield cur, broker
                except BaseException:
                    conn.rollback()
                    raise
    finally:
        conn.close()


def _tenant_or_fail(cur: psycopg2.extensions.cursor, tenant_id: str) -> TenantRecord:
    tenant = registry.get_tenant(cur, tenant_id, lock=True)
    if tenant is None:
        raise AccessError(f"unknown tenant {tenant_id!r}: add it first with `iot-platform tenants add {tenant_id}`")
    return tenant


def _ensure_tenant_access(broker: DynsecClient, settings: Settings, tenant_id: str) -> None:
    name = tenant_role(tenant_id)
    broker.execute(
        [
            {"command": "createRole", "rolename": name, "acls": [acl_json(a) for a in tenant_acls(settings.mqtt_topic_grammar, tenant_id)]},
            {"command": "createGroup", "groupname": name, "roles": [{"rolename": name}]},
        ],
        tolerate=_EXISTS,
    )


def add_tenant(settings: Settings, tenant_id: str, display_name: str = "") -> TenantRecord:
    validate_id("tenant", tenant_id, settings.id_pattern)
    tenant = TenantRecord(tenant_id, display_name or tenant_id, ENABLED)
    with session(settings) as (cur, broker):
        if not registry.insert_tenant(cur, tenant):
            raise AccessError(f"tenant {tenant_id!r} exists already")
        _ensure_tenant_access(broker, settings, tenant_id)
        cur.connection.commit()
    return tenant


def disable_tenant(settings: Settings, tenant_id: str) -> list[str]:
    """Disable the tenant and every one of its devices' clients (the broker drops their connections)."""
    validate_id("tenant", tenant_id, settings.id_pattern)
    with session(settings) as (cur, broker):
        _tenant_or_fail(cur, tenant_id)
        registry.set_tenant_status(cur, tenant_id, DISABLED)
        usernames = [d.username for d in registry.list_devices(cur, tenant_id)]
        broker.execute([{"command": "disableClient", "username": u} for u in usernames], tolerate=frozenset({"Client not found"}))
        cur.connection.commit()
    return usernames


def _device(settings: Settings, tenant_id: str, project_id: str, device_id: str) -> DeviceRecord:
    validate_id("tenant", tenant_id, settings.id_pattern)
    validate_id("project", project_id, settings.id_pattern)
    validate_id("device", device_id, settings.id_pattern)
    return DeviceRecord(tenant_id, project_id, device_id, ENABLED)


def _issued(settings: Settings, device: DeviceRecord, password: str) -> IssuedCredentials:
    return IssuedCredentials(
        tenant=device.tenant_id, project=device.project_id, device=device.device_id, username=device.username,
        password=password, client_id=device.username, mqtt_url=settings.mqtt_url,
        ca_file=str(settings.mqtt_ca_file) if settings.mqtt_ca_file else None,
    )


def add_device(settings: Settings, tenant_id: str, project_id: str, device_id: str) -> IssuedCredentials:
    device = _device(settings, tenant_id, project_id, device_id)
    password = new_password()
    with session(settings) as (cur, broker):
        tenant = _tenant_or_fail(cur, tenant_id)
        if tenant.status != ENABLED:
            raise AccessError(f"tenant {tenant_id!r} is disabled: no device can be added to it")
        if not registry.insert_device(cur, device):
            raise AccessError(
                f"device {device.username} exists already: use `iot-platform devices rotate {tenant_id} {project_id} {device_id}` for a new password"
            )
        _ensure_tenant_access(broker, settings, tenant_id)
        broker.execute(
            [{"command": "createRole", "rolename": project_role(tenant_id, project_id),
              "acls": [acl_json(a) for a in project_acls(settings.mqtt_topic_grammar, tenant_id, project_id)]}],
            tolerate=_EXISTS,
        )
        broker.execute(create_client(device_client(device, tenant_enabled=True), password))
        try:
            cur.connection.commit()
        except psycopg2.Error:
            broker.request([{"command": "deleteClient", "username": device.username}])
            raise
    return _issued(settings, device, password)


def rotate_device(settings: Settings, tenant_id: str, project_id: str, device_id: str) -> IssuedCredentials:
    """A new password; the old one stops working and connections made with it are dropped."""
    wanted = _device(settings, tenant_id, project_id, device_id)
    password = new_password()
    with session(settings) as (cur, broker):
        tenant = _tenant_or_fail(cur, tenant_id)
        device = registry.get_device(cur, tenant_id, project_id, device_id, lock=True)
        if device is None:
            raise AccessError(f"unknown device {wanted.username}: add it with `iot-platform devices add {tenant_id} {project_id} {device_id}`")
        status = DISABLED if device.status == DISABLED else ENABLED
        registry.set_device_status(cur, device, status, rotated=True)
        spec = device_client(DeviceRecord(tenant_id, project_id, device_id, status), tenant.status == ENABLED)
        if not broker.request([{"command": "setClientPassword", "username": device.username, "password": password}])[0].get("error"):
            broker.execute([{"command": "disableClient" if spec.disabled else "enableClient", "username": device.username}])
        else:  # the broker lost the client (see broker_access): re-create it with the new password
            _ensure_tenant_access(broker, settings, tenant_id)
            broker.execute(
                [{"command": "createRole", "rolename": project_role(tenant_id, project_id),
                  "acls": [acl_json(a) for a in project_acls(settings.mqtt_topic_grammar, tenant_id, project_id)]}],
                tolerate=_EXISTS,
            )
            broker.execute(create_client(spec, password))
        try:
            cur.connection.commit()
        except psycopg2.Error as exc:
            raise AccessError(f"the broker has the new password but the registry did not record the rotation ({exc}); rotate again") from exc
    return _issued(settings, device, password)


def disable_device(settings: Settings, tenant_id: str, project_id: str, device_id: str) -> DeviceRecord:
    wanted = _device(settings, tenant_id, project_id, device_id)
    with session(settings) as (cur, broker):
        _tenant_or_fail(cur, tenant_id)
        device = registry.get_device(cur, tenant_id, project_id, device_id, lock=True)
        if device is None:
            raise AccessError(f"unknown device {wanted.username}")
        registry.set_device_status(cur, device, DISABLED)
        broker.execute([{"command": "disableClient", "username": device.username}], tolerate=frozenset({"Client not found"}))
        cur.connection.commit()
    return DeviceRecord(tenant_id, project_id, device_id, DISABLED)


def list_registry(settings: Settings, tenant_id: str | None = None) -> tuple[list[TenantRecord], list[dict[str, object]]]:
    """Tenants and devices as the registry has them (no broker needed)."""
    conn = connect(settings)
    try:
        with conn.cursor() as cur:
            return registry.list_tenants(cur), registry.device_rows(cur, tenant_id)
    finally:
        conn.close()

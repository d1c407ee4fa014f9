"""Registered gateway devices for the simulator and the demo fleet: one per (tenant, project).

A simulated fleet models thousands of devices; one broker connection each would measure the
machine, not the platform. A gateway device publishes for its project's devices, and its ACL is the
project's prefix anyway (the same a single device gets). Re-running registers nothing twice: an
existing tenant is reused and an existing gateway gets a new password (passwords are never stored,
so reuse means rotation).
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import SecretStr

from iot_platform.access import operations
from iot_platform.access.connection import MqttCredentials
from iot_platform.settings import Settings

GATEWAY_DEVICE = "sim-gateway"


def gateway_credentials(settings: Settings, projects: Iterable[tuple[str, str]]) -> dict[tuple[str, str], MqttCredentials]:
    """Credentials of each project's gateway, registering tenants and gateways that are missing."""
    credentials: dict[tuple[str, str], MqttCredentials] = {}
    tenants_seen: set[str] = set()
    for tenant_id, project_id in projects:
        if tenant_id not in tenants_seen:
            tenants_seen.add(tenant_id)
            try:
                operations.add_tenant(settings, tenant_id)
            except operations.AccessError as exc:
                if "exists already" not in str(exc):
                    raise
        try:
            issued = operations.add_device(settings, tenant_id, project_id, GATEWAY_DEVICE)
        except operations.AccessError as exc:
            if "exists already" not in str(exc):
                raise
            issued = operations.rotate_device(settings, tenant_id, project_id, GATEWAY_DEVICE)
        credentials[(tenant_id, project_id)] = MqttCredentials(issued.username, SecretStr(issued.password), issued.client_id)
    return credentials

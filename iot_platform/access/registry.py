"""The registry tables (``iot.tenants``, ``iot.devices``) in PostgreSQL.

Reads and writes take a cursor: the caller owns the transaction, so a broker change and the registry
row it belongs to commit or roll back together (see :mod:`iot_platform.access.operations`).
"""

from __future__ import annotations

import psycopg2.extensions

from iot_platform.access.state import DeviceRecord, TenantRecord

Cursor = psycopg2.extensions.cursor


def list_tenants(cur: Cursor) -> list[TenantRecord]:
    cur.execute("SELECT tenant_id, display_name, status FROM iot.tenants ORDER BY tenant_id")
    return [TenantRecord(*row) for row in cur.fetchall()]


def get_tenant(cur: Cursor, tenant_id: str, *, lock: bool = False) -> TenantRecord | None:
    cur.execute(
        "SELECT tenant_id, display_name, status FROM iot.tenants WHERE tenant_id = %s" + (" FOR UPDATE" if lock else ""),
        (tenant_id,),
    )
    row = cur.fetchone()
    return TenantRecord(*row) if row else None


def insert_tenant(cur: Cursor, tenant: TenantRecord) -> bool:
    """False when the tenant exists already."""
    cur.execute(
        "INSERT INTO iot.tenants (tenant_id, display_name, status) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
        (tenant.tenant_id, tenant.display_name, tenant.status),
    )
    return cur.rowcount == 1


def set_tenant_status(cur: Cursor, tenant_id: str, status: str) -> None:
    cur.execute("UPDATE iot.tenants SET status = %s WHERE tenant_id = %s", (status, tenant_id))


def list_devices(cur: Cursor, tenant_id: str | None = None) -> list[DeviceRecord]:
    cur.execute(
        "SELECT tenant_id, project_id, device_id, status FROM iot.devices"
        " WHERE %(tenant)s::text IS NULL OR tenant_id = %(tenant)s ORDER BY 1, 2, 3",
        {"tenant": tenant_id},
    )
    return [DeviceRecord(*row) for row in cur.fetchall()]


def device_rows(cur: Cursor, tenant_id: str | None = None) -> list[dict[str, object]]:
    """Devices with their timestamps, for `devices list`."""
    cur.execute(
        "SELECT tenant_id, project_id, device_id, status, created_at, credentials_rotated_at FROM iot.devices"
        " WHERE %(tenant)s::text IS NULL OR tenant_id = %(tenant)s ORDER BY 1, 2, 3",
        {"tenant": tenant_id},
    )
    names = ("tenant", "project", "device", "status", "created_at", "credentials_rotated_at")
    return [dict(zip(names, row)) for row in cur.fetchall()]


def get_device(cur: Cursor, tenant_id: str, project_id: str, device_id: str, *, lock: bool = False) -> DeviceRecord | None:
    cur.execute(
        "SELECT tenant_id, project_id, device_id, status FROM iot.devices"
        " WHERE tenant_id = %s AND project_id = %s AND device_id = %s" + (" FOR UPDATE" if lock else ""),
        (tenant_id, project_id, device_id),
    )
    row = cur.fetchone()
    return DeviceRecord(*row) if row else None


def insert_device(cur: Cursor, device: DeviceRecord) -> bool:
    """False when the device exists already."""
    cur.execute(
        "INSERT INTO iot.devices (tenant_id, project_id, device_id, status) VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (device.tenant_id, device.project_id, device.device_id, device.status),
    )
    return cur.rowcount == 1


def set_device_status(cur: Cursor, device: DeviceRecord, status: str, *, rotated: bool = False) -> None:
    cur.execute(
        "UPDATE iot.devices SET status = %s"
        + (", credentials_rotated_at = now()" if rotated else "")
        + " WHERE tenant_id = %s AND project_id = %s AND device_id = %s",
        (status, device.tenant_id, device.project_id, device.device_id),
    )

"""`tenants sync`: one read-only login role per registered tenant, plus analyst and ingest logins.

Guarantee: idempotent. One transaction (serialised by an advisory lock) creates what is missing:
a LOGIN role per tenant (member of ``iot_tenant_reader`` only, mapped to its tenant in
``iot.tenant_roles``), the ``analyst_role`` login (member of ``iot_analyst``) and the
``ingest_role`` login (member of ``iot_ingest``); it sets their passwords derived from
``IOT_TENANT_PASSWORD_KEY`` (see :mod:`iot_platform.storage.tenant_identity`), and re-asserts that
no tenant privilege exists on any partition or unexpected relation of schema ``iot``. An existing
role is adopted only when it holds no dangerous attribute or membership; otherwise the sync fails
and changes nothing. Roles are never dropped: a tenant that stops sending keeps read access to its
history, and a tenant that exists only in old data (before the registry) keeps the role it had, but
no new role is made for a tenant that is not in ``iot.tenants``: the registry, not what devices
happened to publish, says who is a tenant. A disabled tenant keeps its role (disabling stops its
devices, not its access to its own history). Grafana organisations are not made here: the
``grafana_dashboards`` asset gives each tenant its organisation (:mod:`iot_platform.dashboards.provision`),
from :func:`registered_tenant_roles`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psycopg2.extensions
from psycopg2 import sql

from iot_platform.errors import PlatformError
from iot_platform.settings import Settings
from iot_platform.storage.db import connect
from iot_platform.storage.tenant_identity import derive_password, role_name_for

log = logging.getLogger(__name__)

SYNC_LOCK_KEY = 0x7E_4A_47_05  # arbitrary, constant: serialises concurrent syncs
TENANT_GROUP, ANALYST_GROUP, INGEST_GROUP = "iot_tenant_reader", "iot_analyst", "iot_ingest"
TENANT_READABLE = ("messages", "dead_letters", "rollup_hourly", "rollup_hourly_fields", "tenant_roles",
                   "rollup_hours", "rollup_hourly_live", "rollup_hourly_fields_live")  # 060: live rollups


class TenantSyncError(PlatformError):
    """The sync cannot proceed safely; the message names the fix."""


@dataclass(frozen=True)
class TenantSyncResult:
    tenants: tuple[str, ...]  # registered tenants, sorted
    roles: tuple[tuple[str, str], ...]  # (tenant id, role name) for every registered tenant
    roles_created: tuple[str, ...]  # login roles created by this run (tenant, analyst, ingest)
    passwords_set: bool  # False when IOT_TENANT_PASSWORD_KEY is unset
    privileges_revoked: tuple[str, ...]  # relations on which a stray tenant privilege was removed


def registered_tenants(cur: psycopg2.extensions.cursor) -> list[str]:
    """Every tenant of the registry (enabled or disabled)."""
    cur.execute("SELECT tenant_id FROM iot.tenants ORDER BY 1")
    return [row[0] for row in cur.fetchall()]


def _role_state(cur: psycopg2.extensions.cursor, role: str) -> tuple[bool, bool] | None:
    """None when ``role`` does not exist, else (dangerous, privileged-member)."""
    cur.execute(
        "SELECT rolsuper OR rolcreaterole OR rolcreatedb OR rolreplication OR rolbypassrls,"
        " pg_has_role(oid, %s, 'MEMBER') OR pg_has_role(oid, %s, 'MEMBER')"
        " FROM pg_roles WHERE rolname = %s",
        (ANALYST_GROUP, INGEST_GROUP, role),
    )
    row = cur.fetchone()
    return None if row is None else (bool(row[0]), bool(row[1]))


def _ensure_login(cur: psycopg2.extensions.cursor, role: str, group: str, password: str | None, *, tenant: bool) -> bool:
    """Create or adopt login ``role`` in ``group``; set its password. True when created."""
    state = _role_state(cur, role)
    if state is not None and tenant and (state[0] or state[1]):
        raise TenantSyncError(
            f"role {role!r} exists with superuser/createrole/createdb/replication/bypassrls or analyst/ingest "
            "membership: it cannot become a tenant role. Drop or rename it, or change IOT_TENANT_ROLE_PREFIX."
        )
    if state is None:
        statement = sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS").format(
            sql.Identifier(role))
    else:  # attributes were checked above; a non-superuser may not even restate NOSUPERUSER
        statement = sql.SQL("ALTER ROLE {} LOGIN").format(sql.Identifier(role))
    if password is not None:
        cur.execute(statement + sql.SQL(" PASSWORD %s"), (password,))
    else:
        cur.execute(statement)
    cur.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(role)))
    return state is None


def _map_tenant(cur: psycopg2.extensions.cursor, role: str, tenant_id: str) -> None:
    cur.execute("SELECT tenant_id FROM iot.tenant_roles WHERE role_name = %s AND tenant_id <> %s", (role, tenant_id))
    other = cur.fetchone()
    if other is not None:
        raise TenantSyncError(f"role {role!r} is already mapped to tenant {other[0]!r}; refusing to share it with {tenant_id!r}")
    cur.execute(
        "INSERT INTO iot.tenant_roles (role_name, tenant_id) VALUES (%s, %s) ON CONFLICT DO NOTHING", (role, tenant_id))


def _revoke_stray_privileges(cur: psycopg2.extensions.cursor) -> list[str]:
    """Remove tenant/PUBLIC privileges on relations of schema iot outside the readable set.

    Partitions of iot.messages are not covered by the parent's row-level security when queried
    directly; a privilege on one would expose every tenant's rows.
    """
    cur.execute(
        "SELECT format('%%I.%%I', 'iot', c.relname) FROM pg_class c"
        " WHERE c.relnamespace = 'iot'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f')"
        " AND NOT (c.relname = ANY(%s))"
        " AND (has_table_privilege(%s, c.oid, 'SELECT,INSERT,UPDATE,DELETE,TRUNCATE,REFERENCES,TRIGGER')"
        "  OR EXISTS (SELECT 1 FROM aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a WHERE a.grantee = 0))"
        " ORDER BY 1",
        (list(TENANT_READABLE), TENANT_GROUP),
    )
    stray = [row[0] for row in cur.fetchall()]
    for relation in stray:
        cur.execute(sql.SQL("REVOKE ALL ON {} FROM PUBLIC, {}").format(sql.SQL(relation), sql.Identifier(TENANT_GROUP)))
    return stray


def sync_database_roles(conn: psycopg2.extensions.connection, settings: Settings) -> TenantSyncResult:
    """The database part of the sync, in one transaction on ``conn`` (committed here)."""
    key = settings.tenant_password_key.get_secret_value() if settings.tenant_password_key is not None else None

    def password(role: str) -> str | None:
        return derive_password(key, role) if key is not None else None

    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('iot.tenant_roles') IS NOT NULL AND to_regclass('iot.tenants') IS NOT NULL")
        if not cur.fetchone()[0]:
            raise TenantSyncError("iot.tenant_roles or iot.tenants is missing: run `iot-platform migrate` first")
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (SYNC_LOCK_KEY,))
        created = []
        for role, group in ((settings.analyst_role, ANALYST_GROUP), (settings.ingest_role, INGEST_GROUP)):
            if _ensure_login(cur, role, group, password(role), tenant=False):
                created.append(role)
        tenants = registered_tenants(cur)
        roles = []
        for tenant_id in tenants:
            role = role_name_for(tenant_id, settings.tenant_role_prefix)
            if _ensure_login(cur, role, TENANT_GROUP, password(role), tenant=True):
                created.append(role)
            _map_tenant(cur, role, tenant_id)
            roles.append((tenant_id, role))
        revoked = _revoke_stray_privileges(cur)
    conn.commit()
    if key is None:
        log.warning("IOT_TENANT_PASSWORD_KEY is not set: login roles have no password and cannot log in over the network")
    return TenantSyncResult(tuple(tenants), tuple(roles), tuple(created), key is not None, tuple(revoked))


def sync_tenants(settings: Settings) -> TenantSyncResult:
    """Database roles for every registered tenant, the analyst and the ingest login (one transaction)."""
    conn = connect(settings)
    try:
        result = sync_database_roles(conn, settings)
    except BaseException:
        conn.rollback()
        raise
    finally:
        conn.close()
    log.info("tenant roles synced", extra={"tenants": len(result.tenants), "roles_created": list(result.roles_created)})
    return result


def registered_tenant_roles(settings: Settings) -> list[tuple[str, str]]:
    """(tenant id, login role name) of every registered tenant, as :func:`sync_tenants` names the roles."""
    conn = connect(settings)
    try:
        with conn, conn.cursor() as cur:
            return [(tenant_id, role_name_for(tenant_id, settings.tenant_role_prefix)) for tenant_id in registered_tenants(cur)]
    finally:
        conn.close()

"""`iot-platform tenants sync | password`: tenant login roles and their credentials.

Wired into `iot-platform tenants` by :mod:`iot_platform.access.tenants_cli`. ``sync`` creates a
read-only login role for every tenant of the registry (plus the analyst and ingest logins; their
Grafana organisations come from the ``grafana_dashboards`` asset); ``password`` prints the derived
password of one role so an operator can hand it to a tenant or set it in Grafana.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from iot_platform.errors import InvalidConfiguration
from iot_platform.settings import Settings
from iot_platform.storage.tenant_identity import derive_password, role_name_for


ACTIONS = ("sync", "password")


def add_actions(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    sync = sub.add_parser("sync", help="Create/update the tenant, analyst and ingest login roles (idempotent).")
    sync.add_argument("--json", action="store_true", help="Print the result as JSON.")
    password = sub.add_parser("password", help="Print the derived login role and password of a tenant (or analyst/ingest).")
    who = password.add_mutually_exclusive_group(required=True)
    who.add_argument("--tenant", help="Tenant id.")
    who.add_argument("--analyst", action="store_true", help="The analyst login role.")
    who.add_argument("--ingest", action="store_true", help="The ingest login role.")


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "password":
        return _password(args, settings)
    from iot_platform.storage.tenants import sync_tenants

    result = sync_tenants(settings)  # a TenantSyncError names the fix; the command line prints it
    if args.json:
        print(json.dumps(dataclasses.asdict(result), indent=2))
        return 0
    for tenant_id, role in result.roles:
        print(f"{tenant_id}\t{role}")
    print(f"{len(result.roles)} tenant roles; created: {', '.join(result.roles_created) or 'none'}", file=sys.stderr)
    if not result.passwords_set:
        print("IOT_TENANT_PASSWORD_KEY is not set: the roles have no password", file=sys.stderr)
    return 0


def _password(args: argparse.Namespace, settings: Settings) -> int:
    if settings.tenant_password_key is None:
        raise InvalidConfiguration("IOT_TENANT_PASSWORD_KEY is not set: no password to derive (the key `tenants sync` set the passwords with)")
    if args.tenant:
        role = role_name_for(args.tenant, settings.tenant_role_prefix)
    else:
        role = settings.analyst_role if args.analyst else settings.ingest_role
    print(f"{role}\t{derive_password(settings.tenant_password_key.get_secret_value(), role)}")
    return 0

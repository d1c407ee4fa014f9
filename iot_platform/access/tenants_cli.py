"""`iot-platform tenants add | disable | list | sync | password`.

``add`` registers a tenant (and creates its broker role and group); ``disable`` refuses all its
devices at once and drops their connections; ``list`` prints the registry. ``sync`` and ``password``
manage the tenants' read-only database roles (:mod:`iot_platform.storage.tenants_cli`).
"""

from __future__ import annotations

import argparse
import json

from iot_platform.settings import Settings
from iot_platform.storage import tenants_cli as roles_cli


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = sub.add_parser("add", help="Register a tenant.")
    add.add_argument("tenant", help="Tenant id (IOT_ID_PATTERN).")
    add.add_argument("--name", default="", help="Display name (default: the id).")
    disable = sub.add_parser("disable", help="Disable a tenant: all its devices are refused and disconnected.")
    disable.add_argument("tenant")
    listing = sub.add_parser("list", help="List the registered tenants.")
    for command in (add, disable, listing):
        command.add_argument("--json", action="store_true", help="Print the result as JSON.")
    roles_cli.add_actions(sub)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from iot_platform.access import operations

    if args.action in roles_cli.ACTIONS:
        return roles_cli.run(args, settings)
    if args.action == "add":
        tenant = operations.add_tenant(settings, args.tenant, args.name)
        result: object = {"tenant": tenant.tenant_id, "name": tenant.display_name, "status": tenant.status}
        text = f"tenant {tenant.tenant_id} added"
    elif args.action == "disable":
        devices = operations.disable_tenant(settings, args.tenant)
        result = {"tenant": args.tenant, "status": "disabled", "devices_disabled": devices}
        text = f"tenant {args.tenant} disabled ({len(devices)} device(s) refused)"
    else:
        tenants, _ = operations.list_registry(settings)
        result = [{"tenant": t.tenant_id, "name": t.display_name, "status": t.status} for t in tenants]
        text = "\n".join(f"{t.tenant_id}\t{t.status}\t{t.display_name}" for t in tenants)
    print(json.dumps(result, indent=2) if args.json else text)
    return 0

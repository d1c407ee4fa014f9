"""`iot-platform devices add | rotate | disable | list`.

``add`` and ``rotate`` print the device's credentials once (the password is not stored anywhere but
as the broker's hash); ``add`` for an existing device is an error that says to use ``rotate``.
"""

from __future__ import annotations

import argparse
import json

from iot_platform.settings import Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    helps = {
        "add": "Register a device; prints its credentials once.",
        "rotate": "Issue a new password; the old one stops working at once.",
        "disable": "Refuse the device and drop its connection.",
    }
    for action, text in helps.items():
        command = sub.add_parser(action, help=text)
        command.add_argument("tenant")
        command.add_argument("project")
        command.add_argument("device")
        command.add_argument("--json", action="store_true", help="Print the result as JSON.")
    listing = sub.add_parser("list", help="List registered devices.")
    listing.add_argument("--tenant", default=None, help="Only this tenant's devices.")
    listing.add_argument("--json", action="store_true", help="Print the result as JSON.")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from iot_platform.access import operations

    if args.action in ("add", "rotate"):
        issue = operations.add_device if args.action == "add" else operations.rotate_device
        issued = issue(settings, args.tenant, args.project, args.device)
        result: object = issued.as_json()
        text = "\n".join(f"{k}: {v}" for k, v in issued.as_json().items()) + "\n(the password is shown only now)"
    elif args.action == "disable":
        device = operations.disable_device(settings, args.tenant, args.project, args.device)
        result = {"tenant": device.tenant_id, "project": device.project_id, "device": device.device_id, "status": device.status}
        text = f"device {device.username} disabled"
    else:
        _, rows = operations.list_registry(settings, args.tenant)
        result = [{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()} for row in rows]
        text = "\n".join("\t".join(str(row[k]) for k in ("tenant", "project", "device", "status")) for row in rows)
    print(json.dumps(result, indent=2) if args.json else text)
    return 0

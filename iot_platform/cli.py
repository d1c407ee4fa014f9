"""`iot-platform` console script.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and
``run(args, settings) -> int``; this file only wires them, importing a module when its
command runs so that `iot-platform bridge` never imports Dagster.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from pydantic import ValidationError

from iot_platform.settings import Settings

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "dev": ("iot_platform.stack.dev_cli", "Local platform: dev up | status | down."),
    "bridge": ("iot_platform.bridge.cli", "Run one MQTT -> Kafka bridge replica in the foreground, or drain one (--drain)."),
    "consumer": ("iot_platform.consumer.cli", "Run the Kafka -> PostgreSQL consumer in the foreground."),
    "migrate": ("iot_platform.storage.migrate_cli", "Apply the database migrations."),
    "tenants": ("iot_platform.access.tenants_cli", "Tenants: tenants add | disable | list, and their database roles: tenants sync | password."),
    "devices": ("iot_platform.access.devices_cli", "Devices and their broker credentials: devices add | rotate | disable | list."),
    "simulate": ("iot_platform.devices.simulate_cli", "Publish realistic telemetry from a simulated fleet."),
    "verify": ("iot_platform.devices.verify_cli", "Report lost, duplicated and dead-lettered messages."),
}


def build_parser(argv: list[str]) -> tuple[argparse.ArgumentParser, object | None]:
    parser = argparse.ArgumentParser(prog="iot-platform", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = argv[0] if argv else None
    module = None
    for name, (module_name, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            module = importlib.import_module(module_name)
            module.add_arguments(command_parser)
    return parser, module


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, module = build_parser(argv)
    args = parser.parse_args(argv)
    if module is None:  # pragma: no cover - argparse already exited on unknown commands
        parser.error(f"unknown command {args.command!r}")
    try:
        settings = Settings()
    except ValidationError as exc:  # a bad IOT_* variable: one line each, no traceback
        for error in exc.errors():
            name = "IOT_" + "_".join(str(part) for part in error["loc"]).upper()
            print(f"invalid setting {name}: {error['msg']}", file=sys.stderr)
        return 2
    return int(module.run(args, settings) or 0)


if __name__ == "__main__":
    sys.exit(main())

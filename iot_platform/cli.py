"""`iot-platform` console script.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and
``run(args, settings) -> int``; this file only wires them, importing a module when its
command runs so that `iot-platform bridge` never imports Dagster.

Expected failures end the same way for every command (:mod:`iot_platform.errors`): one line on
stderr, ``iot-platform <command>: <what failed, the setting or argument to change, the endpoint
tried>``, and an exit code by kind: 2 for an invalid argument or setting (argparse's code too),
3 for a server that did not answer, 1 otherwise. ``--debug`` adds the traceback; a bug (any other
exception) always has it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from typing import NoReturn

from iot_platform.failures import expected_failure
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
INTERRUPTED = 130  # the shell's code for Ctrl-C


class OneLineParser(argparse.ArgumentParser):
    """argparse, with a bad argument reported in one line (no usage block), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def build_parser(argv: list[str]) -> tuple[argparse.ArgumentParser, object | None]:
    parser = OneLineParser(prog="iot-platform", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="Print the traceback of an expected failure too.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
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
    command = " ".join(str(part) for part in (args.command, getattr(args, "action", None)) if part)
    settings = None
    try:
        settings = Settings.load()
        return int(module.run(args, settings) or 0)
    except KeyboardInterrupt:
        return INTERRUPTED
    except Exception as exc:
        failure = expected_failure(exc, settings)
        if failure is None:
            raise  # a bug: its traceback is the report
        if args.debug:
            traceback.print_exc()
        line, *details = str(failure).strip().splitlines() or [type(failure).__name__]
        print(f"iot-platform {command}: {line}", file=sys.stderr)
        for detail in details:  # only a server that failed to start adds lines: the tail of its output
            print(f"  {detail}", file=sys.stderr)
        return failure.exit_code


if __name__ == "__main__":
    sys.exit(main())

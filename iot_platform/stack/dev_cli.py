"""`iot-platform dev up [--no-demo] | status [--json] | down`."""

from __future__ import annotations

import argparse
import json
import sys

from iot_platform.settings import Settings
from iot_platform.stack.platform import LocalPlatform


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    up = sub.add_parser("up", help="Start Mosquitto, Kafka, PostgreSQL, Dagster (and the services) in the background.")
    up.add_argument("--no-demo", action="store_true", help="Do not start the simulated device fleet.")
    status = sub.add_parser("status", help="Show endpoints and process ids.")
    status.add_argument("--json", action="store_true", help="Machine-readable output.")
    sub.add_parser("down", help="Stop every process `dev up` started.")


def _progress(line: str) -> None:
    print(f"  {line}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace, settings: Settings) -> int:
    platform = LocalPlatform(settings, progress=_progress)  # a StackError says what to do; the command line prints it
    if args.action == "up":
        platform.up(demo=settings.demo and not args.no_demo)
        _print_endpoints(platform.status(), settings)
    elif args.action == "status":
        status = platform.status()
        print(json.dumps(status, indent=2) if args.json else _describe(status))
    elif args.action == "down":
        stopped = platform.down()
        print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
    return 0


def _describe(status: dict) -> str:
    pids = ", ".join(f"{name}={pid or '-'}" for name, pid in status["pids"].items())
    replicas = ", ".join(f"{name}={','.join(str(pid or '-') for pid in found)}" for name, found in status["replicas"].items())
    return (
        f"MQTT      {status['mqtt'].get('url') or 'mqtt://%s:%s' % (status['mqtt']['host'], status['mqtt']['port'])}"
        f"{'  (CA: ' + status['mqtt']['ca_file'] + ')' if status['mqtt'].get('ca_file') else ''}\n"
        f"Kafka     {status['kafka']['bootstrap']}"
        f"{'  (%d brokers)' % status['kafka']['brokers'] if status['kafka'].get('brokers', 1) > 1 else ''}\n"
        f"Postgres  {status['postgres']['dsn']}\n"
        f"Dagster   {status['dagster']['url']}\n"
        f"pids      {pids}\n"
        f"replicas  {replicas}"
    )


def _print_endpoints(status: dict, settings: Settings) -> None:
    password = settings.pg_password.get_secret_value()
    pgpassword = "PGPASSWORD=iot" if password == "iot" else 'PGPASSWORD="$IOT_PG_PASSWORD"'
    print("\nThe platform is up.\n")
    print(_describe(status))
    print(f"\nDagster UI:  {settings.dagster_url}")
    print(f"SQL:         {pgpassword} psql \"{settings.pg_dsn(with_password=False)}\"")
    print("Devices:     iot-platform tenants add acme && iot-platform devices add acme line1 sensor-7")
    print("Stop with:   iot-platform dev down")

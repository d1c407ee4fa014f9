"""`iot-platform migrate`: apply the pending database migrations and create day partitions ahead."""

from __future__ import annotations

import argparse
import logging

from iot_platform.core.arguments import number
from iot_platform.observability.logging import configure_json_logging
from iot_platform.settings import Settings
from iot_platform.storage.migrate import apply_migrations


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--partitions-ahead", type=number(int, minimum=0, maximum=366), default=3, metavar="DAYS",
        help="Create day partitions of iot.messages this many days ahead (default 3).",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    configure_json_logging(logging.INFO)
    applied = apply_migrations(settings, partitions_ahead_days=args.partitions_ahead)
    print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else " (up to date)"))
    return 0

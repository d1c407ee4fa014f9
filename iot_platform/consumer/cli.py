"""`iot-platform consumer [--replica N]`: run consumer replica N (default: ``IOT_REPLICA_INDEX``) in the foreground (see service.py).

Refuses to start (exit 1, naming the holder's pid) while another consumer of the same instance (the
same consumer group and ``IOT_REPLICA_INDEX``) runs in this ``IOT_HOME``.
"""

from __future__ import annotations

import argparse
import logging

from iot_platform.consumer.metrics import ConsumerMetrics
from iot_platform.consumer.service import ConsumerService
from iot_platform.observability.identity import run_as_only_instance
from iot_platform.observability.lifecycle import ParentWatch, install_stop_signals
from iot_platform.observability.logging import configure_json_logging
from iot_platform.observability.pidfile import pidfile, replica_pidfile_name
from iot_platform.settings import Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="Log level (default INFO).")
    parser.add_argument("--replica", type=int, metavar="N", help="the replica to run (default: IOT_REPLICA_INDEX)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    configure_json_logging(getattr(logging, args.log_level))
    if args.replica is not None:
        if args.replica < 0:
            logging.getLogger("iot_platform.consumer").error(
                "invalid argument", extra={"error": f"--replica {args.replica}: a replica index is 0 or more"})
            return 2
        settings = settings.model_copy(update={"replica_index": args.replica})
    return run_as_only_instance("consumer", settings, lambda: _run(settings))


def _run(settings: Settings) -> int:
    metrics = ConsumerMetrics()
    metrics.serve(settings.consumer_metrics_port)
    service = ConsumerService(settings, metrics)
    install_stop_signals(service.stop)
    watch = ParentWatch(service.stop).start() if settings.exit_with_parent else None
    try:
        with pidfile(settings.home, replica_pidfile_name("consumer", settings.replica_index)):
            return service.run()
    finally:
        if watch is not None:
            watch.stop()

"""`iot-platform consumer [--replica N]`: run one consumer replica in the foreground (see service.py).

Replica N (default ``IOT_REPLICA_INDEX``) is the static group member
``{IOT_KAFKA_CONSUMER_GROUP}-{N}`` of ``IOT_CONSUMER_REPLICAS`` (docs/design.md §10); its pid file is
``run/consumer.pid`` for replica 0 and ``run/consumer-{N}.pid`` otherwise. Exit 2, one line, when N is
not below ``IOT_CONSUMER_REPLICAS``. Refuses to start (exit 1, naming the holder's pid) while another
consumer of the same replica identity runs in this ``IOT_HOME``.
"""

from __future__ import annotations

import argparse
import logging

from iot_platform.consumer.metrics import ConsumerMetrics
from iot_platform.consumer.service import ConsumerService
from iot_platform.observability.identity import run_as_only_instance
from iot_platform.observability.lifecycle import ParentWatch, install_stop_signals, tune_gc_for_message_rates
from iot_platform.observability.logging import configure_json_logging
from iot_platform.observability.pidfile import pidfile, replica_pidfile_name
from iot_platform.settings import Settings

log = logging.getLogger("iot_platform.consumer")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="Log level (default INFO).")
    parser.add_argument("--replica", type=int, metavar="N", help="The replica to run, 0 to IOT_CONSUMER_REPLICAS-1 (default: IOT_REPLICA_INDEX).")


def run(args: argparse.Namespace, settings: Settings) -> int:
    configure_json_logging(getattr(logging, args.log_level))
    if args.replica is not None:
        settings = settings.model_copy(update={"replica_index": args.replica})
    problem = replica_problem(settings)
    if problem is not None:
        log.error("invalid replica", extra={"error": problem})
        return 2
    return run_as_only_instance("consumer", settings, lambda: _run(settings))


def replica_problem(settings: Settings) -> str | None:
    """Why this replica index can never run in the configured group (pure), or None."""
    index, replicas = settings.replica_index, settings.consumer_replicas
    if index < 0 or index >= replicas:
        return (f"consumer replica {index} does not exist: IOT_CONSUMER_REPLICAS={replicas} allows 0 to {replicas - 1} "
                "(change --replica / IOT_REPLICA_INDEX or IOT_CONSUMER_REPLICAS)")
    return None


def _run(settings: Settings) -> int:
    metrics = ConsumerMetrics()
    metrics.serve(settings.consumer_metrics_port)
    service = ConsumerService(settings, metrics)
    install_stop_signals(service.stop)
    tune_gc_for_message_rates()
    watch = ParentWatch(service.stop).start() if settings.exit_with_parent else None
    try:
        with pidfile(settings.home, replica_pidfile_name("consumer", settings.replica_index)):
            return service.run()
    finally:
        if watch is not None:
            watch.stop()

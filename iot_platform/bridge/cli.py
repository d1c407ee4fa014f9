"""`iot-platform bridge`: the MQTT -> Kafka bridge in the foreground.

Exit codes: 0 after SIGTERM/SIGINT (or the parent's death under ``IOT_EXIT_WITH_PARENT``) once the
producer is flushed and delivered messages are acked; 1 after a fatal error (fatal producer error,
subscription refused, bad configuration, another bridge with the same client id already running in
this ``IOT_HOME``). Either way no unconfirmed message was acked, so the
supervisor may simply start it again.
"""

from __future__ import annotations

import argparse
import logging

from iot_platform.observability.identity import run_as_only_instance
from iot_platform.observability.lifecycle import ParentWatch, install_stop_signals
from iot_platform.observability.logging import configure_json_logging
from iot_platform.observability.pidfile import pidfile
from iot_platform.settings import Settings

log = logging.getLogger("iot_platform.bridge")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def run(args: argparse.Namespace, settings: Settings) -> int:
    configure_json_logging(getattr(logging, args.log_level))
    return run_as_only_instance("bridge", settings, lambda: _run(settings))


def _run(settings: Settings) -> int:
    from iot_platform.bridge.service import Bridge  # imported here so `--help` needs no network library
    from iot_platform.access.connection import MqttSetupError, require_bridge_credentials
    from iot_platform.core.topic_grammar import GrammarError

    try:
        require_bridge_credentials(settings)
        bridge = Bridge(settings)
    except (GrammarError, MqttSetupError) as exc:
        log.error("invalid configuration", extra={"error": str(exc)})
        return 1
    install_stop_signals(bridge.stop)
    watch = ParentWatch(bridge.stop).start() if settings.exit_with_parent else None
    try:
        with pidfile(settings.home, "bridge"):
            return bridge.run()
    finally:
        if watch:
            watch.stop()

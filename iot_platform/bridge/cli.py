"""`iot-platform bridge`: the MQTT -> Kafka bridge in the foreground.

Exit codes: 0 after SIGTERM/SIGINT (or the parent's death under ``IOT_EXIT_WITH_PARENT``) once the
producer is flushed and delivered messages are acked; 1 after a fatal error (fatal producer error,
subscription refused, credentials refused, another bridge with the same client id already running in
this ``IOT_HOME``); 2 at start-up for a setting that cannot work (one line naming it). Either way no unconfirmed message was acked, so the
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def run(args: argparse.Namespace, settings: Settings) -> int:
    configure_json_logging(getattr(logging, args.log_level))
    return run_as_only_instance("bridge", settings, lambda: _run(settings))


def _run(settings: Settings) -> int:
    from iot_platform.bridge.service import Bridge  # imported here so `--help` needs no network library
    from iot_platform.access.connection import require_bridge_credentials

    # A missing password, a missing CA file or a malformed grammar raise InvalidConfiguration: the
    # command line prints one line and exits 2, never retrying what cannot work.
    require_bridge_credentials(settings)
    bridge = Bridge(settings)
    install_stop_signals(bridge.stop)
    watch = ParentWatch(bridge.stop).start() if settings.exit_with_parent else None
    try:
        with pidfile(settings.home, "bridge"):
            return bridge.run()
    finally:
        if watch:
            watch.stop()

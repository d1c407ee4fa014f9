"""`iot-platform bridge`: one bridge replica in the foreground, or the drain of one.

    iot-platform bridge [--replica N]                        run replica N (default: IOT_REPLICA_INDEX)
    iot-platform bridge [--replica N] --drain [--timeout S]  hand replica N's MQTT session over, end it
    iot-platform bridge [--replica N] --undrain              let a drained replica subscribe again

Run. Exit codes: 0 after SIGTERM/SIGINT (or the parent's death under ``IOT_EXIT_WITH_PARENT``) once
the producer is flushed and delivered messages are acked, and 0 after the replica was drained; 1
after a fatal error (fatal producer error, subscription refused, credentials refused, another bridge
with the same identity already running in this ``IOT_HOME``); 2 at start-up for a setting that cannot
work, replica settings included (one line naming it; replicas.replica_problem). Either way no unconfirmed message was acked, so the supervisor may
simply start it again. A replica marked drained in this ``IOT_HOME`` connects nowhere: it reports
progress and serves /metrics (``iot_bridge_drained`` 1) until it is stopped, then exits 0.

--drain asks the replica that runs here (the process holding the identity's instance lock) to drain
and returns 0 once its session has ended (at once if it already had). When no process runs that
replica here (not started, SIGKILLed, stopped mid-drain) this process drains the session itself. 1
when the drain does not end within ``--timeout`` (the replica carries on: run the command again to
keep waiting) or fails (its log says why). --undrain removes the marks (drain_marks.py); exit 0.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time

from iot_platform.bridge import drain_marks
from iot_platform.bridge.replicas import replica_problem
from iot_platform.observability.identity import IDENTITY_SETTING, run_as_only_instance
from iot_platform.observability.instance_lock import AlreadyRunning, holder, lock_path, service_instance
from iot_platform.observability.lifecycle import ParentWatch, install_stop_signals, tune_gc_for_message_rates
from iot_platform.observability.logging import configure_json_logging
from iot_platform.observability.pidfile import pidfile, replica_pidfile_name
from iot_platform.observability.progress import ProgressFile
from iot_platform.settings import Settings

log = logging.getLogger("iot_platform.bridge")
_DRAIN_POLL_S = 0.2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--replica", type=int, metavar="N", help="the replica to run or drain (default: IOT_REPLICA_INDEX)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--drain", action="store_true",
                      help="hand the replica's MQTT session over (deliver and ack what it holds, then end it); returns once done")
    mode.add_argument("--undrain", action="store_true", help="let a drained replica subscribe again")
    parser.add_argument("--timeout", type=float, default=600.0, metavar="S",
                        help="--drain: stop waiting after S seconds (exit 1; the drain goes on), default 600")


def run(args: argparse.Namespace, settings: Settings) -> int:
    configure_json_logging(getattr(logging, args.log_level))
    if args.replica is not None:
        if args.replica < 0:
            log.error("invalid argument", extra={"error": f"--replica {args.replica}: a replica index is 0 or more"})
            return 2
        settings = settings.model_copy(update={"replica_index": args.replica})
    if args.undrain:
        drain_marks.clear(settings.home, settings.bridge_client_id)
        log.info("undrained: the replica subscribes when it next starts", extra={"client_id": settings.bridge_client_id})
        return 0
    problem = replica_problem(settings, draining=args.drain)
    if problem is not None:
        log.error("invalid replica settings", extra={"error": problem})
        return 2
    if args.drain:
        return _drain(settings, args.timeout)
    return run_as_only_instance("bridge", settings, lambda: _run(settings))


def _run(settings: Settings, *, draining: bool = False) -> int:
    from iot_platform.bridge.service import Bridge  # imported here so `--help` needs no network library
    from iot_platform.access.connection import require_bridge_credentials

    identity = settings.bridge_client_id
    mark = drain_marks.drained(settings.home, identity)
    if mark is not None:
        return _stay_drained(settings, mark)
    # A missing password, a missing CA file or a malformed grammar raise InvalidConfiguration: the
    # command line prints one line and exits 2, never retrying what cannot work.
    require_bridge_credentials(settings)
    bridge = Bridge(settings, draining=draining or drain_marks.drain_requested(settings.home, identity))
    if settings.replica_index >= settings.bridge_replicas:
        log.warning("replica index outside IOT_BRIDGE_REPLICAS", extra={"replica": settings.replica_index, "replicas": settings.bridge_replicas})
    install_stop_signals(bridge.stop)
    tune_gc_for_message_rates()
    watch = ParentWatch(bridge.stop).start() if settings.exit_with_parent else None
    try:
        with pidfile(settings.home, replica_pidfile_name("bridge", settings.replica_index)):
            return bridge.run()
    finally:
        if watch:
            watch.stop()


def _stay_drained(settings: Settings, mark: dict[str, object]) -> int:
    """A drained replica must not subscribe again before it is removed: report, serve /metrics, wait for a stop."""
    from iot_platform.bridge.metrics import BridgeMetrics

    log.warning("replica drained: not connecting until `iot-platform bridge --undrain`",
                extra={"client_id": settings.bridge_client_id, "drained": mark})
    stop = threading.Event()
    install_stop_signals(stop.set)
    watch = ParentWatch(stop.set).start() if settings.exit_with_parent else None
    metrics = BridgeMetrics()
    metrics.drained.set(1)
    stop_metrics = metrics.serve(settings.bridge_metrics_port)
    progress = ProgressFile(settings.home, "bridge", settings.bridge_client_id)
    try:
        while not stop.is_set():
            progress.update(0, 0)  # nothing waits for a drained replica: alive, not stuck
            stop.wait(1.0)
    finally:
        progress.close()
        if stop_metrics:
            stop_metrics()
        if watch:
            watch.stop()
    return 0


def _drain(settings: Settings, timeout_s: float) -> int:
    """Ask the replica running here to drain, or drain its session from this process; wait for the mark."""
    home, identity = settings.home, settings.bridge_client_id
    drain_marks.request_drain(home, identity)
    lock = lock_path(home, "bridge", identity)
    deadline = time.monotonic() + timeout_s
    waiting_for: int | None = None
    while True:
        mark = drain_marks.drained(home, identity)
        if mark is not None:
            log.info("drained", extra={"client_id": identity, **mark})
            return 0
        pid = holder(lock)
        if pid is None:  # nobody runs this replica here: hand its session over from this process
            try:
                with service_instance(home, "bridge", identity, IDENTITY_SETTING["bridge"]):
                    code = _run(settings, draining=True)
            except AlreadyRunning:  # the replica (re)started meanwhile: ask it instead
                continue
            if drain_marks.drained(home, identity) is None:
                log.error("drain did not finish", extra={"client_id": identity, "exit_code": code})
                return 1
            continue
        if pid != waiting_for:
            waiting_for = pid
            log.info("waiting for the replica to drain", extra={"client_id": identity, "pid": pid})
        if time.monotonic() >= deadline:
            log.error(f"replica still draining after {timeout_s:.0f} s; it carries on: run the command again to wait",
                      extra={"client_id": identity, "pid": pid})
            return 1
        time.sleep(_DRAIN_POLL_S)

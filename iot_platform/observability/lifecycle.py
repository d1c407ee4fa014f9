"""Process lifecycle helpers shared by the services.

Under Dagster a service runs as the child of a run worker. If that worker is SIGKILLed, the child
would keep running beside the replacement the watchdog starts: two bridges on one session. With
``IOT_EXIT_WITH_PARENT=true`` a service polls its parent and stops gracefully once it is gone.
"""

from __future__ import annotations

import gc
import os
import signal
import threading
from collections.abc import Callable

# (young, middle, old): CPython's default is (700, 10, 10) container allocations and collections.
SERVICE_GC_THRESHOLDS = (50_000, 20, 20)


class ParentWatch:
    """Calls ``on_orphaned`` once when the process that started us has died."""

    def __init__(self, on_orphaned: Callable[[], None], interval_s: float = 1.0) -> None:
        self._parent = os.getppid()
        self._on_orphaned = on_orphaned
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="parent-watch", daemon=True)

    def start(self) -> "ParentWatch":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            if os.getppid() != self._parent:
                self._on_orphaned()
                return


def tune_gc_for_message_rates() -> None:
    """Make CPython's cycle collector cheap for a service that allocates containers for every message.

    Each message allocates short-lived tuples, records and callbacks, so at CPython's default
    threshold the bridge and the consumer ran a young collection every few hundred messages, and
    every older collection also walked the objects of all imported modules (which never die):
    about 3.5% of the machine's CPU in a `perf` profile of the end-to-end drain
    (docs/benchmarks.md). Called once after start-up: ``gc.freeze()`` moves what start-up
    allocated out of every later collection, and the higher thresholds collect in larger, rarer
    passes. Reference counting still frees every acyclic object at once; only cyclic garbage waits
    longer, for at most 50,000 net allocations before a young collection.
    """
    gc.freeze()
    gc.set_threshold(*SERVICE_GC_THRESHOLDS)


def install_stop_signals(on_stop: Callable[[], None]) -> None:
    """SIGTERM and SIGINT both mean: stop receiving, flush, commit what is done, exit 0."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: on_stop())


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False

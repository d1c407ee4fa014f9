"""Progress reports of the long-running services, for the Dagster watchdog to judge liveness by.

A service's main loop calls :meth:`ProgressFile.update` with its position (a count that grows when
work is done: messages acked by the bridge, batches committed by the consumer) and the work waiting
for it (unacked messages it holds, records in Kafka not yet stored). About once a second the file
``{IOT_HOME}/run/progress/{service}-{identity}.json`` is replaced atomically (write, then rename)
with the position, the waiting work and two ``time.monotonic()`` readings: when it was written and
when the service last made progress, which is also when it last had nothing waiting (idle is not
stuck). A process that is frozen (SIGSTOP) or whose main loop is wedged stops rewriting it, so its
last progress ages exactly like that of a loop that runs without advancing while work waits.

CLOCK_MONOTONIC is shared by every process of one machine, so the watchdog compares these readings
with its own; a report names its host and is judged only there. One file per identity: replicas
(their own client ids or group instances) each get theirs, and the watchdog reads them all.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from iot_platform.observability.instance_lock import identity_key

WRITE_INTERVAL_S = 1.0


def progress_dir(home: Path) -> Path:
    return home / "run" / "progress"


def progress_path(home: Path, service: str, identity: str) -> Path:
    return progress_dir(home) / f"{service}-{identity_key(identity)}.json"


@dataclass(frozen=True)
class ProgressReport:
    """One service identity's last report (the file's content)."""

    service: str
    identity: str
    pid: int
    ppid: int
    host: str
    position: int
    waiting: int
    written_at: float  # time.monotonic() of this machine
    progress_at: float  # last time.monotonic() at which the position grew or nothing was waiting


def next_progress_at(previous: ProgressReport | None, position: int, waiting: int, now: float) -> float:
    """When the service last made progress, given its new position and waiting work (pure)."""
    if previous is None or waiting <= 0 or position != previous.position:
        return now
    return previous.progress_at


class ProgressFile:
    """Writes one service identity's progress report, at most once per ``interval_s``; removed on close."""

    def __init__(self, home: Path, service: str, identity: str, interval_s: float = WRITE_INTERVAL_S) -> None:
        self.path = progress_path(home, service, identity)
        self._service, self._identity, self._interval_s = service, identity, interval_s
        self._host = socket.gethostname()
        self._last: ProgressReport | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def update(self, position: int, waiting: int, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        last = self._last
        if last is not None and now - last.written_at < self._interval_s:
            return
        report = ProgressReport(
            self._service, self._identity, os.getpid(), os.getppid(), self._host, position, max(0, waiting),
            now, next_progress_at(last, position, waiting, now),
        )
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        temporary.write_text(json.dumps(asdict(report)))
        os.replace(temporary, self.path)
        self._last = report

    def close(self) -> None:
        """A cleanly stopped service leaves no report to be judged by."""
        with contextlib.suppress(OSError):
            if json.loads(self.path.read_text()).get("pid") == os.getpid():
                self.path.unlink()


def read_reports(home: Path, service: str) -> list[ProgressReport]:
    """Every readable report of ``service`` (one per identity); unreadable or foreign files are skipped."""
    reports = []
    for path in sorted(progress_dir(home).glob(f"{service}-*.json")):
        try:
            report = ProgressReport(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            continue
        if report.service == service:
            reports.append(report)
    return reports

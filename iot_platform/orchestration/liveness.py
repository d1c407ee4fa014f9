"""Liveness from progress, judged per replica process (pure; see observability/progress.py).

A replica's progress report belongs to the run whose worker is the reporting process's parent, so
each replica is judged on its own report and replaced on its own; a report of another host, of a
dead process or of a service outside Dagster is left alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from iot_platform.orchestration.supervision import RunView

if TYPE_CHECKING:  # the reports are read elsewhere; judging them needs no file or socket
    from iot_platform.observability.progress import ProgressReport


@dataclass(frozen=True)
class Replacement:
    """A stalled service process to kill, and the run it belongs to."""

    run_id: str
    pid: int
    identity: str
    reason: str
    replica: int = 0


def stall_reason(report: ProgressReport, now: float, timeout_s: float) -> str | None:
    """Why this service counts as stalled, or None (``now`` on the report's monotonic clock)."""
    quiet = now - report.progress_at
    if quiet <= timeout_s:
        return None
    silent = now - report.written_at
    if silent > timeout_s:
        return f"no progress report for {silent:.0f} s (process frozen or its main loop stuck; last position {report.position})"
    return f"no progress for {quiet:.0f} s while {report.waiting} wait (position {report.position})"


def stalled(
    runs: Sequence[RunView],
    reports: Sequence[ProgressReport],
    now: float,
    host: str,
    timeout_s: float,
    is_child: Callable[[int, int], bool],
) -> list[Replacement]:
    """The service processes of this host's STARTED runs that count as stalled.

    A report belongs to a run when the reporting process is the child of that run's worker
    (``is_child(pid, worker_pid)``: alive and still that worker's child, so a reused pid never matches).
    Reports of other hosts, dead processes and services outside Dagster are left alone.
    """
    workers = {r.worker_pid: r for r in runs if r.status == "STARTED" and r.worker_host == host and r.worker_pid}
    found = []
    for report in reports:
        run = workers.get(report.ppid)
        if report.host != host or run is None or not is_child(report.pid, report.ppid):
            continue
        reason = stall_reason(report, now, timeout_s)
        if reason is not None:
            found.append(Replacement(run.run_id, report.pid, report.identity, reason, run.replica))
    return found

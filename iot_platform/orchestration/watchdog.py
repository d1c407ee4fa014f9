"""`service_watchdog`: keeps one run of each service job alive.

Guarantee: every tick (about every 15 s) each service that has no active run (queued, starting,
started, canceling) gets a run request, so a service that crashed, was killed or was terminated is
back within a minute while the sensor is on. A STARTED run whose worker process is gone on this
host (SIGKILL, `dev down`, a reboot) is marked failed first: such a run would otherwise look
active forever. Conversely a run marked finished while its worker still lives (UI "force
termination") is waited for, so two copies of a service never run side by side. A service that keeps failing right after start is relaunched with exponential
backoff (10 s doubling to 5 min) instead of flooding the run history.

Liveness from progress, not from a pid: each service identity writes a progress report
(observability/progress.py). A service of an active run on this host that has made no progress
while work waits for it (or has stopped reporting at all: frozen, or its main loop wedged) for
``IOT_SERVICE_STALL_TIMEOUT_S`` is SIGKILLed -- it cannot answer a polite signal, and both services
are built to be killed at any point without loss (bridge: unacked messages are redelivered;
consumer: positions are stored with the rows). The run gets the tag ``iot/stalled`` and an engine
event with the reason, and a replacement is requested at once with the tag ``iot/relaunch_reason``;
the run queue's limit of one run per service starts it once the killed run has ended.

To stop a service: turn this sensor off, then terminate the service's run.
"""

import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dagster as dg

from iot_platform.core.retry import Backoff
from iot_platform.observability.lifecycle import pid_alive
from iot_platform.observability.progress import ProgressReport, read_reports
from iot_platform.orchestration.resources import PlatformSettings
from iot_platform.orchestration.services import SERVICE_JOBS, SERVICES, SERVICE_TAG, WORKER_HOST_TAG, WORKER_PID_TAG

ACTIVE = frozenset({"QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING", "SUSPENDED"})
QUICK_FAILURE_S = 20.0  # a run that failed sooner than this counts towards the crash-loop backoff
CRASH_LOOP_BACKOFF = Backoff(initial_s=10.0, maximum_s=300.0, jitter=False)  # the wait is shown in the decision's reason
HISTORY = 10
LINGER_WINDOW_S = 600.0  # a finished run's worker still alive this soon after: wait for it (pid reuse is unlikely)
STALLED_TAG = "iot/stalled"
RELAUNCH_TAG = "iot/relaunch_reason"


@dataclass(frozen=True)
class RunView:
    """What the watchdog needs of one run (most recent first in every list)."""

    run_id: str
    status: str
    start_time: float | None = None
    end_time: float | None = None
    worker_pid: int | None = None
    worker_host: str | None = None


@dataclass(frozen=True)
class Decision:
    launch: bool
    reason: str
    dead_runs: tuple[str, ...] = ()  # STARTED runs whose worker is gone: mark them failed


def backoff_s(quick_failures: int) -> float:
    """How long to wait before relaunching a service after ``quick_failures`` quick failures in a row."""
    return 0.0 if quick_failures <= 0 else CRASH_LOOP_BACKOFF.delay(quick_failures - 1)


def decide(runs: Sequence[RunView], now: float, host: str, pid_alive: Callable[[int], bool]) -> Decision:
    """Whether to launch a service, given its recent runs (pure)."""
    dead = tuple(
        r.run_id for r in runs
        if r.status == "STARTED" and r.worker_host == host and r.worker_pid is not None and not pid_alive(r.worker_pid)
    )
    alive = [r for r in runs if r.status in ACTIVE and r.run_id not in dead]
    if alive:
        return Decision(False, f"run {alive[0].run_id} is {alive[0].status}", dead)
    finished = [r for r in runs if r.run_id not in dead]
    lingering = [
        r for r in finished[:1]
        if r.worker_host == host and r.worker_pid is not None and r.end_time is not None
        and now - r.end_time < LINGER_WINDOW_S and pid_alive(r.worker_pid)
    ]
    if lingering:  # e.g. "force termination" marked it canceled while its service still runs
        return Decision(False, f"run {lingering[0].run_id} ended but its worker (pid {lingering[0].worker_pid}) is alive", dead)
    quick = 0
    for run in finished:
        lasted = (run.end_time or 0.0) - (run.start_time or run.end_time or 0.0)
        if run.status != "FAILURE" or lasted >= QUICK_FAILURE_S:
            break
        quick += 1
    wait = backoff_s(quick)
    if quick and finished[0].end_time is not None and now - finished[0].end_time < wait:
        return Decision(False, f"{quick} quick failure(s) in a row: next launch in {wait - (now - finished[0].end_time):.0f} s", dead)
    return Decision(True, "no active run" + (f" ({len(dead)} run(s) with a dead worker)" if dead else ""), dead)


@dataclass(frozen=True)
class Replacement:
    """A stalled service process to kill, and the run it belongs to."""

    run_id: str
    pid: int
    identity: str
    reason: str


def stall_reason(report: ProgressReport, now: float, timeout_s: float) -> str | None:
    """Why this service counts as stalled, or None (pure; ``now`` on the report's monotonic clock)."""
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
    """The service processes of this host's STARTED runs that count as stalled (pure).

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
            found.append(Replacement(run.run_id, report.pid, report.identity, reason))
    return found


def child_of(pid: int, parent: int) -> bool:
    """``pid`` is alive (not a zombie) and its parent is ``parent``."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z" and int(fields[1]) == parent


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def recent_runs(instance: dg.DagsterInstance, job_name: str) -> list[RunView]:
    records = instance.get_run_records(filters=dg.RunsFilter(job_name=job_name), limit=HISTORY)
    return [
        RunView(
            r.dagster_run.run_id, r.dagster_run.status.value, r.start_time, r.end_time,
            _int_or_none(r.dagster_run.tags.get(WORKER_PID_TAG)), r.dagster_run.tags.get(WORKER_HOST_TAG),
        )
        for r in records
    ]


@dg.sensor(
    name="service_watchdog",
    jobs=list(SERVICE_JOBS.values()),
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Relaunches the bridge and the consumer when they have no active run, and replaces one that "
    "makes no progress while work waits. Turn off to stop them.",
)
def service_watchdog(context: dg.SensorEvaluationContext, platform: PlatformSettings) -> dg.SensorResult:
    settings = platform.get()
    instance, host, now = context.instance, socket.gethostname(), time.time()
    requests, notes = [], []
    for service in SERVICES:
        runs = recent_runs(instance, service.job_name)
        decision = decide(runs, now, host, pid_alive)
        for run_id in decision.dead_runs:
            run = instance.get_run_by_id(run_id)
            if run is not None:
                instance.report_run_failed(run, f"service_watchdog: run worker (pid {run.tags.get(WORKER_PID_TAG)}) is gone")
        replacements = stalled(runs, read_reports(settings.home, service.name), time.monotonic(), host,
                               settings.service_stall_timeout_s, child_of)
        for replacement in replacements:
            requests.append(_replace(instance, service.name, service.job_name, replacement))
            notes.append(f"{service.name} ({replacement.identity}): killed pid {replacement.pid}, {replacement.reason}")
        notes.append(f"{service.name}: {decision.reason}")
        if decision.launch and not replacements:
            requests.append(dg.RunRequest(job_name=service.job_name, tags={SERVICE_TAG: service.name}))
    context.log.info("; ".join(notes))
    return dg.SensorResult(run_requests=requests, skip_reason=None if requests else "; ".join(notes))


def _replace(instance: dg.DagsterInstance, name: str, job_name: str, replacement: Replacement) -> dg.RunRequest:
    """Kill a stalled service (its run then fails), say why on its run, and request the next run."""
    try:
        os.kill(replacement.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    why = f"stalled: {replacement.reason}"
    instance.add_run_tags(replacement.run_id, {STALLED_TAG: why[:200]})
    run = instance.get_run_by_id(replacement.run_id)
    if run is not None:
        instance.report_engine_event(
            f"service_watchdog: {name} {replacement.identity} (pid {replacement.pid}) {why}; killed it, relaunching", run
        )
    return dg.RunRequest(job_name=job_name, tags={SERVICE_TAG: name, RELAUNCH_TAG: f"replaces run {replacement.run_id}: {why}"[:200]})

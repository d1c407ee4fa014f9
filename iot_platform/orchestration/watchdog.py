"""`service_watchdog`: keeps one run of each service job alive.

Guarantee: every tick (about every 15 s) each service that has no active run (queued, starting,
started, canceling) gets a run request, so a service that crashed, was killed or was terminated is
back within a minute while the sensor is on. A STARTED run whose worker process is gone on this
host (SIGKILL, `dev down`, a reboot) is marked failed first: such a run would otherwise look
active forever. Conversely a run marked finished while its worker still lives (UI "force
termination") is waited for, so two copies of a service never run side by side. A service that keeps failing right after start is relaunched with exponential
backoff (10 s doubling to 5 min) instead of flooding the run history.

To stop a service: turn this sensor off, then terminate the service's run.
"""

import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dagster as dg

from iot_platform.observability.lifecycle import pid_alive
from iot_platform.orchestration.services import SERVICE_JOBS, SERVICES, SERVICE_TAG, WORKER_HOST_TAG, WORKER_PID_TAG

ACTIVE = frozenset({"QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING", "SUSPENDED"})
QUICK_FAILURE_S = 20.0  # a run that failed sooner than this counts towards the crash-loop backoff
HISTORY = 10
LINGER_WINDOW_S = 600.0  # a finished run's worker still alive this soon after: wait for it (pid reuse is unlikely)


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


def backoff_s(quick_failures: int, base_s: float = 10.0, maximum_s: float = 300.0) -> float:
    return 0.0 if quick_failures <= 0 else min(maximum_s, base_s * 2 ** (quick_failures - 1))


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
    description="Relaunches the bridge and the consumer when they have no active run. Turn off to stop them.",
)
def service_watchdog(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    instance, host, now = context.instance, socket.gethostname(), time.time()
    requests, notes = [], []
    for service in SERVICES:
        decision = decide(recent_runs(instance, service.job_name), now, host, pid_alive)
        for run_id in decision.dead_runs:
            run = instance.get_run_by_id(run_id)
            if run is not None:
                instance.report_run_failed(run, f"service_watchdog: run worker (pid {run.tags.get(WORKER_PID_TAG)}) is gone")
        notes.append(f"{service.name}: {decision.reason}")
        if decision.launch:
            requests.append(dg.RunRequest(job_name=service.job_name, tags={SERVICE_TAG: service.name}))
    context.log.info("; ".join(notes))
    return dg.SensorResult(run_requests=requests, skip_reason=None if requests else "; ".join(notes))

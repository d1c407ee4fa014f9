"""`service_watchdog`: keeps exactly N replicas of each service alive, one run per replica.

Guarantee: every tick (about every 15 s) it reads each replica's recent runs and acts on the plan of
:func:`.supervision.plan_service` for ``IOT_BRIDGE_REPLICAS`` and ``IOT_CONSUMER_REPLICAS`` (as the
last `dev up` recorded them, observability/replica_counts.py, else its own settings):

- a wanted replica (index below N) without an active run (queued, starting, started, canceling)
  gets a run request tagged with its identity, so a replica that crashed, was killed or was
  terminated is back within a minute under the same identity (for the bridge: the same MQTT
  session, which is never left orphaned with messages queued in it). A STARTED run whose worker
  process is gone on this host (SIGKILL, `dev down`, a reboot) is marked failed first; a run marked
  finished while its worker still lives (UI "force termination") is waited for, so two copies of
  a replica never run side by side; a replica that keeps failing right after start is relaunched
  with exponential backoff (10 s doubling to 5 min);
- a consumer replica at or above N that still runs is terminated gracefully (SIGINT through Pipes);
  a bridge replica at or above N gets a run of ``mqtt_kafka_bridge_drain`` tagged ``iot/drain`` with
  its identity: `iot-platform bridge --drain` asks the running replica to hand its MQTT session over
  (Mosquitto keeps what it routed to a shared-subscription member until that client id returns),
  after which the replica's run ends; raising N again launches it again, drain marks cleared;
- nothing is done to the other replicas.

Liveness from progress, not from a pid: each replica writes a progress report
(observability/progress.py). A service of an active run on this host that has made no progress
while work waits for it (or has stopped reporting at all: frozen, or its main loop wedged) for
``IOT_SERVICE_STALL_TIMEOUT_S`` is SIGKILLed -- it cannot answer a polite signal, and both services
are built to be killed at any point without loss (bridge: unacked messages are redelivered;
consumer: positions are stored with the rows). The run gets the tag ``iot/stalled`` and an engine
event with the reason, and a replacement of that replica is requested at once with the tag
``iot/relaunch_reason``; the run queue starts it once the killed run has ended.

With ``IOT_DAGSTER_SUPERVISES_SERVICES=false`` (Kubernetes runs the services) it launches, stops and
kills nothing. To stop the services: turn this sensor off, then terminate their runs.
"""

import os
import signal
import socket
import time

import dagster as dg

from iot_platform.observability.lifecycle import pid_alive
from iot_platform.observability.progress import read_reports
from iot_platform.observability.replica_counts import desired_replicas
from iot_platform.orchestration.resources import PlatformSettings
from iot_platform.orchestration.services import (
    DRAIN_JOBS,
    DRAIN_TAG,
    REPLICA_TAG,
    SERVICE_JOBS,
    SERVICES,
    WORKER_HOST_TAG,
    WORKER_PID_TAG,
    Service,
    is_drain,
    job_name,
    replica_of,
    run_tags,
)
from iot_platform.orchestration.schedules import JOBS as BATCH_JOBS
from iot_platform.orchestration.liveness import Replacement, stalled
from iot_platform.orchestration.supervision import ACTIVE, RunView, Stop, plan_service, queue_room_warning

HISTORY = 10  # runs per replica
STALLED_TAG = "iot/stalled"
RELAUNCH_TAG = "iot/relaunch_reason"


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


def _view(service: Service, record: dg.RunRecord) -> RunView | None:
    run = record.dagster_run
    try:
        replica = replica_of(service, run.tags)
    except ValueError:  # a hand-made tag: not one of ours to supervise
        return None
    return RunView(run.run_id, run.status.value, record.start_time, record.end_time, _int_or_none(run.tags.get(WORKER_PID_TAG)),
                   run.tags.get(WORKER_HOST_TAG), replica, is_drain(run.tags))


def replica_history(instance: dg.DagsterInstance, service: Service) -> dict[int, list[RunView]]:
    """Recent runs (newest created first) of every replica of ``service`` that ever ran, serving and drain runs
    together, by index.

    Queried per replica tag, so one replica's crash loop never pushes another's history out of the
    window; active serving runs from before replicas (no tag) count as replica 0.
    """
    queries = [(service.job_name, REPLICA_TAG)] + ([(service.drain_job_name, DRAIN_TAG)] if service.drain_job_name else [])
    records: list[dg.RunRecord] = []
    for job, key in queries:
        for _, values in instance.get_run_tags(tag_keys=[key], value_prefix=f"{service.name}-"):
            for value in sorted(values):
                records += instance.get_run_records(dg.RunsFilter(job_name=job, tags={key: value}), limit=HISTORY)
    records += [
        r for r in instance.get_run_records(
            dg.RunsFilter(job_name=service.job_name, statuses=[dg.DagsterRunStatus(s) for s in sorted(ACTIVE)]))
        if REPLICA_TAG not in r.dagster_run.tags
    ]
    history: dict[int, list[RunView]] = {}
    for record in sorted(records, key=lambda r: r.create_timestamp, reverse=True):
        view = _view(service, record)
        if view is not None:
            history.setdefault(view.replica, []).append(view)
    return history


@dg.sensor(
    name="service_watchdog",
    jobs=[*SERVICE_JOBS.values(), *DRAIN_JOBS.values()],
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Keeps IOT_BRIDGE_REPLICAS bridges and IOT_CONSUMER_REPLICAS consumers running, one run per replica: "
    "relaunches a missing replica, stops (bridge: drains) one beyond the count, and replaces one that makes no "
    "progress while work waits. Launches nothing with IOT_DAGSTER_SUPERVISES_SERVICES=false. Turn off to stop them.",
)
def service_watchdog(context: dg.SensorEvaluationContext, platform: PlatformSettings) -> dg.SensorResult:
    settings = platform.get()
    if not settings.dagster_supervises_services:
        return dg.SensorResult(skip_reason="IOT_DAGSTER_SUPERVISES_SERVICES is false: another supervisor runs the services")
    instance, host, now = context.instance, socket.gethostname(), time.time()
    counts = desired_replicas(settings)
    requests, notes = [], []
    for service in SERVICES:
        desired = counts[service.name]
        history = replica_history(instance, service)
        replacements = stalled([r for runs in history.values() for r in runs], read_reports(settings.home, service.name),
                               time.monotonic(), host, settings.service_stall_timeout_s, child_of)
        relaunch_reasons = {r.replica: _kill_stalled(instance, service, r) for r in replacements}
        plan = plan_service(desired, history, now, host, pid_alive, drain_on_scale_down=service.drain_job_name is not None,
                            ending=frozenset(r.run_id for r in replacements))
        for run_id in plan.dead_runs:
            run = instance.get_run_by_id(run_id)
            if run is not None:
                instance.report_run_failed(run, f"service_watchdog: run worker (pid {run.tags.get(WORKER_PID_TAG)}) is gone")
        notes.append(f"{service.name} (replicas {desired}): " + ", ".join(plan.notes))
        notes += [f"{service.name} {r.identity}: killed pid {r.pid}, {r.reason}" for r in replacements]
        notes += [_stop(instance, service, stop) for stop in plan.stops]
        for launch in plan.launches:
            tags = run_tags(service, launch.replica, drain=launch.drain, undrain=launch.undrain)
            if launch.replica in relaunch_reasons:
                tags[RELAUNCH_TAG] = relaunch_reasons[launch.replica]
            requests.append(dg.RunRequest(job_name=job_name(service, drain=launch.drain), tags=tags))
    warning = queue_room_warning(sum(counts[s.name] for s in SERVICES), len(BATCH_JOBS), _max_concurrent_runs(instance))
    if warning:
        context.log.warning(warning)
        notes.append(warning)
    context.log.info("; ".join(notes))
    return dg.SensorResult(run_requests=requests, skip_reason=None if requests else "; ".join(notes))


def _max_concurrent_runs(instance: dg.DagsterInstance) -> int | None:
    coordinator = instance.run_coordinator
    return coordinator.get_run_queue_config().max_concurrent_runs if isinstance(coordinator, dg.QueuedRunCoordinator) else None


def _kill_stalled(instance: dg.DagsterInstance, service: Service, replacement: Replacement) -> str:
    """Kill a stalled service (its run then fails) and say why on its run; returns the relaunch reason."""
    try:
        os.kill(replacement.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    why = f"stalled: {replacement.reason}"
    instance.add_run_tags(replacement.run_id, {STALLED_TAG: why[:200]})
    run = instance.get_run_by_id(replacement.run_id)
    if run is not None:
        instance.report_engine_event(
            f"service_watchdog: {service.name} {replacement.identity} (pid {replacement.pid}) {why}; killed it, relaunching", run
        )
    return f"replaces run {replacement.run_id}: {why}"[:200]


def _stop(instance: dg.DagsterInstance, service: Service, stop: Stop) -> str:
    """Terminate a replica's run as the UI would (the service gets SIGINT and ends cleanly); returns a note."""
    run = instance.get_run_by_id(stop.run_id)
    if run is None:
        return f"{service.name} replica {stop.replica}: run {stop.run_id} is gone"
    instance.report_engine_event(f"service_watchdog: {stop.reason}; terminating it", run)
    try:
        terminated = instance.run_coordinator.cancel_run(stop.run_id)
    except Exception as exc:  # noqa: BLE001 - the next tick tries again; the others go on
        return f"{service.name} replica {stop.replica}: terminating run {stop.run_id} failed: {exc}"[:300]
    return f"{service.name} replica {stop.replica}: run {stop.run_id} {'terminating' if terminated else 'could not be terminated'}"

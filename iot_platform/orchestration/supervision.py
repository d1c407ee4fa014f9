"""What `service_watchdog` decides, as pure functions of the runs it sees (no Dagster, no processes).

A replica is one identity of a service: index ``i`` of the bridge is always MQTT client
``{IOT_MQTT_CLIENT_ID}-{i}``, of the consumer always group instance ``{group}-{i}``. Each replica
has at most one active run (the run queue allows one per ``iot/replica`` tag value), and
:func:`plan_service` keeps exactly replicas ``0 .. N-1`` alive:

- a wanted replica without an active run is launched (:func:`decide`: after a dead worker's run is
  failed, never beside a finished run whose worker still lives, with backoff after quick failures);
- a consumer replica at or above N that still runs is stopped gracefully (its positions are in
  PostgreSQL). A bridge replica at or above N is drained instead, because Mosquitto keeps the
  messages it routed to a shared-subscription member until that client id returns: a drain run of
  the same identity (`iot-platform bridge --drain`) asks the running replica to hand its session
  over, or hands it over itself when none runs. A bridge replica whose newest run is not a
  successful drain (it died, or was stopped by hand) is drained again, with backoff; a replica
  raised back above the count after a drain gets its drain marks cleared before it serves;
- the other replicas are never touched, so changing N restarts nothing else.

Every replica holds a run for ever, so the run queue must have room for all of them and the batch
runs (:func:`queue_room_warning`).

Liveness is judged per replica process (:mod:`.liveness`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from iot_platform.core.retry import Backoff


ACTIVE = frozenset({"QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING", "SUSPENDED"})
NOT_STARTED = frozenset({"QUEUED", "NOT_STARTED"})
QUICK_FAILURE_S = 20.0  # a run that failed sooner than this counts towards the crash-loop backoff
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
    replica: int = 0
    drain: bool = False  # a run that drains the replica's session, then ends


@dataclass(frozen=True)
class Decision:
    launch: bool
    reason: str
    dead_runs: tuple[str, ...] = ()  # STARTED runs whose worker is gone: mark them failed
    alive: tuple[RunView, ...] = ()  # active runs, dead ones excluded


CRASH_LOOP_BACKOFF = Backoff(initial_s=10.0, maximum_s=300.0, jitter=False)  # the wait is shown in the decision's reason


def backoff_s(quick_failures: int) -> float:
    """How long to wait before relaunching a replica after ``quick_failures`` quick failures in a row."""
    return 0.0 if quick_failures <= 0 else CRASH_LOOP_BACKOFF.delay(quick_failures - 1)


def decide(runs: Sequence[RunView], now: float, host: str, pid_alive: Callable[[int], bool]) -> Decision:
    """Whether to launch one replica, given its recent runs."""
    dead = tuple(
        r.run_id for r in runs
        if r.status == "STARTED" and r.worker_host == host and r.worker_pid is not None and not pid_alive(r.worker_pid)
    )
    alive = tuple(r for r in runs if r.status in ACTIVE and r.run_id not in dead)
    if alive:
        return Decision(False, f"run {alive[0].run_id} is {alive[0].status}", dead, alive)
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


def drained(runs: Sequence[RunView]) -> bool:
    """The replica's newest run (by creation) is a drain that succeeded: nothing served under it since."""
    return bool(runs) and runs[0].drain and runs[0].status == "SUCCESS"


@dataclass(frozen=True)
class Launch:
    replica: int
    drain: bool
    reason: str
    undrain: bool = False  # a serving run after a drain: clear the identity's drain marks first


@dataclass(frozen=True)
class Stop:
    run_id: str
    replica: int
    reason: str


@dataclass(frozen=True)
class ServicePlan:
    launches: tuple[Launch, ...]
    stops: tuple[Stop, ...]
    dead_runs: tuple[str, ...]
    notes: tuple[str, ...]


def plan_service(
    desired: int,
    history: Mapping[int, Sequence[RunView]],
    now: float,
    host: str,
    pid_alive: Callable[[int], bool],
    *,
    drain_on_scale_down: bool,
    ending: frozenset[str] = frozenset(),
) -> ServicePlan:
    """Runs to launch and stop so that exactly replicas ``0 .. desired-1`` of one service run.

    ``history``: recent runs per replica index, newest created first, serving and drain runs together
    (replicas seen before, above ``desired``, included). ``ending``: runs being killed right now
    (stalled): counted as over, so their replica is relaunched at once (the run queue starts the
    new run when the killed one has ended).
    """
    launches: list[Launch] = []
    stops: list[Stop] = []
    dead: list[str] = []
    notes: list[str] = []
    for index in sorted(set(history) | set(range(desired))):
        runs = [r for r in history.get(index, ()) if r.run_id not in ending]
        decision = decide(runs, now, host, pid_alive)
        dead += decision.dead_runs
        beyond = f"replica {index} is beyond the {desired} wanted"
        if index < desired:
            if decision.launch:
                launches.append(Launch(index, False, decision.reason, undrain=bool(runs) and runs[0].drain))
            notes.append(f"{index}: {decision.reason}")
            continue
        if drain_on_scale_down:
            drain_stops, drain_launches, note = _drain_beyond(index, beyond, runs, decision, now, host, pid_alive)
            stops += drain_stops
            launches += drain_launches
        else:
            serving = [r for r in decision.alive if r.status != "CANCELING"]
            stops += [Stop(r.run_id, index, beyond) for r in serving]
            note = "stopping" if decision.alive else "not wanted"
        notes.append(f"{index}: {note}")
    return ServicePlan(tuple(launches), tuple(stops), tuple(dead), tuple(notes))


def _drain_beyond(
    index: int, beyond: str, runs: list[RunView], decision: Decision, now: float, host: str, pid_alive: Callable[[int], bool]
) -> tuple[list[Stop], list[Launch], str]:
    """A bridge replica at or above N: its serving run drains in place when a drain run asks it; a serving run
    never started is cancelled; once drained, a serving run still alive is ended; an undrained session
    without any run gets a drain run of its own."""
    never_started = {r.run_id for r in decision.alive if not r.drain and r.status in NOT_STARTED}
    stops = [Stop(run_id, index, beyond) for run_id in sorted(never_started)]
    if never_started:
        runs = [r for r in runs if r.run_id not in never_started]
        decision = decide(runs, now, host, pid_alive)
    running = [r for r in decision.alive if not r.drain]
    if any(r.drain for r in decision.alive):
        return stops, [], "draining"
    if drained(runs):
        stops += [Stop(r.run_id, index, f"{beyond} and drained") for r in running if r.status != "CANCELING"]
        return stops, [], "drained, ending its run" if running else "drained"
    # Backoff and lingering judged on the drain runs alone: the serving run may rightly be alive.
    retry = decide([r for r in runs if r.drain and r.run_id not in decision.dead_runs], now, host, pid_alive)
    if not (running or decision.launch):
        return stops, [], f"drain waits ({decision.reason})"
    if not retry.launch:
        return stops, [], f"drain waits ({retry.reason})"
    return stops, [Launch(index, True, f"{beyond}: drain its MQTT session")], "drain requested"


def queue_room_warning(service_replicas: int, batch_kinds: int, max_concurrent_runs: int | None) -> str | None:
    """A warning when the run queue cannot hold every replica's never-ending run beside one run of each batch kind."""
    if max_concurrent_runs is None or max_concurrent_runs < 0 or service_replicas + batch_kinds <= max_concurrent_runs:
        return None
    return (f"{service_replicas} service replicas and {batch_kinds} batch kinds need more than the run queue's "
            f"max_concurrent_runs ({max_concurrent_runs}): replicas or batches will wait; raise it in dagster.yaml")

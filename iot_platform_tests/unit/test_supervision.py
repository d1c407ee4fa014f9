"""service_watchdog's decisions as pure functions: one replica (decide), N replicas (plan_service), stalls (liveness)."""

from __future__ import annotations

import pytest

from iot_platform.observability.progress import ProgressReport
from iot_platform.orchestration.liveness import Replacement, stall_reason, stalled
from iot_platform.orchestration.supervision import (
    Launch,
    RunView,
    backoff_s,
    decide,
    drained,
    plan_service,
    queue_room_warning,
)

HOST = "host-a"
NOW = 1_000_000.0


def alive_only(*pids: int):  # noqa: ANN201
    return lambda pid: pid in pids


def report(progress_age: float, written_age: float = 0.5, waiting: int = 5, pid: int = 20, ppid: int = 10,
           host: str = HOST, identity: str = "client-1") -> ProgressReport:
    return ProgressReport("bridge", identity, pid, ppid, host, 7, waiting, NOW - written_age, NOW - progress_age)


# -- one replica ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING"])
def test_an_active_run_is_left_alone(status: str) -> None:
    """One run per service: any queued/starting/started/canceling run blocks a new launch."""
    decision = decide([RunView("r1", status, NOW - 5, worker_pid=10, worker_host=HOST)], NOW, HOST, alive_only(10))
    assert not decision.launch and decision.dead_runs == ()


@pytest.mark.parametrize("status", ["SUCCESS", "FAILURE", "CANCELED"])
def test_a_long_run_that_ended_is_relaunched_at_once(status: str) -> None:
    """A service that ran for a while and stopped (crash, kill, terminate) comes back on the next tick."""
    runs = [RunView("r1", status, NOW - 3600, NOW - 1)]
    assert decide(runs, NOW, HOST, alive_only()).launch


def test_no_history_launches() -> None:
    """A service never run before is started."""
    assert decide([], NOW, HOST, alive_only()).launch


def test_started_run_with_dead_worker_is_reported_and_replaced() -> None:
    """A STARTED run whose worker pid is gone on this host is marked dead and the service relaunched."""
    decision = decide([RunView("r1", "STARTED", NOW - 60, worker_pid=10, worker_host=HOST)], NOW, HOST, alive_only())
    assert decision.launch and decision.dead_runs == ("r1",)


@pytest.mark.parametrize(
    "run",
    [
        RunView("r1", "STARTED", NOW - 60, worker_pid=10, worker_host="other-host"),  # cannot see its pid
        RunView("r1", "STARTED", NOW - 60),  # worker has not tagged itself yet
        RunView("r1", "STARTING", NOW - 60, worker_pid=10, worker_host=HOST),  # only STARTED runs are judged
    ],
)
def test_runs_whose_worker_cannot_be_judged_count_as_active(run: RunView) -> None:
    """Only a STARTED run with a pid on this host is ever declared dead."""
    decision = decide([run], NOW, HOST, alive_only())
    assert not decision.launch and decision.dead_runs == ()


def test_a_finished_run_whose_worker_lives_on_blocks_a_second_copy() -> None:
    """Force-terminated (CANCELED) but its worker is alive: wait rather than run two bridges side by side."""
    run = RunView("r1", "CANCELED", NOW - 600, NOW - 5, worker_pid=10, worker_host=HOST)
    assert not decide([run], NOW, HOST, alive_only(10)).launch
    assert decide([run], NOW, HOST, alive_only()).launch  # worker gone: relaunch
    assert decide([run], NOW + 3600, HOST, alive_only(10)).launch  # long ago: that pid is someone else now


@pytest.mark.parametrize(("failures", "expected"), [(0, 0.0), (1, 10.0), (2, 20.0), (3, 40.0), (5, 160.0), (6, 300.0), (20, 300.0)])
def test_backoff_doubles_up_to_five_minutes(failures: int, expected: float) -> None:
    """Crash loops back off 10 s, 20 s, 40 s ... capped at 300 s."""
    assert backoff_s(failures) == expected


def test_quick_failures_back_off() -> None:
    """Two runs that failed within seconds of starting: wait 20 s after the last before relaunching."""
    runs = [RunView("r2", "FAILURE", NOW - 12, NOW - 10), RunView("r1", "FAILURE", NOW - 42, NOW - 40)]
    assert not decide(runs, NOW, HOST, alive_only()).launch
    assert decide(runs, NOW + 11, HOST, alive_only()).launch


def test_a_long_run_resets_the_backoff() -> None:
    """Only consecutive quick failures count: a long healthy run before them breaks the chain."""
    runs = [RunView("r3", "FAILURE", NOW - 9, NOW - 5), RunView("r2", "FAILURE", NOW - 9000, NOW - 30),
            RunView("r1", "FAILURE", NOW - 9100, NOW - 9090)]
    assert not decide(runs, NOW, HOST, alive_only()).launch  # one quick failure: 10 s after its end
    assert decide(runs, NOW + 5, HOST, alive_only()).launch


# -- N replicas -----------------------------------------------------------------------------------------


def started(run_id: str, replica: int, *, drain: bool = False, status: str = "STARTED", pid: int = 10) -> RunView:
    return RunView(run_id, status, NOW - 600, None, pid, HOST, replica, drain)


def ended(run_id: str, replica: int, status: str, *, drain: bool = False, lasted: float = 600.0) -> RunView:
    return RunView(run_id, status, NOW - 100 - lasted, NOW - 100, None, None, replica, drain)


def plan(desired: int, history: dict, *, drains: bool = True, alive: tuple[int, ...] = (10,), ending: frozenset[str] = frozenset()):  # noqa: ANN201
    return plan_service(desired, history, NOW, HOST, alive_only(*alive), drain_on_scale_down=drains, ending=ending)


def launched(result) -> list[tuple[int, bool]]:  # noqa: ANN001
    return [(launch.replica, launch.drain) for launch in result.launches]


def test_n_replicas_from_nothing() -> None:
    """An empty history with N=3: replicas 0, 1 and 2 are launched, none of them as a drain."""
    result = plan(3, {})
    assert launched(result) == [(0, False), (1, False), (2, False)] and result.stops == ()


def test_only_the_missing_identity_is_relaunched() -> None:
    """Replica 1 of 3 ended (crashed, killed): exactly replica 1 comes back; 0 and 2 are not touched."""
    result = plan(3, {0: [started("a", 0)], 1: [ended("b", 1, "FAILURE")], 2: [started("c", 2)]})
    assert launched(result) == [(1, False)] and result.stops == ()


@pytest.mark.parametrize("drains", [True, False])
def test_scaling_up_launches_only_the_new_replicas(drains: bool) -> None:
    """2 -> 4: replicas 2 and 3 start; the two running ones are left alone."""
    result = plan(4, {0: [started("a", 0)], 1: [started("b", 1)]}, drains=drains)
    assert launched(result) == [(2, False), (3, False)] and result.stops == ()


def test_consumer_scale_down_stops_the_replicas_beyond_n_and_nothing_else() -> None:
    """3 -> 1 consumers: the runs of replicas 1 and 2 are stopped (positions are in PostgreSQL), no launch."""
    result = plan(1, {0: [started("a", 0)], 1: [started("b", 1)], 2: [started("c", 2)]}, drains=False)
    assert [(s.run_id, s.replica) for s in result.stops] == [("b", 1), ("c", 2)] and result.launches == ()


def test_bridge_scale_down_drains_the_running_replica_in_place() -> None:
    """3 -> 2 bridges: a drain run of replica 2 is requested (it asks the running replica to hand its
    session over); replica 2's serving run is not terminated, replicas 0 and 1 are not touched."""
    result = plan(2, {0: [started("a", 0)], 1: [started("b", 1)], 2: [started("c", 2)]})
    assert result.stops == () and launched(result) == [(2, True)]


def test_a_drain_in_progress_is_left_to_finish() -> None:
    """Replica 1 drains (its drain run and its serving run both alive): nothing more to do for it."""
    history = {0: [started("a", 0)], 1: [started("d", 1, drain=True), started("b", 1)]}
    result = plan(1, history)
    assert result.stops == () and result.launches == () and "1: draining" in result.notes


def test_a_drained_replica_whose_run_lingers_is_terminated() -> None:
    """The drain succeeded but replica 1's serving run is still alive (it exits on its own, or it idles
    drained): it is terminated, and no second drain is started."""
    history = {0: [started("a", 0)], 1: [ended("d", 1, "SUCCESS", drain=True), started("b", 1)]}
    result = plan(1, history)
    assert [(s.run_id, s.replica) for s in result.stops] == [("b", 1)] and result.launches == ()


def test_a_replica_beyond_n_that_never_started_is_cancelled_and_drained() -> None:
    """A queued serving run of replica 1 when N drops to 1: cancelled; the session (from earlier runs) is drained."""
    history = {0: [started("a", 0)], 1: [started("q", 1, status="QUEUED"), ended("b", 1, "FAILURE")]}
    result = plan(1, history)
    assert [s.run_id for s in result.stops] == ["q"] and launched(result) == [(1, True)]


def test_a_drained_replica_stays_down() -> None:
    """The latest run of replica 1 drained its session successfully: nothing is launched for it."""
    history = {0: [started("a", 0)], 1: [ended("d", 1, "SUCCESS", drain=True), ended("b", 1, "SUCCESS")]}
    result = plan(1, history)
    assert result.launches == () and result.stops == () and drained(history[1])
    assert not drained([ended("b2", 1, "SUCCESS"), *history[1]])  # it served again after the drain


@pytest.mark.parametrize("status", ["FAILURE", "CANCELED", "SUCCESS"])
def test_a_replica_beyond_n_that_ended_undrained_is_drained(status: str) -> None:
    """Replica 1 died (or was stopped by hand) after N was lowered: its session may hold messages, so a
    drain run of that identity is requested rather than leaving the session orphaned."""
    result = plan(1, {0: [started("a", 0)], 1: [ended("b", 1, status)]})
    assert launched(result) == [(1, True)]


def test_a_failed_drain_is_retried_with_backoff() -> None:
    """A drain that failed right after start (Kafka down): tried again after the crash-loop backoff,
    also while the replica's serving run is alive."""
    failed = RunView("d", "FAILURE", NOW - 7, NOW - 5, None, None, 1, True)
    for history in ({0: [started("a", 0)], 1: [failed]}, {0: [started("a", 0)], 1: [failed, started("b", 1)]}):
        assert launched(plan(1, history)) == []  # one quick failure 5 s ago: 10 s of backoff
        assert launched(plan_service(1, history, NOW + 6, HOST, alive_only(10), drain_on_scale_down=True)) == [(1, True)]


def test_scaling_back_up_during_a_drain_waits_for_it() -> None:
    """N lowered then raised again while replica 1 drains: it is relaunched once the drain has ended,
    told to clear the drain marks first (or it would stay drained)."""
    draining = {0: [started("a", 0)], 1: [started("d", 1, drain=True)]}
    assert plan(2, draining).launches == ()
    done = {0: [started("a", 0)], 1: [ended("d", 1, "SUCCESS", drain=True)]}
    assert plan(2, done).launches == (Launch(1, False, "no active run", undrain=True),)
    assert plan(2, {0: [started("a", 0)], 1: [ended("b", 1, "FAILURE")]}).launches[0].undrain is False


def test_consumer_beyond_n_without_a_run_is_left_alone() -> None:
    result = plan(1, {0: [started("a", 0)], 1: [ended("b", 1, "CANCELED")]}, drains=False)
    assert result.launches == () and result.stops == ()


def test_a_stalled_run_being_killed_is_replaced_at_once() -> None:
    """The run of replica 1 is still STARTED while its service is being killed: replica 1 is relaunched now."""
    history = {0: [started("a", 0)], 1: [started("b", 1)]}
    assert plan(2, history).launches == ()
    assert launched(plan(2, history, ending=frozenset({"b"}))) == [(1, False)]


def test_a_dead_worker_beyond_n_is_failed_and_its_replica_drained() -> None:
    """Replica 1's worker died after N was lowered: the run is reported dead and the session drained."""
    result = plan(1, {0: [started("a", 0)], 1: [started("b", 1, pid=11)]})
    assert result.dead_runs == ("b",) and result.stops == () and launched(result) == [(1, True)]


def test_launches_are_launch_records() -> None:
    assert plan(1, {}).launches == (Launch(0, False, "no active run"),)


# -- liveness per replica ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "stalled_because"),
    [
        (report(progress_age=59), None),
        (report(progress_age=61), "no progress for 61 s while 5 wait"),
        (report(progress_age=61, written_age=61), "no progress report for 61 s"),  # frozen: its last report ages
        (report(progress_age=59, written_age=59), None),
    ],
)
def test_stall_reason(case: ProgressReport, stalled_because: str | None) -> None:
    reason = stall_reason(case, NOW, timeout_s=60)
    assert (reason is None) if stalled_because is None else (reason is not None and reason.startswith(stalled_because))


def test_only_reports_of_this_hosts_started_runs_with_a_live_matching_child_are_judged() -> None:
    """A report counts when its process is the live child of a STARTED run's worker on this host."""
    runs = [RunView("r1", "STARTED", NOW - 600, worker_pid=10, worker_host=HOST),
            RunView("r0", "FAILURE", NOW - 900, NOW - 700, worker_pid=11, worker_host=HOST),
            RunView("r2", "STARTED", NOW - 600, worker_pid=12, worker_host="other-host")]
    children = {(20, 10), (21, 11), (22, 12), (24, 10)}
    reports = [
        report(120),  # r1's service, stalled
        report(120, pid=21, ppid=11),  # the worker's run has ended
        report(120, pid=22, ppid=12, host="other-host"),  # another machine's clock
        report(120, pid=23, ppid=10),  # pid 23 is not (or no longer) the worker's child
        report(5, pid=24, ppid=10, identity="client-2"),  # a second identity of r1 that progresses
    ]
    found = stalled(runs, reports, NOW, HOST, 60, lambda pid, parent: (pid, parent) in children)
    assert found == [Replacement("r1", 20, "client-1", found[0].reason)]
    assert found[0].reason.startswith("no progress for 120 s while 5 wait")


def test_a_stalled_replica_names_its_replica() -> None:
    """Two consumer replicas of two runs: only the stalled one is reported, with its replica index."""
    runs = [RunView("r0", "STARTED", NOW - 600, worker_pid=10, worker_host=HOST, replica=0),
            RunView("r1", "STARTED", NOW - 600, worker_pid=11, worker_host=HOST, replica=1)]
    reports = [report(5, pid=20, ppid=10, identity="group-0"), report(120, pid=21, ppid=11, identity="group-1")]
    found = stalled(runs, reports, NOW, HOST, 60, lambda pid, parent: (pid, parent) in {(20, 10), (21, 11)})
    assert [(r.run_id, r.replica, r.identity) for r in found] == [("r1", 1, "group-1")]


@pytest.mark.parametrize(("replicas", "limit", "warns"), [(2, 16, False), (11, 16, False), (12, 16, True), (12, None, False), (12, -1, False)])
def test_the_run_queue_must_hold_every_replica_and_the_batches(replicas: int, limit: int | None, warns: bool) -> None:
    """Service runs never end: with 5 batch kinds, 16 slots hold 11 replicas; a 12th would starve someone."""
    warning = queue_room_warning(replicas, 5, limit)
    assert (warning is not None) == warns and (not warns or "max_concurrent_runs (16)" in warning)

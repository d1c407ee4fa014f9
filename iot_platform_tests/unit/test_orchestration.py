"""Dagster definitions without servers: watchdog decisions, schedules, retention planning, observer maths."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus

from iot_platform.orchestration.definitions import defs
from iot_platform.orchestration.observer import Snapshot, lag, rate
from iot_platform.orchestration.resources import DATABASE_FIELDS, PlatformSettings, PostgresResource, platform_resources
from iot_platform.orchestration.schedules import hours_to_roll, rollup_hourly_schedule
from iot_platform.orchestration.services import SERVICE_TAG, WORKER_HOST_TAG, WORKER_PID_TAG
from iot_platform.observability.progress import ProgressFile, ProgressReport, next_progress_at, read_reports
from iot_platform.orchestration.watchdog import (
    RELAUNCH_TAG,
    STALLED_TAG,
    Replacement,
    RunView,
    backoff_s,
    child_of,
    decide,
    service_watchdog,
    stall_reason,
    stalled,
)
from iot_platform.settings import Settings
from iot_platform.storage.retention import Partition, parse_bound, partitions_to_drop

UTC = timezone.utc
HOST = "host-a"
NOW = 1_000_000.0


def alive_only(*pids: int):  # noqa: ANN201
    return lambda pid: pid in pids


# -- watchdog decisions ------------------------------------------------------------------------


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


# -- the sensor against a real (ephemeral) instance ----------------------------------------------------


def _add_run(instance: dg.DagsterInstance, job_name: str, status: DagsterRunStatus, tags: dict[str, str]) -> str:
    run = DagsterRun(job_name=job_name, status=status, tags=tags)
    instance.add_run(run)
    return run.run_id


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _sensor_context(instance: dg.DagsterInstance, home: Path) -> dg.SensorEvaluationContext:
    return dg.build_sensor_context(instance=instance, resources=platform_resources(Settings(home=home)))


def test_watchdog_sensor_starts_missing_services_and_replaces_dead_runs(tmp_path: Path) -> None:
    """Empty instance: both services requested. Live bridge run: only the consumer. Dead worker: run failed, relaunch."""
    with dg.DagsterInstance.ephemeral() as instance:
        result = service_watchdog(_sensor_context(instance, tmp_path))
        assert sorted(r.job_name for r in result.run_requests) == ["kafka_postgres_consumer_service", "mqtt_kafka_bridge_service"]
        assert {r.tags[SERVICE_TAG] for r in result.run_requests} == {"bridge", "consumer"}

        me = {WORKER_PID_TAG: str(os.getpid()), WORKER_HOST_TAG: socket.gethostname()}
        _add_run(instance, "mqtt_kafka_bridge_service", DagsterRunStatus.STARTED, me)
        result = service_watchdog(_sensor_context(instance, tmp_path))
        assert [r.job_name for r in result.run_requests] == ["kafka_postgres_consumer_service"]

        dead = {WORKER_PID_TAG: str(_dead_pid()), WORKER_HOST_TAG: socket.gethostname()}
        run_id = _add_run(instance, "kafka_postgres_consumer_service", DagsterRunStatus.STARTED, dead)
        result = service_watchdog(_sensor_context(instance, tmp_path))
        assert [r.job_name for r in result.run_requests] == ["kafka_postgres_consumer_service"]
        assert instance.get_run_by_id(run_id).status == DagsterRunStatus.FAILURE


# -- liveness from progress --------------------------------------------------------------------------


def report(progress_age: float, written_age: float = 0.5, waiting: int = 5, pid: int = 20, ppid: int = 10,
           host: str = HOST, identity: str = "client-1") -> ProgressReport:
    return ProgressReport("bridge", identity, pid, ppid, host, 7, waiting, NOW - written_age, NOW - progress_age)


@pytest.mark.parametrize(
    ("previous", "position", "waiting", "expected"),
    [
        (None, 0, 10, NOW),  # first report
        (report(100), 7, 0, NOW),  # nothing waiting: idle, not stuck
        (report(100), 8, 10, NOW),  # the position moved
        (report(100), 7, 10, NOW - 100),  # same position, work waiting: still the old time
    ],
)
def test_progress_time_moves_with_the_position_or_when_idle(previous: ProgressReport | None, position: int, waiting: int, expected: float) -> None:
    assert next_progress_at(previous, position, waiting, NOW) == expected


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


def test_progress_file_is_replaced_atomically_read_back_and_removed_on_close(tmp_path: Path) -> None:
    """Writes at most once per interval; the progress time stays put while work waits and nothing moves."""
    progress = ProgressFile(tmp_path, "consumer", "group/a", interval_s=1.0)
    progress.update(3, 10, now=100.0)
    progress.update(4, 10, now=100.5)  # within the interval: not written
    [first] = read_reports(tmp_path, "consumer")
    assert (first.position, first.waiting, first.written_at, first.progress_at, first.identity) == (3, 10, 100.0, 100.0, "group/a")
    progress.update(3, 10, now=102.0)
    [second] = read_reports(tmp_path, "consumer")
    assert (second.written_at, second.progress_at, second.pid, second.ppid) == (102.0, 100.0, os.getpid(), os.getppid())
    assert progress.path.name == "consumer-group%2Fa.json" and read_reports(tmp_path, "bridge") == []
    assert [p.name for p in progress.path.parent.iterdir()] == [progress.path.name], "no temporary file left"
    progress.close()
    assert read_reports(tmp_path, "consumer") == []


def test_watchdog_kills_a_stalled_service_tags_its_run_and_requests_a_replacement(tmp_path: Path) -> None:
    """This test process stands in for a run worker, a child process for its service. The child's report
    shows no progress for longer than the stall timeout while work waits: the sensor SIGKILLs it, tags the
    run and records an engine event with the reason, and requests the next run tagged with it."""
    service = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert child_of(service.pid, os.getpid()) and not child_of(service.pid, os.getppid())
        stuck = ProgressReport("consumer", "iot-postgres-writer", service.pid, os.getpid(), socket.gethostname(),
                               42, 900, time.monotonic() - 400, time.monotonic() - 400)
        (tmp_path / "run" / "progress").mkdir(parents=True)
        (tmp_path / "run" / "progress" / "consumer-iot-postgres-writer.json").write_text(json.dumps(stuck.__dict__))
        with dg.DagsterInstance.ephemeral() as instance:
            me = {WORKER_PID_TAG: str(os.getpid()), WORKER_HOST_TAG: socket.gethostname()}
            _add_run(instance, "mqtt_kafka_bridge_service", DagsterRunStatus.STARTED, me)
            run_id = _add_run(instance, "kafka_postgres_consumer_service", DagsterRunStatus.STARTED, me)
            result = service_watchdog(_sensor_context(instance, tmp_path))
            assert service.wait(10) == -signal.SIGKILL
            [request] = result.run_requests
            assert request.job_name == "kafka_postgres_consumer_service" and request.tags[SERVICE_TAG] == "consumer"
            assert request.tags[RELAUNCH_TAG].startswith(f"replaces run {run_id}: stalled: no progress report for 40")
            assert instance.get_run_by_id(run_id).tags[STALLED_TAG].startswith("stalled: no progress report for 40")
            events = [e.message for e in instance.all_logs(run_id)]
            assert any("service_watchdog: consumer iot-postgres-writer" in (m or "") and "killed it, relaunching" in (m or "") for m in events)
    finally:
        if service.poll() is None:
            service.kill()
            service.wait(10)


# -- schedules ------------------------------------------------------------------------------------


def test_hours_to_roll_are_the_closed_hour_and_three_before() -> None:
    """At 15:05 the closed hour is 14:00; 11:00-13:00 are re-run for late data."""
    assert hours_to_roll(datetime(2026, 11, 26, 15, 5, tzinfo=UTC)) == [
        "2026-11-26-14:00", "2026-11-26-13:00", "2026-11-26-12:00", "2026-11-26-11:00",
    ]
    assert hours_to_roll(datetime(2026, 11, 27, 1, 5, tzinfo=UTC))[-1] == "2026-11-26-21:00"  # across midnight


def test_rollup_schedule_tick_requests_four_partitions_with_distinct_run_keys() -> None:
    """One tick: four partitioned runs; run keys include the tick so hourly re-runs are not deduplicated."""
    tick = datetime(2026, 11, 26, 15, 5, tzinfo=UTC)
    context = dg.build_schedule_context(scheduled_execution_time=tick, repository_def=defs.get_repository_def())
    data = rollup_hourly_schedule.evaluate_tick(context)
    keys = [r.partition_key for r in data.run_requests]
    assert keys == hours_to_roll(tick)
    assert len({r.run_key for r in data.run_requests}) == 4


# -- retention planning ---------------------------------------------------------------------------


def d(day: int, hour: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "bounds"),
    [
        ("FOR VALUES FROM ('2026-11-23 00:00:00+00') TO ('2026-11-24 00:00:00+00')", (d(23), d(24))),
        ("DEFAULT", (None, None)),
        ("FOR VALUES FROM (MINVALUE) TO ('2026-11-24 00:00:00+00')", (None, None)),
    ],
)
def test_parse_bound(expression: str, bounds: tuple) -> None:
    """Range bounds are read back in UTC; default and unbounded partitions have none."""
    assert parse_bound(expression) == bounds


def test_only_partitions_wholly_before_the_cutoff_are_dropped() -> None:
    """Upper bound is exclusive: a day ending exactly at the cutoff goes, the boundary day stays."""
    parts = [Partition("p22", d(22), d(23)), Partition("p23", d(23), d(24)), Partition("p24", d(24), d(25)),
             Partition("pdef", None, None)]
    assert [p.name for p in partitions_to_drop(parts, d(24))] == ["p22", "p23"]
    assert [p.name for p in partitions_to_drop(parts, d(24, 5))] == ["p22", "p23"]
    assert partitions_to_drop(parts, d(22, 23)) == []


# -- observer maths and resources -----------------------------------------------------------------


def test_lag_per_partition() -> None:
    """Lag = Kafka end offset - stored next offset; a partition never consumed lags entirely."""
    assert lag(Snapshot(0.0, {0: 10, 1: 5, 2: 7}, {0: 10, 1: 2})) == {0: 0, 1: 3, 2: 7}
    assert lag(Snapshot(0.0, None, {0: 1})) is None


def test_rate_needs_a_previous_tick() -> None:
    """Rates are deltas over elapsed time; none on the first tick or when a side was unreadable."""
    assert rate({"at": 100.0, "produced": 1000}, 1600, 160.0, "produced") == 10.0
    assert rate(None, 1600, 160.0, "produced") is None
    assert rate({"at": 100.0, "produced": None}, 1600, 160.0, "produced") is None


def test_explicit_settings_survive_the_resources_and_reach_the_services(tmp_path: Path) -> None:
    """Settings handed in come back out of platform + postgres, and the services get them as IOT_* variables."""
    settings = Settings(home=tmp_path, pg_port=6543, pg_password="s3cret", kafka_topic="t-x", pg_sslrootcert=tmp_path / "ca.pem")
    resources = platform_resources(settings)
    platform, postgres = resources["platform"], resources["postgres"]
    assert isinstance(platform, PlatformSettings) and isinstance(postgres, PostgresResource)
    again = platform.get(postgres)
    assert (again.pg_port, again.pg_password.get_secret_value(), again.kafka_topic, again.home) == (6543, "s3cret", "t-x", tmp_path)
    assert again.pg_sslrootcert == tmp_path / "ca.pem"
    env = {**platform.child_env(), **postgres.child_env()}
    assert (env["IOT_PG_PORT"], env["IOT_PG_PASSWORD"], env["IOT_KAFKA_TOPIC"], env["IOT_EXIT_WITH_PARENT"]) == ("6543", "s3cret", "t-x", "true")
    assert PlatformSettings().child_env() == {"IOT_EXIT_WITH_PARENT": "true"}


def test_the_database_has_its_own_typed_resource_and_the_rest_no_free_form_dict() -> None:
    """Every pg_* setting is a PostgresResource field with the same default; every other setting a typed
    PlatformSettings field with its description; no field takes a dict."""
    defaults = Settings.model_fields
    for setting, field in DATABASE_FIELDS.items():
        if setting != "pg_password":
            assert PostgresResource.model_fields[field].default == defaults[setting].default, setting
    assert set(PlatformSettings.model_fields) == set(defaults) - set(DATABASE_FIELDS)
    for name, field in PlatformSettings.model_fields.items():
        assert field.description == defaults[name].description and "dict" not in str(field.annotation), name


def test_code_location_resources_show_the_environment_and_hide_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Set variables become configuration; secrets stay dg.EnvVar references; with nothing set the defaults load."""
    for name in [n for n in os.environ if n.startswith("IOT_")]:
        monkeypatch.delenv(name)
    resources = platform_resources()
    assert resources["postgres"].port == 5432 and resources["platform"].explicit_values() == {}
    monkeypatch.setenv("IOT_PG_HOST", "db.internal")
    monkeypatch.setenv("IOT_PG_PASSWORD", "hunter2")
    monkeypatch.setenv("IOT_KAFKA_TOPIC", "t-env")
    monkeypatch.setenv("IOT_GRAFANA_PASSWORD", "g-secret")
    resources = platform_resources()
    platform, postgres = resources["platform"], resources["postgres"]
    assert postgres.host == "db.internal" and isinstance(postgres.password, dg.EnvVar) and postgres.password == "IOT_PG_PASSWORD"
    assert platform.kafka_topic == "t-env" and isinstance(platform.grafana_password, dg.EnvVar)
    assert "hunter2" not in repr(resources) and "g-secret" not in repr(resources)


# -- the code location ----------------------------------------------------------------------------


def test_definitions_expose_the_public_names_and_lineage() -> None:
    """Public Dagster names exist, and lineage runs MQTT -> Kafka -> raw -> rollups -> dashboards."""
    repo = defs.get_repository_def()
    assert {"mqtt_kafka_bridge_service", "kafka_postgres_consumer_service", "iot_rollup_hourly_job", "iot_checks"} <= set(repo.job_names)
    assert repo.get_sensor_def("service_watchdog").default_status == dg.DefaultSensorStatus.RUNNING
    graph = repo.asset_graph
    parents = lambda name: {k.to_user_string() for k in graph.get(dg.AssetKey(name)).parent_keys}  # noqa: E731
    assert parents("kafka_iot_messages") == {"mqtt_telemetry"}
    assert "kafka_iot_messages" in parents("iot_messages")
    assert parents("iot_rollup_hourly") == {"iot_messages"}
    assert "iot_rollup_hourly" in parents("grafana_dashboards")
    for job in ("mqtt_kafka_bridge_service", "kafka_postgres_consumer_service"):
        assert repo.get_job(job).executor_def is dg.in_process_executor

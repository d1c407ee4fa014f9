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
from iot_platform.orchestration.services import (
    BRIDGE,
    CONSUMER,
    DRAIN_TAG,
    REPLICA_TAG,
    SERVICE_TAG,
    WORKER_HOST_TAG,
    WORKER_PID_TAG,
    run_tags,
)

BRIDGE_DRAIN_JOB = "mqtt_kafka_bridge_drain"
from iot_platform.observability.progress import ProgressFile, ProgressReport, next_progress_at, read_reports
from iot_platform.orchestration.watchdog import RELAUNCH_TAG, STALLED_TAG, child_of, service_watchdog
from iot_platform.settings import Settings
from iot_platform.storage.retention import Partition, parse_bound, partitions_to_drop

UTC = timezone.utc
HOST = "host-a"
NOW = 1_000_000.0


def alive_only(*pids: int):  # noqa: ANN201
    return lambda pid: pid in pids


# -- the sensor against a real (ephemeral) instance ----------------------------------------------------


def _add_run(instance: dg.DagsterInstance, job_name: str, status: DagsterRunStatus, tags: dict[str, str]) -> str:
    run = DagsterRun(job_name=job_name, status=status, tags=tags)
    instance.add_run(run)
    return run.run_id


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _sensor_context(instance: dg.DagsterInstance, home: Path, **settings: object) -> dg.SensorEvaluationContext:
    return dg.build_sensor_context(instance=instance, resources=platform_resources(Settings(home=home, **settings)))


def _requested(result: dg.SensorResult) -> list[str]:
    return sorted(r.tags.get(REPLICA_TAG) or f"drain {r.tags[DRAIN_TAG]}" for r in result.run_requests)


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


def test_watchdog_runs_one_run_per_replica_with_distinct_identities(tmp_path: Path) -> None:
    """IOT_CONSUMER_REPLICAS=2: consumer-0 and consumer-1 are requested, each tagged with its identity; with
    consumer-0 running only consumer-1 is; a third replica comes when N becomes 3, the others untouched."""
    me = {WORKER_PID_TAG: str(os.getpid()), WORKER_HOST_TAG: socket.gethostname()}
    with dg.DagsterInstance.ephemeral() as instance:
        result = service_watchdog(_sensor_context(instance, tmp_path, consumer_replicas=2))
        assert _requested(result) == ["bridge-0", "consumer-0", "consumer-1"]
        assert {r.tags[SERVICE_TAG] for r in result.run_requests if r.job_name == CONSUMER.job_name} == {"consumer"}
        _add_run(instance, BRIDGE.job_name, DagsterRunStatus.STARTED, {**run_tags(BRIDGE, 0), **me})
        _add_run(instance, CONSUMER.job_name, DagsterRunStatus.STARTED, {**run_tags(CONSUMER, 0), **me})
        assert _requested(service_watchdog(_sensor_context(instance, tmp_path, consumer_replicas=2))) == ["consumer-1"]
        _add_run(instance, CONSUMER.job_name, DagsterRunStatus.STARTED, {**run_tags(CONSUMER, 1), **me})
        assert _requested(service_watchdog(_sensor_context(instance, tmp_path, consumer_replicas=3))) == ["consumer-2"]


def test_watchdog_scales_down_consumers_by_terminating_and_bridges_by_draining(tmp_path: Path) -> None:
    """N lowered to 1: consumer-1's run is terminated (an engine event says why); bridge-1 gets a drain run of
    its own identity and its serving run is left to drain in place; replica 0 of each is left alone."""
    me = {WORKER_PID_TAG: str(os.getpid()), WORKER_HOST_TAG: socket.gethostname()}
    with dg.instance_for_test() as instance:
        runs = {f"{service.name}-{index}": _add_run(instance, service.job_name, DagsterRunStatus.STARTED,
                                                    {**run_tags(service, index), **me})
                for service in (BRIDGE, CONSUMER) for index in (0, 1)}
        result = service_watchdog(_sensor_context(instance, tmp_path))
        [drain] = result.run_requests
        assert drain.job_name == BRIDGE_DRAIN_JOB and drain.tags[DRAIN_TAG] == "bridge-1" and REPLICA_TAG not in drain.tags
        assert instance.get_run_by_id(runs["consumer-1"]).status == DagsterRunStatus.CANCELING
        assert any("beyond the 1 wanted; terminating it" in (e.message or "") for e in instance.all_logs(runs["consumer-1"]))
        for tag in ("bridge-0", "bridge-1", "consumer-0"):
            assert instance.get_run_by_id(runs[tag]).status == DagsterRunStatus.STARTED, tag


def test_watchdog_launches_nothing_when_another_supervisor_runs_the_services(tmp_path: Path) -> None:
    """IOT_DAGSTER_SUPERVISES_SERVICES=false: no request, and a dead worker's run is not even touched."""
    dead = {WORKER_PID_TAG: str(_dead_pid()), WORKER_HOST_TAG: socket.gethostname()}
    with dg.DagsterInstance.ephemeral() as instance:
        run_id = _add_run(instance, CONSUMER.job_name, DagsterRunStatus.STARTED, {**run_tags(CONSUMER, 0), **dead})
        result = service_watchdog(_sensor_context(instance, tmp_path, dagster_supervises_services=False))
        assert result.run_requests == [] and "IOT_DAGSTER_SUPERVISES_SERVICES" in (result.skip_reason.skip_message or "")
        assert instance.get_run_by_id(run_id).status == DagsterRunStatus.STARTED
        assert _requested(service_watchdog(_sensor_context(instance, tmp_path))) == ["bridge-0", "consumer-0"]


class RecordingPipes(dg.PipesSubprocessClient):
    """Records what the service op would start instead of starting it."""

    calls: list[tuple[list[str], dict[str, str]]] = []

    def run(self, *, context, command, env=None, **kwargs):  # type: ignore[no-untyped-def, override]  # noqa: ANN001, ANN003, ANN201
        RecordingPipes.calls.append((list(command), dict(env or {})))


@pytest.mark.parametrize(("job", "tags", "expected_args", "expected_index"), [
    ("mqtt_kafka_bridge_service", {}, ["bridge"], "0"),  # launched by hand: replica 0
    ("kafka_postgres_consumer_service", run_tags(CONSUMER, 2), ["consumer"], "2"),
    (BRIDGE_DRAIN_JOB, run_tags(BRIDGE, 1, drain=True), ["bridge", "--drain"], "1"),
])
def test_a_replica_run_starts_its_service_as_that_replica(job, tags, expected_args, expected_index, tmp_path: Path) -> None:  # noqa: ANN001
    """The run's tags become the service's IOT_REPLICA_INDEX (and --drain for a bridge drain run), with the database."""
    RecordingPipes.calls.clear()
    resources = {**platform_resources(Settings(home=tmp_path, pg_port=6543)), "pipes": RecordingPipes()}
    with dg.DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def(job).execute_in_process(instance=instance, resources=resources, tags=tags)
        assert result.success
    [(command, env)] = RecordingPipes.calls
    assert command[-len(expected_args):] == expected_args and command[1:3] == ["-m", "iot_platform.cli"]
    assert (env["IOT_REPLICA_INDEX"], env["IOT_PG_PORT"], env["IOT_EXIT_WITH_PARENT"]) == (expected_index, "6543", "true")


def test_a_drain_run_needs_to_know_which_replica(tmp_path: Path) -> None:
    """Launched by hand without its tag, the drain job refuses rather than drain replica 0 by default."""
    RecordingPipes.calls.clear()
    resources = {**platform_resources(Settings(home=tmp_path)), "pipes": RecordingPipes()}
    with dg.DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def(BRIDGE_DRAIN_JOB).execute_in_process(instance=instance, resources=resources,
                                                                           raise_on_error=False)
    assert not result.success and RecordingPipes.calls == []


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
    # Secrets are masked in the UI even when set in code (a default): Dagster's config snapshot says so.
    secret = {name for name, field in PlatformSettings.to_config_schema().as_field().config_type.fields.items() if field.is_secret}
    assert secret == {"mqtt_password", "mqtt_admin_password", "kafka_sasl_password", "grafana_password", "tenant_password_key"}
    assert PostgresResource.to_config_schema().as_field().config_type.fields["password"].is_secret


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

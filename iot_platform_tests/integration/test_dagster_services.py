"""The operator's view of the services under Dagster, on a real `iot-platform dev up --no-demo`.

Covers what test_dev_platform.py does not: the documented stop procedure (sensor off, terminate the
run) shuts a service down gracefully and keeps it down; turning the sensor back on restarts it; a
SIGKILLed run worker takes its service with it and is replaced within a minute; the observer
reports on the external assets; the UI shows the database resource; a second consumer replica runs as a run of its own, comes back as
itself when killed, and is stopped when the count goes down again; a second bridge replica is scaled
away only through a drain run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from iot_platform.bridge.drain_marks import drained
from iot_platform.observability.pidfile import pidfile_path, read_live_pid
from iot_platform.orchestration.services import DRAIN_TAG, REPLICA_TAG, WORKER_PID_TAG
from iot_platform.orchestration.watchdog import RELAUNCH_TAG, STALLED_TAG
from iot_platform.stack.dagster_processes import graphql
from iot_platform.stack.process import pid_alive
from iot_platform_tests.helpers import run_cli, wait_for

pytestmark = pytest.mark.integration

SENSOR_SELECTOR = {"repositoryLocationName": "iot_platform", "repositoryName": "__repository__", "sensorName": "service_watchdog"}
BRIDGE_JOB = "mqtt_kafka_bridge_service"
CONSUMER_JOB = "kafka_postgres_consumer_service"
BRIDGE_DRAIN_JOB = "mqtt_kafka_bridge_drain"
ACTIVE = ["QUEUED", "NOT_STARTED", "STARTING", "STARTED"]
QUIET_WINDOW_S = 40.0  # more than two watchdog intervals (15 s)


def _q(url: str, query: str, **variables: object) -> dict:
    response = graphql(url, query, variables)
    assert "errors" not in response, response
    return response["data"]


def _runs(url: str, job: str, statuses: list[str]) -> list[dict]:
    data = _q(url, """query($f: RunsFilter) { runsOrError(filter: $f) { ... on Runs { results { runId status tags { key value } } } } }""",
              f={"pipelineName": job, "statuses": statuses})
    return data["runsOrError"]["results"]


def _started_run(url: str, job: str) -> dict | None:
    runs = _runs(url, job, ["STARTED"])
    return runs[0] if runs else None


def _set_sensor(url: str, on: bool) -> str:
    data = _q(url, """query($s: SensorSelector!) { sensorOrError(sensorSelector: $s) { ... on Sensor { id sensorState { status } } } }""",
              s=SENSOR_SELECTOR)
    if on:
        result = _q(url, """mutation($s: SensorSelector!) { startSensor(sensorSelector: $s) { ... on Sensor { sensorState { status } } } }""",
                    s=SENSOR_SELECTOR)
        return result["startSensor"]["sensorState"]["status"]
    result = _q(url, """mutation($id: String) { stopSensor(id: $id) { ... on StopSensorMutationResult { instigationState { status } } } }""",
                id=data["sensorOrError"]["id"])
    return result["stopSensor"]["instigationState"]["status"]


def _watchdog_ticks(url: str, limit: int = 20) -> list[dict]:
    """The watchdog's latest ticks, newest first: status, start timestamp (epoch s) and the runs each requested."""
    data = _q(url, """query($s: SensorSelector!) { sensorOrError(sensorSelector: $s) { ... on Sensor {
                        sensorState { ticks(limit: %d) { status timestamp runIds } } } } }""" % limit, s=SENSOR_SELECTOR)
    return data["sensorOrError"]["sensorState"]["ticks"]


def test_observer_reports_on_the_external_assets(dev_platform: dict) -> None:
    """Within about a minute of start the observer has recorded offsets and liveness on iot_messages."""
    query = """query { assetOrError(assetKey: {path: ["iot_messages"]}) { ... on Asset {
                 assetObservations(limit: 1) { metadataEntries { label } } } } }"""

    def labels() -> set[str]:
        observations = _q(dev_platform["url"], query)["assetOrError"].get("assetObservations") or []
        return {e["label"] for e in observations[0]["metadataEntries"]} if observations else set()

    found = wait_for(labels, 120, "an observation of iot_messages", interval_s=3)
    assert {"consumer_alive", "consumed_offsets_total", "lag_total"} <= found


def test_the_ui_shows_the_database_and_only_the_name_of_its_password(dev_platform: dict) -> None:
    """The `postgres` resource of the code location shows host, port and database as values and the
    password as the variable it comes from; assets, checks and sensors use it."""
    query = """query($s: ResourceSelector!) { topLevelResourceDetailsOrError(resourceSelector: $s) { ... on ResourceDetails {
                 configuredValues { key value type } assetKeysUsing { path } sensorsUsing } } }"""
    selector = {"repositoryLocationName": "iot_platform", "repositoryName": "__repository__", "resourceName": "postgres"}
    details = _q(dev_platform["url"], query, s=selector)["topLevelResourceDetailsOrError"]
    # A VALUE comes JSON-encoded ('"iot"', '5432'), an ENV_VAR as the variable's name.
    values = {v["key"]: (json.loads(v["value"]) if v["type"] == "VALUE" else v["value"], v["type"]) for v in details["configuredValues"]}
    assert values["port"] == (int(dev_platform["env"]["IOT_PG_PORT"]), "VALUE") and values["database"] == ("iot", "VALUE")
    assert values["password"] == ("IOT_PG_PASSWORD", "ENV_VAR")
    assert {"iot_schema", "iot_rollup_hourly"} <= {k["path"][0] for k in details["assetKeysUsing"]}
    assert "platform_observer" in details["sensorsUsing"]


def test_sensor_off_then_terminate_stops_a_service_gracefully_and_it_stays_down(dev_platform: dict) -> None:
    """The documented stop: the bridge exits cleanly (removes its pid file), nothing relaunches it; sensor on brings it back.

    "Nothing relaunches it" is watched for QUIET_WINDOW_S; the positive control is the relaunch once the
    sensor is on, which the same observation must see sooner than that window."""
    url, home = dev_platform["url"], dev_platform["home"]
    run = wait_for(lambda: _started_run(url, BRIDGE_JOB), 90, "a STARTED bridge run")
    bridge_pid = wait_for(lambda: read_live_pid(home, "bridge"), 60, "the bridge pid file")
    assert _set_sensor(url, on=False) == "STOPPED"
    stopped_at = time.time()
    try:
        # A tick that started before the stop still finishes and may request a run (the watchdog saw the
        # bridge's run as it was then): wait for it to end, and stop its run too. A tick's start is read
        # before the stop is seen, hence 1 s of grace; the watchdog ticks every 15 s, so a NEW tick is later.
        ticks = wait_for(lambda: (t := _watchdog_ticks(url)) and all(x["status"] != "STARTED" for x in t) and t,
                         60, "the watchdog tick in flight at the stop finishing")
        late = [x for x in ticks if x["timestamp"] >= stopped_at + 1.0 and x["runIds"]]
        assert not late, f"the watchdog requested runs after it was stopped: {late}"
        queued_in_flight = {r for x in ticks for r in x["runIds"] if x["timestamp"] < stopped_at + 1.0}
        for active in _runs(url, BRIDGE_JOB, ACTIVE):
            assert active["runId"] == run["runId"] or active["runId"] in queued_in_flight, f"a bridge run not from before the stop: {active}"
            result = _q(url, """mutation($id: String!) { terminateRun(runId: $id) { __typename } }""", id=active["runId"])
            assert result["terminateRun"]["__typename"] == "TerminateRunSuccess"
        wait_for(lambda: not pid_alive(bridge_pid), 90, "the bridge process exiting")
        assert not pidfile_path(home, "bridge").exists(), "bridge did not shut down cleanly (pid file left behind)"
        wait_for(lambda: any(r["runId"] == run["runId"] for r in _runs(url, BRIDGE_JOB, ["CANCELED"])), 60,
                 "the bridge run becoming CANCELED")
        wait_for(lambda: _runs(url, BRIDGE_JOB, ACTIVE) == [], 60, "every bridge run from before the stop ending")
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < QUIET_WINDOW_S:
            assert _runs(url, BRIDGE_JOB, ACTIVE) == [], "a bridge run was started with the sensor off"
            assert read_live_pid(home, "bridge") is None
            time.sleep(2)
        assert read_live_pid(home, "consumer") is not None  # the other service is untouched
    finally:
        assert _set_sensor(url, on=True) == "RUNNING"
        sensor_on = time.monotonic()
    wait_for(lambda: _runs(url, BRIDGE_JOB, ACTIVE), QUIET_WINDOW_S, "a bridge run within the quiet window once the sensor is on",
             interval_s=1)
    print(f"\nbridge run requested {time.monotonic() - sensor_on:.0f} s after the sensor was turned on")
    new_pid = wait_for(lambda: read_live_pid(home, "bridge"), 90, "the bridge back after the sensor is on")
    assert new_pid != bridge_pid


def test_sigkilled_run_worker_takes_its_service_along_and_is_replaced(dev_platform: dict) -> None:
    """SIGKILL the consumer's run worker: the consumer exits (no orphan) and a new run is up within a minute."""
    url, home = dev_platform["url"], dev_platform["home"]
    run = wait_for(lambda: _started_run(url, "kafka_postgres_consumer_service"), 90, "a STARTED consumer run")
    tags = {t["key"]: t["value"] for t in run["tags"]}
    worker = int(wait_for(lambda: tags.get(WORKER_PID_TAG), 5, "the worker pid tag"))
    consumer = wait_for(lambda: read_live_pid(home, "consumer"), 60, "the consumer pid file")
    os.kill(worker, signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: not pid_alive(consumer), 30, "the orphaned consumer exiting")
    replacement = wait_for(lambda: (p := read_live_pid(home, "consumer")) and p != consumer and p, 90, "a new consumer")
    assert time.monotonic() - killed < 60, f"consumer back after {time.monotonic() - killed:.0f} s"
    assert replacement != consumer
    assert _q(url, """query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }""", id=run["runId"])["runOrError"]["status"] == "FAILURE"


def test_a_frozen_consumer_is_replaced_and_nothing_is_lost_or_doubled(dev_platform: dict, tmp_path: Path) -> None:
    """A fleet publishes 300 msg/s for 35 s; 5 s in, the consumer is SIGSTOPped (alive, no progress, records
    waiting). The watchdog kills it once IOT_SERVICE_STALL_TIMEOUT_S (20 s here) has passed, tags its run
    with the reason, and a new consumer run (tagged with why) takes over; `verify` against the fleet's
    summary then finds nothing lost and nothing stored twice."""
    url, home, env = dev_platform["url"], dev_platform["home"], dev_platform["env"]
    consumer = wait_for(lambda: read_live_pid(home, "consumer"), 90, "the consumer pid file")
    old_run = wait_for(lambda: _started_run(url, "kafka_postgres_consumer_service"), 90, "a STARTED consumer run")
    summary = tmp_path / "fleet.json"
    fleet = subprocess.Popen(
        [sys.executable, "-m", "iot_platform.cli", "simulate", "--tenants", "2", "--projects", "2", "--devices", "5",
         "--rate", "300", "--duration", "35", "--summary", str(summary), "--quiet"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        time.sleep(5)
        os.kill(consumer, signal.SIGSTOP)
        frozen_at = time.monotonic()
        replacement = wait_for(lambda: (p := read_live_pid(home, "consumer")) and p != consumer and p, 180, "a replacement consumer")
        replaced_after = time.monotonic() - frozen_at
        assert not pid_alive(consumer), "the frozen consumer was killed"
        assert fleet.wait(120) == 0, fleet.stderr.read().decode() if fleet.stderr else ""
    finally:
        if pid_alive(consumer):
            os.kill(consumer, signal.SIGCONT)
        if fleet.poll() is None:
            fleet.kill()
    assert 18 <= replaced_after < 150, f"replaced {replaced_after:.0f} s after the freeze"
    runs = {r["runId"]: {t["key"]: t["value"] for t in r["tags"]}
            for r in _runs(url, "kafka_postgres_consumer_service", ["FAILURE", "STARTED", "QUEUED", "STARTING"])}
    assert runs[old_run["runId"]][STALLED_TAG].startswith("stalled: no progress report for"), runs[old_run["runId"]]
    assert any(tags.get(RELAUNCH_TAG, "").startswith(f"replaces run {old_run['runId']}") for tags in runs.values()), runs
    verify = run_cli(env, "verify", "--expect", str(summary), "--wait", "120", "--json", timeout=300)
    report = json.loads(verify.stdout)
    assert verify.returncode == 0 and report["totals"]["lost"] == 0 and report["totals"]["duplicates"] == 0, report["totals"]
    assert report["expected"]["messages"] >= 9_000 and report["totals"]["stored"] == report["expected"]["messages"]
    print(f"\nconsumer frozen, replaced after {replaced_after:.0f} s (pid {consumer} -> {replacement}); "
          f"{report['totals']['stored']} messages stored once, 0 lost")


def _replica_runs(url: str, job: str, statuses: list[str]) -> dict[str, str]:
    """Replica tag -> run id of the runs of ``job`` in ``statuses``."""
    return {tags[REPLICA_TAG]: run["runId"] for run in _runs(url, job, statuses)
            if REPLICA_TAG in (tags := {t["key"]: t["value"] for t in run["tags"]})}


def test_two_consumer_replicas_run_as_two_runs_and_a_killed_one_comes_back_as_itself(dev_platform: dict) -> None:
    """`IOT_CONSUMER_REPLICAS=2 dev up` on the running platform: the watchdog adds consumer-1 as a run of its
    own beside consumer-0, which keeps its run. The SIGKILLed consumer-1 comes back as consumer-1 (a new
    run, its pid file). Back to 1: consumer-1's run is terminated, consumer-0 still has the same run."""
    url, home, env = dev_platform["url"], dev_platform["home"], dev_platform["env"]
    before = wait_for(lambda: _replica_runs(url, CONSUMER_JOB, ["STARTED"]).get("consumer-0"), 90, "a STARTED consumer-0 run")
    began = time.monotonic()
    try:
        scaled = run_cli({**env, "IOT_CONSUMER_REPLICAS": "2"}, "dev", "up", "--no-demo", timeout=300)
        assert scaled.returncode == 0 and "consumer: 1 -> 2 replicas" in scaled.stderr, scaled.stderr
        runs = wait_for(lambda: r if len(r := _replica_runs(url, CONSUMER_JOB, ["STARTED"])) == 2 else None, 60,
                        "two STARTED consumer runs")
        assert runs["consumer-0"] == before and runs["consumer-1"] != before
        scaled_after = time.monotonic() - began
        killed = read_live_pid(home, "consumer-1")
        assert killed is not None and killed != read_live_pid(home, "consumer")
        os.kill(killed, signal.SIGKILL)
        began = time.monotonic()
        wait_for(lambda: (p := read_live_pid(home, "consumer-1")) and p != killed, 120, "consumer-1 back under its identity")
        back_after = time.monotonic() - began
        again = _replica_runs(url, CONSUMER_JOB, ["STARTED"])
        assert again["consumer-0"] == before and again["consumer-1"] not in (before, runs["consumer-1"])
    finally:
        down = run_cli({**env, "IOT_CONSUMER_REPLICAS": "1"}, "dev", "up", "--no-demo", timeout=300)
    assert down.returncode == 0 and "consumer: 2 -> 1 replicas" in down.stderr, down.stderr
    began = time.monotonic()
    wait_for(lambda: again["consumer-1"] in _replica_runs(url, CONSUMER_JOB, ["CANCELED"]).values(), 90,
             "consumer-1's run terminated")
    wait_for(lambda: read_live_pid(home, "consumer-1") is None, 30, "consumer-1 exited")
    assert _replica_runs(url, CONSUMER_JOB, ["STARTED"]) == {"consumer-0": before}
    print(f"\nconsumer-1 up {scaled_after:.0f} s after `dev up`, back {back_after:.0f} s after SIGKILL, "
          f"terminated {time.monotonic() - began:.0f} s after scaling down; consumer-0 kept run {before}")


def test_a_second_bridge_replica_is_added_and_scaled_away_only_through_its_drain(dev_platform: dict) -> None:
    """`IOT_BRIDGE_REPLICAS=2 dev up` on the running platform adds bridge-1 (MQTT client
    iot-platform-bridge-1) as a run of its own beside bridge-0, which keeps its run. Back to 1: the
    watchdog does not terminate bridge-1 but requests a drain run (`bridge --drain`), which ends once
    bridge-1's MQTT session has ended; bridge-1's serving run then ends and its drained mark stays, so no
    session is left holding messages for an identity that will not return. bridge-0 keeps its run."""
    url, home, env = dev_platform["url"], dev_platform["home"], dev_platform["env"]
    before = wait_for(lambda: _replica_runs(url, BRIDGE_JOB, ["STARTED"]).get("bridge-0"), 90, "a STARTED bridge-0 run")
    identity = "iot-platform-bridge-1"  # IOT_MQTT_CLIENT_ID's default, replica 1
    try:
        scaled = run_cli({**env, "IOT_BRIDGE_REPLICAS": "2"}, "dev", "up", "--no-demo", timeout=300)
        assert scaled.returncode == 0 and "bridge: 1 -> 2 replicas" in scaled.stderr, scaled.stderr
        runs = wait_for(lambda: r if len(r := _replica_runs(url, BRIDGE_JOB, ["STARTED"])) == 2 else None, 60,
                        "two STARTED bridge runs")
        assert runs["bridge-0"] == before
        wait_for(lambda: read_live_pid(home, "bridge-1"), 60, "bridge-1's pid file")
        assert drained(home, identity) is None
    finally:
        down = run_cli({**env, "IOT_BRIDGE_REPLICAS": "1"}, "dev", "up", "--no-demo", timeout=300)
    assert down.returncode == 0 and "bridge: 2 -> 1 replicas" in down.stderr, down.stderr
    began = time.monotonic()
    drain = wait_for(lambda: next((run for run in _runs(url, BRIDGE_DRAIN_JOB, ["SUCCESS"])
                                   if {"key": DRAIN_TAG, "value": "bridge-1"} in run["tags"]), None), 120,
                     "a successful drain run of bridge-1")
    assert _runs(url, BRIDGE_DRAIN_JOB, ["FAILURE"]) == []
    mark = drained(home, identity)
    assert mark is not None and mark["identity"] == identity
    wait_for(lambda: runs["bridge-1"] not in _replica_runs(url, BRIDGE_JOB, ACTIVE).values(), 60, "bridge-1's run ended")
    wait_for(lambda: read_live_pid(home, "bridge-1") is None, 30, "bridge-1 exited")
    assert _replica_runs(url, BRIDGE_JOB, ["STARTED"]) == {"bridge-0": before}
    print(f"\nbridge-1 drained by run {drain['runId']} and gone {time.monotonic() - began:.0f} s after scaling down; "
          f"mark {mark}; bridge-0 kept run {before}")

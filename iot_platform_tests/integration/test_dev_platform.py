"""`iot-platform dev up` on real servers: the whole platform, supervised by Dagster, end to end.

The platform is the shared `dev_platform` fixture (integration/conftest.py); `dev down` at the end
must leave none of its processes alive.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid

import paho.mqtt.client as mqtt
import psycopg2
import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from iot_platform.stack.dagster_processes import graphql
from iot_platform.stack.process import pid_alive
from iot_platform_tests.helpers import run_cli, wait_for

pytestmark = pytest.mark.integration

RUNS_QUERY = """
query { runsOrError(filter: {statuses: [STARTED]}) { ... on Runs { results { runId jobName status } } } }
"""


MATERIALIZATIONS_QUERY = """
query ($keys: [AssetKeyInput!]) { assetNodes(assetKeys: $keys) { assetKey { path } assetMaterializations(limit: 20) { runId } } }
"""


def _register(env: dict[str, str], tenant: str, project: str) -> dict[str, str]:
    """A device of ``tenant``/``project``, registered as a user would (`devices add --json`)."""
    run_cli(env, "tenants", "add", tenant)  # may exist already (another test): then it says so and exits 1
    added = run_cli(env, "devices", "add", tenant, project, f"d{uuid.uuid4().hex[:8]}", "--json")
    assert added.returncode == 0, added.stderr
    return json.loads(added.stdout)


def _publish(env: dict[str, str], topic: str, payload: bytes) -> None:
    """Publish as a registered device of the topic's tenant and project, over TLS (what `devices add` printed)."""
    tenant, project = topic.split("/")[4:6]
    device = _register(env, tenant, project)
    host, port = device["mqtt_url"].removeprefix("mqtts://").split(":")
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device["client_id"], protocol=mqtt.MQTTv5)
    client.username_pw_set(device["username"], device["password"])
    client.tls_set(ca_certs=device["ca_file"])
    client.connect(host, int(port))
    client.loop_start()
    try:
        info = client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout=10)
        assert info.is_published()
    finally:
        client.loop_stop()
        client.disconnect()


def _stored(env: dict[str, str], payload: bytes) -> bool:
    dsn = f"postgresql://iot:iot@127.0.0.1:{env['IOT_PG_PORT']}/iot?connect_timeout=5"
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM iot.messages WHERE payload = %s", (payload,))
        found = cur.fetchone()[0] == 1
    conn.close()
    return found


def test_status_shows_every_endpoint_and_pid(dev_platform: dict) -> None:
    """status --json has the docs/design.md §3.1 shape, with live pids for every part and both services, and per replica."""
    env = dev_platform["env"]
    parts = ("postgres", "kafka", "mosquitto", "dagster_webserver", "dagster_daemon", "bridge", "consumer")

    def status_with_every_part_alive() -> dict | None:
        # Other tests restart services on this shared platform: give the watchdog time to bring them back.
        status = json.loads(run_cli(env, "dev", "status", "--json").stdout)
        return status if all(pid_alive(status["pids"].get(name)) for name in parts) else None

    status = wait_for(status_with_every_part_alive, 90, "every part of the platform running")
    assert status["mqtt"]["port"] == int(env["IOT_MQTT_URL"].rsplit(":", 1)[1])
    assert status["kafka"]["bootstrap"] == env["IOT_KAFKA_BOOTSTRAP"]
    assert f":{env['IOT_PG_PORT']}/iot" in status["postgres"]["dsn"]
    assert status["dagster"]["url"].endswith(f":{env['IOT_DAGSTER_PORT']}")
    # One replica of each service and one Kafka broker by default: replica 0 is the pid under the old name.
    assert status["replicas"] == {name: [status["pids"][name]] for name in ("bridge", "consumer", "kafka")}
    assert status["kafka"]["brokers"] == 1


def test_status_lists_the_pid_of_every_replica_index_below_the_setting(dev_platform: dict) -> None:
    """`dev status --json` reads a pid file per replica index < IOT_BRIDGE_REPLICAS / IOT_CONSUMER_REPLICAS:
    a live one gives its pid, a missing or stale one null; `pids` keeps replica 0 under the old names."""
    env, home = dev_platform["env"], dev_platform["home"]
    run = home / "run"
    replica = subprocess.Popen(["sleep", "120"])  # stands in for a live consumer replica 1
    gone = subprocess.Popen(["true"])
    gone.wait()
    files = {run / "consumer-1.pid": replica.pid, run / "bridge-2.pid": gone.pid, run / "consumer-5.pid": replica.pid}
    try:
        for path, pid in files.items():
            path.write_text(f"{pid}\n")
        wide = {**env, "IOT_BRIDGE_REPLICAS": "3", "IOT_CONSUMER_REPLICAS": "2"}
        status = wait_for(lambda: (s := json.loads(run_cli(wide, "dev", "status", "--json").stdout))["pids"]["bridge"]
                          and s["pids"]["consumer"] and s, 90, "both services running")
        assert status["replicas"]["bridge"] == [status["pids"]["bridge"], None, None]  # 1: no file, 2: stale
        assert status["replicas"]["consumer"] == [status["pids"]["consumer"], replica.pid]  # index 5 >= 2: not read
        assert status["replicas"]["kafka"] == [status["pids"]["kafka"]]
        text = run_cli(wide, "dev", "status").stdout
        assert f"consumer={status['pids']['consumer']},{replica.pid}" in text, text
    finally:
        replica.kill()
        replica.wait()
        for path in files:
            path.unlink(missing_ok=True)


def test_dev_up_leaves_schema_roles_and_dashboards_materialized(dev_platform: dict) -> None:
    """Right after `dev up`, Dagster shows iot_schema (reported by dev up, without a run), tenant_roles and
    grafana_dashboards (one serving_refresh run) materialized, and the dashboards' files exist."""
    names = ("iot_schema", "tenant_roles", "grafana_dashboards")
    result = graphql(dev_platform["url"], MATERIALIZATIONS_QUERY, {"keys": [{"path": [name]} for name in names]})
    found = {node["assetKey"]["path"][0]: node["assetMaterializations"] for node in result["data"]["assetNodes"]}
    runs = {name: {m["runId"] for m in materializations} for name, materializations in found.items()}
    assert set(runs) == set(names), result
    assert "" in runs["iot_schema"], runs  # reported without a run: dev up's (the schedule's have a run)
    assert (runs["tenant_roles"] & runs["grafana_dashboards"]) - {""}, runs  # one run materialized both
    assert (dev_platform["home"] / "grafana" / "provisioning" / "dashboards" / "tenant-telemetry.json").is_file()


def test_live_rollup_shows_the_current_hour_within_seconds(dev_platform: dict) -> None:
    """A message published now is counted in iot.rollup_hourly_live, in its (not rolled up) hour, within seconds."""
    env, tenant = dev_platform["env"], f"live{uuid.uuid4().hex[:8]}"
    _publish(env, f"mtic/msg/client/realtime/{tenant}/p1/telemetry", json.dumps({"device_id": "d1", "temperature": 20.5}).encode())
    dsn = f"postgresql://iot:iot@127.0.0.1:{env['IOT_PG_PORT']}/iot?connect_timeout=5"

    def live_rows() -> list[tuple]:
        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT r.hour = date_trunc('hour', m.received_at, 'UTC'), r.message_count,"
                        " r.hour IN (SELECT hour FROM iot.rollup_hours)"
                        " FROM iot.rollup_hourly_live r JOIN iot.messages m USING (tenant_id) WHERE tenant_id = %s", (tenant,))
            rows = cur.fetchall()
        conn.close()
        return rows

    assert wait_for(live_rows, 60, "the message in the live rollup") == [(True, 1, False)]


def test_topics_exist_with_partitions_and_retention(dev_platform: dict) -> None:
    """An AdminClient sees iot-messages (6 partitions, 72 h) and iot-messages-dlq."""
    admin = AdminClient({"bootstrap.servers": dev_platform["env"]["IOT_KAFKA_BOOTSTRAP"]})
    topics = admin.list_topics(timeout=10).topics
    assert len(topics["iot-messages"].partitions) == 6
    assert "iot-messages-dlq" in topics
    resource = ConfigResource(ConfigResource.Type.TOPIC, "iot-messages")
    assert admin.describe_configs([resource])[resource].result(timeout=10)["retention.ms"].value == str(72 * 3600 * 1000)


def test_both_services_run_under_dagster_and_data_flows(dev_platform: dict) -> None:
    """Both service runs are STARTED; a message published to MQTT appears in iot.messages."""
    env = dev_platform["env"]
    url = dev_platform["status"]["dagster"]["url"]
    services = {"mqtt_kafka_bridge_service", "kafka_postgres_consumer_service"}
    wait_for(
        lambda: services <= {r["jobName"] for r in graphql(url, RUNS_QUERY)["data"]["runsOrError"]["results"]},
        90,
        "both service runs STARTED",
    )
    payload = json.dumps({"msg_id": uuid.uuid4().hex, "device_id": "d1", "temperature": 21.5}).encode()
    _publish(env, "mtic/msg/client/realtime/1968193631353446400/1968193691042586624/telemetry", payload)
    wait_for(lambda: _stored(env, payload), 60, "the message reaching iot.messages")


def test_killed_bridge_is_back_within_a_minute_and_data_flows_again(dev_platform: dict) -> None:
    """SIGKILL the bridge process: the watchdog relaunches it within 60 s, and new messages arrive."""
    env, home = dev_platform["env"], dev_platform["home"]
    from iot_platform.observability.pidfile import read_live_pid

    old = read_live_pid(home, "bridge")
    assert old
    os.kill(old, signal.SIGKILL)
    killed_at = time.monotonic()
    new = wait_for(lambda: (p := read_live_pid(home, "bridge")) and p != old and p, 90, "a new bridge process")
    back_after = time.monotonic() - killed_at
    assert back_after < 60, f"bridge came back after {back_after:.0f} s"
    payload = json.dumps({"msg_id": uuid.uuid4().hex, "device_id": "d2", "temperature": 19.0}).encode()
    _publish(env, "mtic/msg/client/realtime/tenantA/projectB/telemetry", payload)
    wait_for(lambda: _stored(env, payload), 60, "a message after the restart reaching iot.messages")
    assert new != old


def test_simulator_run_by_hand_finds_the_platform_credentials_and_publishes_as_gateways(dev_platform: dict) -> None:
    """As after `make run`: `iot-platform simulate` with only IOT_HOME and ports set finds the admin
    credentials and the CA in IOT_HOME, registers one gateway device per project (again on a re-run,
    by rotation), publishes over TLS, and the messages are stored."""
    env = dev_platform["env"]
    for _ in range(2):
        run = run_cli(env, "simulate", "--tenants", "1", "--projects", "2", "--devices", "2", "--count", "40",
                      "--rate", "0", "--quiet", "--tenant-prefix", "demo")
        assert run.returncode == 0, run.stderr[-2000:]
        assert json.loads(run.stdout)["acked"] == {"good": 40}
    listed = json.loads(run_cli(env, "devices", "list", "--tenant", "demo00", "--json").stdout)
    assert [(d["project"], d["device"], d["status"]) for d in listed] == [
        ("project00", "sim-gateway", "enabled"), ("project01", "sim-gateway", "enabled")]

    def stored() -> bool:
        dsn = f"postgresql://iot:iot@127.0.0.1:{env['IOT_PG_PORT']}/iot?connect_timeout=5"
        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM iot.messages WHERE tenant_id = 'demo00'")
            found = cur.fetchone()[0] >= 80
        conn.close()
        return found

    wait_for(stored, 60, "the simulated messages reaching iot.messages")


def test_dev_up_on_a_running_home_says_so_and_starts_nothing(dev_platform: dict) -> None:
    """A second `dev up` on this home starts no second platform: it says the platform is running and
    leaves every pid as it was. With state.json gone, the Dagster daemon's platform lock still tells:
    `up` refuses, naming the daemon's pid."""
    env, home = dev_platform["env"], dev_platform["home"]
    state = home / "state.json"
    before = json.loads(state.read_text())["pids"]
    again = run_cli(env, "dev", "up", "--no-demo", timeout=240)
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stderr and "starting ..." not in again.stderr, again.stderr
    assert json.loads(state.read_text())["pids"] == before
    saved = state.read_text()
    state.unlink()
    try:
        blind = run_cli(env, "dev", "up", "--no-demo", timeout=120)
    finally:
        state.write_text(saved)
    assert blind.returncode == 1, blind.stderr
    assert "already running" in blind.stderr and f"pid {before['dagster_daemon']}" in blind.stderr, blind.stderr
    assert "starting ..." not in blind.stderr and "Traceback" not in blind.stderr

"""Three bridge replicas on one MQTT 5 shared subscription, one SIGKILLed and restarted under the same
identity, one scaled away with a drain, while the fleet publishes at a steady rate (docs/design.md §9).

Invariant (through `iot-platform verify`'s report): lost = 0, duplicates in iot.messages = 0, dead
letters = exactly the bad messages sent; the drained replica exits 0 and leaves no session behind.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iot_platform.settings import Settings
from iot_platform.storage.migrate import apply_migrations
from iot_platform_tests.faults.harness import (
    Publisher,
    ServiceProcess,
    assert_invariants,
    fleet_spec,
    settle_and_verify,
    stored_count,
    wait_pipeline_ready,
)
from iot_platform_tests.helpers import run_cli, wait_for
from iot_platform_tests.integration.test_bridge_replicas import session_exists

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

COUNT, RATE = 30_000, 1_500


def replica(settings: Settings, index: int, log_root: Path) -> ServiceProcess:
    return ServiceProcess("bridge", settings, log_root / f"replica-{index}", {
        "IOT_REPLICA_INDEX": str(index), "IOT_BRIDGE_REPLICAS": "3", "IOT_BRIDGE_ID": f"replica-{index}",
    })


def logged(service: ServiceProcess, message: str) -> list[dict[str, object]]:
    lines = []
    for raw in service.log_path.read_text(errors="replace").splitlines():
        try:
            line = json.loads(raw)
        except json.JSONDecodeError:
            continue
        if line.get("msg") == message:
            lines.append(line)
    return lines


def test_three_bridges_one_sigkilled_and_restarted_one_drained_lose_and_double_nothing(settings: Settings, tmp_path: Path) -> None:
    """30,000 messages at 1,500 msg/s to three bridge replicas and one consumer. Once a fifth is stored,
    replica 1 is SIGKILLed; the broker keeps handing it every third message, which wait in its session
    until it restarts with the same identity, once 2,250 more messages are stored (a few seconds). Once half is stored, replica 2 is drained
    (`bridge --replica 2 --drain` returns 0, the replica exits 0, no session is left for it) and the
    other two take the rest. Nothing is lost and nothing is stored twice."""
    apply_migrations(settings)
    logs = tmp_path / "logs"
    bridges = [replica(settings, index, logs) for index in range(3)]
    consumer = ServiceProcess("consumer", settings, logs)
    try:
        for service in (*bridges, consumer):
            service.start()
        for bridge in bridges:
            wait_for(lambda b=bridge: logged(b, "mqtt subscribed"), 60, f"{bridge.log_dir.name} subscribed", interval_s=0.2)
        wait_pipeline_ready(settings, timeout_s=90, services=(*bridges, consumer))
        spec = fleet_spec(settings, bad_fraction=0.01)
        publisher = Publisher(settings, spec, count=COUNT, rate=RATE)
        publisher.start()

        wait_for(lambda: stored_count(settings, spec.run_id) >= COUNT // 5, 90, "a fifth stored", interval_s=0.2)
        bridges[1].kill()
        wait_for(lambda: not publisher.is_alive() or stored_count(settings, spec.run_id) >= COUNT // 5 + 3 * RATE // 2,
                 30, "traffic while replica 1 is dead", interval_s=0.2)
        assert publisher.is_alive(), "replica 1 must come back while messages still flow"
        bridges[1].start()
        wait_for(lambda: len(logged(bridges[1], "mqtt connected")) == 2, 30, "replica 1 back", interval_s=0.2)
        assert logged(bridges[1], "mqtt connected")[-1]["session_present"], "replica 1 resumes its session"

        wait_for(lambda: stored_count(settings, spec.run_id) >= COUNT // 2, 90, "half stored", interval_s=0.2)
        drained = run_cli(settings.child_env(), "bridge", "--replica", "2", "--drain", "--timeout", "120", timeout=150)
        assert drained.returncode == 0, drained.stderr[-3000:]
        assert publisher.is_alive(), "the drain must end while messages still flow"
        assert bridges[2].process is not None and bridges[2].process.wait(30) == 0, bridges[2].log_tail()

        result = publisher.finish(timeout_s=240)
        report = settle_and_verify(settings, result, timeout_s=180)
        for index in (0, 1):
            assert bridges[index].alive(), bridges[index].log_tail()
    finally:
        for service in (*bridges, consumer):
            service.stop(timeout_s=15)
    assert_invariants(report, result)
    assert not session_exists(settings, f"{settings.mqtt_client_id}-2")
    (ended,) = logged(bridges[2], "drained: session ended")
    print(f"\nreplica 2 drained after {ended['acked']} acks in {ended['probes']} probes; "
          f"stored {report['totals']['stored']}, lost {report['totals']['lost']}, duplicates {report['totals']['duplicates']}")

"""Publish a simulated fleet's telemetry to MQTT at QoS 1, paced and bounded in flight.

Credentials: ``credentials_for(tenant, project)`` names the broker client that publishes a message
of that project (one connection per distinct client: a per-project gateway device for the demo, one
namespace-wide test publisher in the tests). A message the broker refuses (its ACL) counts as
*refused*, never as acked.

Guarantee: a message counts as *acked* only when the broker's PUBACK arrived; paho keeps every
unacked message and resends it after a reconnect, so a broker restart delays but never drops it.
In flight (published, not yet acked) is bounded by ``max_outstanding`` (below paho's 65,535 message
ids); the publisher waits for acks rather than growing memory. The returned summary tells
`iot-platform verify` what to expect: per-category counts and each device's last seq.

One thread publishes and serves every connection (network_loop.py): paho's thread per connection
cost more CPU than the platform's bridge at 2,000 msg/s.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import TextIO

import paho.mqtt.client as mqtt

from iot_platform.access.connection import MqttCredentials, configure
from iot_platform.devices.fleet import GOOD, Fleet, FleetSpec
from iot_platform.devices.network_loop import NetworkLoop
from iot_platform.devices.pacing import TokenBucket
from iot_platform.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class SimulationResult:
    run_id: str
    sent: Counter[str] = field(default_factory=Counter)
    acked: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)  # PUBACK with a failure reason (not authorised)
    elapsed_s: float = 0.0
    last_seq: dict[str, tuple[str, int]] = field(default_factory=dict)  # device -> (tenant, seq)

    @property
    def unacked(self) -> int:
        return sum(self.sent.values()) - sum(self.acked.values()) - sum(self.refused.values())

    @property
    def bad_acked(self) -> int:
        return sum(n for category, n in self.acked.items() if category != GOOD)

    def to_json(self) -> dict[str, object]:
        return {
            "run_id": self.run_id,
            "sent": dict(self.sent),
            "acked": dict(self.acked),
            "refused": dict(self.refused),
            "unacked": self.unacked,
            "elapsed_s": round(self.elapsed_s, 3),
            "rate_msg_s": round(sum(self.acked.values()) / self.elapsed_s, 1) if self.elapsed_s else 0.0,
            "devices": {d: {"tenant_id": t, "last_seq": s} for d, (t, s) in sorted(self.last_seq.items())},
        }


def new_run_id() -> str:
    return uuid.uuid4().hex[:10]


MAX_OUTSTANDING = 65_534  # unacked publishes per client: paho stalls beyond 65,535
Ack = tuple[int, int, bool]  # connection index, message id, refused
_TURN_S = 0.005  # while the rate allows nothing, wait this long: bursts of ~10 messages at 2,000 msg/s, not one


def _connect(
    settings: Settings, credentials: MqttCredentials, client_id: str, index: int, acks: deque[Ack], timeout_s: float
) -> mqtt.Client:
    connected: list[mqtt.ReasonCode] = []
    # MQTT 5: a PUBACK carries a reason code, so a publish the ACL refuses (0x87) is told apart.
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=credentials.client_id or client_id, protocol=mqtt.MQTTv5)
    configure(client, settings, credentials)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect_timeout = timeout_s
    client.on_publish = lambda _c, _u, mid, rc, _p: acks.append((index, mid, rc.is_failure))
    client.on_connect = lambda _c, _u, _f, rc, _p: connected.append(rc)
    client.connect(settings.mqtt_host, settings.mqtt_port, keepalive=settings.mqtt_keepalive_s)  # OSError: unreachable
    loop = NetworkLoop([client])
    deadline = time.monotonic() + timeout_s
    while not connected and time.monotonic() < deadline:
        loop.serve(0.05)
    if not connected or connected[0].is_failure:
        client.disconnect()
        why = f"refused {credentials.username!r}: {connected[0]}" if connected else f"did not accept a connection in {timeout_s} s"
        raise ConnectionError(f"MQTT broker {settings.mqtt_url} {why}")
    return client


def simulate(
    settings: Settings,
    spec: FleetSpec,
    *,
    credentials_for: Callable[[str, str], MqttCredentials],
    rate: float | None,
    duration_s: float | None = None,
    count: int | None = None,
    max_outstanding: int = 20_000,
    drain_timeout_s: float = 60.0,
    stop: threading.Event | None = None,
    progress: TextIO | None = None,
) -> SimulationResult:
    """Publish until ``count`` messages, ``duration_s`` or ``stop``; then wait for outstanding acks."""
    if not 0 < max_outstanding <= MAX_OUTSTANDING:
        raise ValueError(f"max_outstanding must be within 1..{MAX_OUTSTANDING} (paho stalls beyond 65,535)")
    stop = stop or threading.Event()
    fleet = Fleet(spec)
    result = SimulationResult(run_id=spec.run_id)
    acks: deque[Ack] = deque()
    clients: list[mqtt.Client] = []
    by_user: dict[str, int] = {}
    route: dict[tuple[str, str], mqtt.Client] = {}
    for tenant_id, project_id in fleet.projects:
        credentials = credentials_for(tenant_id, project_id)
        if credentials.username not in by_user:
            by_user[credentials.username] = len(clients)
            client_id = f"sim-{spec.run_id}-{len(clients)}"
            try:
                clients.append(_connect(settings, credentials, client_id, len(clients), acks, settings.mqtt_connect_timeout_s))
            except BaseException:
                _close(clients)
                raise
        route[(tenant_id, project_id)] = clients[by_user[credentials.username]]
    index_of = {id(c): i for i, c in enumerate(clients)}
    pending: dict[tuple[int, int], str] = {}
    bucket = TokenBucket(rate)
    network = NetworkLoop(clients)

    def drain(block_s: float = 0.0) -> None:
        """Serve the connections (up to ``block_s`` waiting for them) and count the PUBACKs that came."""
        network.serve(block_s)
        while acks:
            index, mid, refused = acks.popleft()
            category = pending.pop((index, mid), None)
            if category is not None:
                (result.refused if refused else result.acked)[category] += 1

    started = time.monotonic()
    deadline = started + duration_s if duration_s is not None else None
    next_report = started
    try:
        while not stop.is_set():
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            if count is not None and sum(result.sent.values()) >= count:
                break
            drain()
            if len(pending) >= max_outstanding:
                drain(block_s=0.05)
                continue
            budget = min(bucket.take(now, 256), max_outstanding - len(pending))
            if count is not None:
                budget = min(budget, count - sum(result.sent.values()))
            if budget <= 0:
                time.sleep(min(max(bucket.wait_s(), _TURN_S), 0.05))
                continue
            now_ms = time.time_ns() // 1_000_000
            for _ in range(budget):
                message = fleet.next_message(now_ms)
                client = route[(message.tenant_id, message.project_id)]
                info = client.publish(message.topic, message.payload, qos=1)
                pending[(index_of[id(client)], info.mid)] = message.category
                result.sent[message.category] += 1
                result.last_seq[message.device_id] = (message.tenant_id, message.seq)
            if progress is not None and now >= next_report:
                next_report = now + 0.5
                _report(progress, result, len(pending), now - started)
        wait_until = time.monotonic() + drain_timeout_s
        while pending and time.monotonic() < wait_until:
            drain(block_s=0.1)
            if progress is not None and time.monotonic() >= next_report:
                next_report = time.monotonic() + 0.5
                _report(progress, result, len(pending), time.monotonic() - started)
    finally:
        result.elapsed_s = time.monotonic() - started
        _close(clients)
        if progress is not None:
            _report(progress, result, len(pending), result.elapsed_s)
            progress.write("\n")
    if pending:
        log.warning("simulator stopped with unacked messages", extra={"unacked": len(pending)})
    return result


def _close(clients: list[mqtt.Client]) -> None:
    for client in clients:
        client.disconnect()  # written at once (no network thread); the client closes its socket after it


def _report(out: TextIO, result: SimulationResult, in_flight: int, elapsed_s: float) -> None:
    sent, acked = sum(result.sent.values()), sum(result.acked.values())
    rate = acked / elapsed_s if elapsed_s > 0 else 0.0
    out.write(f"\rsent {sent:>10,}  acked {acked:>10,}  in flight {in_flight:>6,}  {rate:>9,.0f} msg/s  {elapsed_s:6.1f} s")
    out.flush()


DEMO_FLEET = {"tenants": 2, "projects": 2, "devices": 5, "rate": 20.0}


def write_summary(result: SimulationResult, path: str) -> None:
    with open(path, "w", encoding="utf-8") as out:
        json.dump(result.to_json(), out, indent=1)

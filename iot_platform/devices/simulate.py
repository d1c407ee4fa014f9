"""Publish a simulated fleet's telemetry to MQTT at QoS 1, paced and bounded in flight.

Guarantee: a message counts as *acked* only when the broker's PUBACK arrived; paho keeps every
unacked message and resends it after a reconnect, so a broker restart delays but never drops it.
In flight (published, not yet acked) is bounded by ``max_outstanding`` (below paho's 65,535 message
ids); the publisher waits for acks rather than growing memory. The returned summary tells
`iot-platform verify` what to expect: per-category counts and each device's last seq.
"""

from __future__ import annotations

import json
import logging
import queue
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import TextIO

import paho.mqtt.client as mqtt

from iot_platform.devices.fleet import GOOD, Fleet, FleetSpec
from iot_platform.devices.pacing import TokenBucket
from iot_platform.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class SimulationResult:
    run_id: str
    sent: Counter[str] = field(default_factory=Counter)
    acked: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0
    last_seq: dict[str, tuple[str, int]] = field(default_factory=dict)  # device -> (tenant, seq)

    @property
    def unacked(self) -> int:
        return sum(self.sent.values()) - sum(self.acked.values())

    @property
    def bad_acked(self) -> int:
        return sum(n for category, n in self.acked.items() if category != GOOD)

    def to_json(self) -> dict[str, object]:
        return {
            "run_id": self.run_id,
            "sent": dict(self.sent),
            "acked": dict(self.acked),
            "unacked": self.unacked,
            "elapsed_s": round(self.elapsed_s, 3),
            "rate_msg_s": round(sum(self.acked.values()) / self.elapsed_s, 1) if self.elapsed_s else 0.0,
            "devices": {d: {"tenant_id": t, "last_seq": s} for d, (t, s) in sorted(self.last_seq.items())},
        }


def new_run_id() -> str:
    return uuid.uuid4().hex[:10]


def _connect(settings: Settings, client_id: str, timeout_s: float) -> tuple[mqtt.Client, "queue.SimpleQueue[int]"]:
    acks: queue.SimpleQueue[int] = queue.SimpleQueue()
    connected = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
    if settings.mqtt_username:
        password = settings.mqtt_password.get_secret_value() if settings.mqtt_password else None
        client.username_pw_set(settings.mqtt_username, password)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.reconnect_delay_set(min_delay=0.2, max_delay=2)
    # Called under paho's own lock: only hand the mid over, never take another lock here.
    client.on_publish = lambda _c, _u, mid, _rc, _p: acks.put(mid)
    client.on_connect = lambda _c, _u, _f, rc, _p: connected.set() if not rc.is_failure else None
    client.connect_async(settings.mqtt_host, settings.mqtt_port, keepalive=settings.mqtt_keepalive_s)
    client.loop_start()
    if not connected.wait(timeout_s):
        client.loop_stop()
        raise TimeoutError(f"MQTT broker {settings.mqtt_url} did not accept a connection in {timeout_s} s")
    return client, acks


def simulate(
    settings: Settings,
    spec: FleetSpec,
    *,
    rate: float | None,
    duration_s: float | None = None,
    count: int | None = None,
    max_outstanding: int = 20_000,
    drain_timeout_s: float = 60.0,
    stop: threading.Event | None = None,
    progress: TextIO | None = None,
) -> SimulationResult:
    """Publish until ``count`` messages, ``duration_s`` or ``stop``; then wait for outstanding acks."""
    if not 0 < max_outstanding < 65_535:
        raise ValueError("max_outstanding must be within 1..65534 (paho stalls beyond 65,535)")
    stop = stop or threading.Event()
    fleet = Fleet(spec)
    result = SimulationResult(run_id=spec.run_id)
    client, acks = _connect(settings, f"sim-{spec.run_id}", settings.mqtt_connect_timeout_s)
    pending: dict[int, str] = {}
    bucket = TokenBucket(rate)

    def drain(block_s: float = 0.0) -> None:
        try:
            mid = acks.get(timeout=block_s) if block_s else acks.get_nowait()
            while True:
                category = pending.pop(mid, None)
                if category is not None:
                    result.acked[category] += 1
                mid = acks.get_nowait()
        except queue.Empty:
            return

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
                time.sleep(min(bucket.wait_s(), 0.05))
                continue
            now_ms = time.time_ns() // 1_000_000
            for _ in range(budget):
                message = fleet.next_message(now_ms)
                info = client.publish(message.topic, message.payload, qos=1)
                pending[info.mid] = message.category
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
        client.disconnect()
        client.loop_stop()
        if progress is not None:
            _report(progress, result, len(pending), result.elapsed_s)
            progress.write("\n")
    if pending:
        log.warning("simulator stopped with unacked messages", extra={"unacked": len(pending)})
    return result


def _report(out: TextIO, result: SimulationResult, in_flight: int, elapsed_s: float) -> None:
    sent, acked = sum(result.sent.values()), sum(result.acked.values())
    rate = acked / elapsed_s if elapsed_s > 0 else 0.0
    out.write(f"\rsent {sent:>10,}  acked {acked:>10,}  in flight {in_flight:>6,}  {rate:>9,.0f} msg/s  {elapsed_s:6.1f} s")
    out.flush()


DEMO_FLEET = {"tenants": 2, "projects": 2, "devices": 5, "rate": 20.0}


def run_demo_fleet(settings: Settings, stop: threading.Event | None = None) -> SimulationResult:
    """The small fleet `make run` shows: 2 tenants x 2 projects x 5 devices at 20 msg/s until stopped."""
    spec = FleetSpec(
        tenants=DEMO_FLEET["tenants"],
        projects=DEMO_FLEET["projects"],
        devices=DEMO_FLEET["devices"],
        topic_grammar=settings.mqtt_topic_grammar,
        run_id=new_run_id(),
        max_payload_bytes=settings.max_payload_bytes,
    )
    return simulate(settings, spec, rate=DEMO_FLEET["rate"], stop=stop, progress=sys.stderr if sys.stderr.isatty() else None)


def write_summary(result: SimulationResult, path: str) -> None:
    with open(path, "w", encoding="utf-8") as out:
        json.dump(result.to_json(), out, indent=1)

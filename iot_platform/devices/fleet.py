"""A simulated device fleet: tenants x projects x devices, each emitting numbered JSON telemetry.

Pure: no network import. Every message carries ``msg_id`` (unique across runs), ``device_id``,
``run_id`` and a per-device ``seq`` starting at 1, so that `iot-platform verify` can prove from the
database alone that nothing was lost or duplicated. A seeded fraction of messages is deliberately bad
(a topic outside the grammar, an invalid project id, an oversize payload); bad messages use a seq too,
so a device's good and dead-lettered messages together cover 1..last without a hole.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from iot_platform.devices.device_topics import bad_shape_topic, device_topic

GOOD = "good"
BAD_TOPIC = "bad_topic"
INVALID_ID = "invalid_id"
OVERSIZE = "oversize"
BAD_CATEGORIES = (BAD_TOPIC, INVALID_ID, OVERSIZE)
CATEGORIES = (GOOD, *BAD_CATEGORIES)


@dataclass(frozen=True, slots=True)
class FleetSpec:
    """Shape of a fleet; ``devices`` is per project. ``run_id`` keeps msg_ids unique across runs."""

    tenants: int
    projects: int
    devices: int
    topic_grammar: str
    run_id: str
    bad_fraction: float = 0.0
    max_payload_bytes: int = 900_000
    seed: int = 0
    tenant_prefix: str = "tenant"
    bad_categories: tuple[str, ...] = BAD_CATEGORIES

    def __post_init__(self) -> None:
        if min(self.tenants, self.projects, self.devices) < 1:
            raise ValueError("tenants, projects and devices must each be at least 1")
        if not 0.0 <= self.bad_fraction <= 1.0:
            raise ValueError("bad_fraction must be within [0, 1]")
        if not self.bad_categories or not set(self.bad_categories) <= set(BAD_CATEGORIES):
            raise ValueError(f"bad_categories must be a non-empty subset of {BAD_CATEGORIES}")

    @property
    def size(self) -> int:
        return self.tenants * self.projects * self.devices


@dataclass(frozen=True, slots=True)
class Telemetry:
    """One message ready to publish, with what the simulator expects to become of it."""

    topic: str
    payload: bytes
    category: str
    tenant_id: str
    device_id: str
    seq: int
    project_id: str = ""


@dataclass(slots=True)
class _DeviceState:
    tenant_id: str
    project_id: str
    device_id: str
    seq: int = 0
    temperature: float = 21.0
    humidity: float = 45.0
    battery: float = 100.0
    rssi: int = -60


def iso_ms(epoch_ms: int) -> str:
    """UTC ISO 8601 with milliseconds, the ``ts`` format of every payload."""
    seconds, millis = divmod(epoch_ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


@dataclass
class Fleet:
    """Round-robin over all devices; ``next_message`` advances one device by one reading."""

    spec: FleetSpec
    _devices: list[_DeviceState] = field(init=False)
    _rng: random.Random = field(init=False)
    _cursor: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.spec.seed)
        self._devices = [
            _DeviceState(t, p, f"{t}-{p}-dev{d:04d}", temperature=self._rng.uniform(15, 28))
            for t in (f"{self.spec.tenant_prefix}{i:02d}" for i in range(self.spec.tenants))
            for p in (f"project{j:02d}" for j in range(self.spec.projects))
            for d in range(self.spec.devices)
        ]

    @property
    def projects(self) -> list[tuple[str, str]]:
        """(tenant, project) pairs of the fleet, in order."""
        return list(dict.fromkeys((d.tenant_id, d.project_id) for d in self._devices))

    @property
    def devices(self) -> list[tuple[str, str, str]]:
        return [(d.tenant_id, d.project_id, d.device_id) for d in self._devices]

    def messages(self, count: int, now_ms: int) -> Iterator[Telemetry]:
        """``count`` messages stamped ``now_ms`` (for tests; the simulator stamps each at publish)."""
        for _ in range(count):
            yield self.next_message(now_ms)

    def next_message(self, now_ms: int) -> Telemetry:
        device = self._devices[self._cursor]
        self._cursor = (self._cursor + 1) % len(self._devices)
        device.seq += 1
        self._drift(device)
        category = GOOD
        if self.spec.bad_fraction and self._rng.random() < self.spec.bad_fraction:
            category = self._rng.choice(self.spec.bad_categories)
        return Telemetry(
            topic=self._topic(device, category),
            payload=self._payload(device, category, now_ms),
            category=category,
            tenant_id=device.tenant_id,
            device_id=device.device_id,
            seq=device.seq,
            project_id=device.project_id,
        )

    def _drift(self, d: _DeviceState) -> None:
        rng = self._rng
        d.temperature = min(45.0, max(-10.0, d.temperature + rng.gauss(0, 0.2)))
        d.humidity = min(100.0, max(0.0, d.humidity + rng.gauss(0, 0.5)))
        d.battery = max(0.0, d.battery - rng.uniform(0, 0.01))
        d.rssi = min(-30, max(-110, d.rssi + rng.randint(-2, 2)))

    def _topic(self, d: _DeviceState, category: str) -> str:
        grammar = self.spec.topic_grammar
        if category == BAD_TOPIC:
            return bad_shape_topic(grammar, d.tenant_id)
        project = f"{d.project_id}.invalid" if category == INVALID_ID else d.project_id
        return device_topic(grammar, d.tenant_id, project, d.device_id)

    def _payload(self, d: _DeviceState, category: str, now_ms: int) -> bytes:
        # Identity fields first: a truncated dead letter still starts with them.
        body: dict[str, object] = {
            "msg_id": f"{self.spec.run_id}:{d.device_id}:{d.seq}",
            "device_id": d.device_id,
            "seq": d.seq,
            "run_id": self.spec.run_id,
            "ts": iso_ms(now_ms),
            "temperature": round(d.temperature, 2),
            "humidity": round(d.humidity, 2),
            "battery": round(d.battery, 3),
            "rssi": d.rssi,
        }
        if category != GOOD:
            body["sim_bad"] = category
        raw = json.dumps(body, separators=(",", ":")).encode()
        if category == OVERSIZE:
            padding = self.spec.max_payload_bytes + 1 - len(raw) - len(',"padding":""')
            body["padding"] = "x" * max(padding, 1)
            raw = json.dumps(body, separators=(",", ":")).encode()
        return raw

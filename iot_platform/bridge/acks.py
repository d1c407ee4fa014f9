"""MQTT acks that belong to one connection.

Guarantee: a PUBACK is sent only for a message whose Kafka delivery succeeded, and only on the
connection that delivered it. Packet ids are per connection: after a reconnect the broker may reuse
an id for another message, so an ack for the old id could acknowledge a message Kafka never saw.
Acks of an older connection are therefore discarded; the broker redelivers those messages (a
duplicate in Kafka, never a loss).

Threads: `opened`/`closed` run on paho's network thread, `ack` on the thread that polls the
producer. One lock makes "is this still the connection?" and "queue the PUBACK" atomic: paho
clears its outgoing queue in `reconnect()`, which runs only after `closed()`, so a PUBACK queued
under the lock either goes out on its own connection or is dropped with that connection.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from iot_platform.core.records import InboundMessage, KafkaRecord


@dataclass(frozen=True, slots=True)
class InFlight:
    """One received message on its way to Kafka, until it is acked or its ack is discarded."""

    mid: int
    qos: int
    generation: int
    message: InboundMessage
    record: KafkaRecord
    received_monotonic: float
    attempts: int = 0


class AckGate:
    """Tracks the connection generation and sends acks only within it."""

    def __init__(self, send_ack: Callable[[int, int], object]) -> None:
        self._send_ack = send_ack
        self._lock = threading.Lock()
        self._generation = 0
        self._connected = False
        self.connected_since = time.monotonic()

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def connected(self) -> bool:
        return self._connected

    def opened(self) -> int:
        """A connection was accepted (CONNACK): messages from now on belong to a new generation."""
        with self._lock:
            self._generation += 1
            self._connected = True
            self.connected_since = time.monotonic()
            return self._generation

    def closed(self) -> None:
        """The connection is gone: every pending ack becomes stale."""
        with self._lock:
            self._generation += 1
            self._connected = False

    def is_stale(self, item: InFlight) -> bool:
        return item.generation != self._generation

    def ack(self, item: InFlight) -> bool:
        """Ack ``item`` if its connection is still the current one; False when the ack was discarded."""
        with self._lock:
            if not self._connected or item.generation != self._generation:
                return False
            if item.qos > 0:  # a QoS 0 message has no packet id and needs no ack
                self._send_ack(item.mid, item.qos)
            return True

"""Acks belong to one connection: sent only within it, discarded after a reconnect."""

from __future__ import annotations

import threading

from iot_platform.bridge.acks import AckGate, InFlight
from iot_platform.core.records import InboundMessage, KafkaRecord

MESSAGE = InboundMessage("t/a/b", b"x", 1, False, 0)
RECORD = KafkaRecord("topic", b"a", b"x", [])


def item(mid: int, generation: int, qos: int = 1) -> InFlight:
    return InFlight(mid=mid, qos=qos, generation=generation, message=MESSAGE, record=RECORD, received_monotonic=0.0)


def test_ack_within_the_same_connection_is_sent() -> None:
    """A delivered message of the current connection is acked with its mid and QoS."""
    sent: list[tuple[int, int]] = []
    gate = AckGate(lambda mid, qos: sent.append((mid, qos)))
    generation = gate.opened()
    assert gate.ack(item(7, generation)) is True
    assert sent == [(7, 1)]


def test_ack_after_disconnect_or_reconnect_is_discarded() -> None:
    """An ack for a mid of an older connection never reaches the broker (mids are reused)."""
    sent: list[tuple[int, int]] = []
    gate = AckGate(lambda mid, qos: sent.append((mid, qos)))
    old = gate.opened()
    gate.closed()
    assert gate.ack(item(1, old)) is False
    new = gate.opened()
    assert new != old
    assert gate.ack(item(1, old)) is False
    assert gate.ack(item(2, new)) is True
    assert sent == [(2, 1)]
    assert gate.is_stale(item(1, old)) and not gate.is_stale(item(2, new))


def test_nothing_is_acked_before_the_first_connection() -> None:
    """Before a CONNACK there is no connection to ack on."""
    sent: list[tuple[int, int]] = []
    gate = AckGate(lambda mid, qos: sent.append((mid, qos)))
    assert gate.ack(item(1, gate.generation)) is False
    assert sent == []


def test_qos0_messages_need_no_ack_but_count_as_done() -> None:
    """QoS 0 has no packet id: nothing is sent, the message is still resolved."""
    sent: list[tuple[int, int]] = []
    gate = AckGate(lambda mid, qos: sent.append((mid, qos)))
    generation = gate.opened()
    assert gate.ack(item(0, generation, qos=0)) is True
    assert sent == []


def test_no_ack_of_an_old_connection_slips_past_a_concurrent_reconnect() -> None:
    """Under concurrent reconnects, every ack that was sent carries the generation current at send time."""
    violations: list[int] = []

    def send(mid: int, _qos: int) -> None:
        # Runs under the gate's lock; mid encodes the generation the message was received on.
        if mid != gate.generation or not gate.connected:
            violations.append(mid)

    gate = AckGate(send)

    done = threading.Event()
    reconnections = 0

    def reconnects() -> None:
        nonlocal reconnections
        while not done.is_set():
            gate.closed()
            gate.opened()
            reconnections += 1

    thread = threading.Thread(target=reconnects)
    thread.start()
    sent = 0
    for _ in range(20_000):
        generation = gate.generation
        sent += gate.ack(item(generation, generation))
    done.set()
    thread.join()
    assert reconnections > 0 and sent > 0
    assert violations == []

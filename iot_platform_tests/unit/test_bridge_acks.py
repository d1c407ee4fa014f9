"""Acks belong to one connection: sent only within it, in batches, discarded after a reconnect."""

from __future__ import annotations

import threading

from iot_platform.bridge.acks import AckGate, InFlight
from iot_platform.bridge.metrics import BridgeStats
from iot_platform.core.records import InboundMessage, KafkaRecord

MESSAGE = InboundMessage("t/a/b", b"x", 1, False, 0)
RECORD = KafkaRecord("topic", b"a", b"x", [])


def item(mid: int, generation: int, qos: int = 1) -> InFlight:
    return InFlight(mid=mid, qos=qos, generation=generation, message=MESSAGE, record=RECORD, received_monotonic=0.0)


def recording_gate() -> tuple[AckGate, list[list[int]], BridgeStats]:
    batches: list[list[int]] = []
    stats = BridgeStats()
    return AckGate(lambda mids: batches.append(list(mids)), stats), batches, stats


def test_acks_of_the_same_connection_are_sent_together_on_flush() -> None:
    """Delivered messages are acked with their mids, in delivery order, in one batch per flush."""
    gate, batches, stats = recording_gate()
    generation = gate.opened()
    gate.ack(item(7, generation))
    gate.ack(item(3, generation))
    assert batches == [] and stats.acked == 0  # pending, not yet handed to paho
    gate.flush()
    gate.flush()  # nothing pending: no empty batch
    assert batches == [[7, 3]]
    assert (stats.acked, stats.acks_discarded) == (2, 0)


def test_ack_after_disconnect_or_reconnect_is_discarded() -> None:
    """An ack for a mid of an older connection never reaches the broker (mids are reused)."""
    gate, batches, stats = recording_gate()
    old = gate.opened()
    gate.closed()
    gate.ack(item(1, old))
    new = gate.opened()
    assert new != old
    gate.ack(item(1, old))
    gate.ack(item(2, new))
    gate.flush()
    assert batches == [[2]]
    assert (stats.acked, stats.acks_discarded) == (1, 2)
    assert gate.is_stale(item(1, old)) and not gate.is_stale(item(2, new))


def test_pending_acks_are_dropped_when_their_connection_closes() -> None:
    """Acks accepted before a disconnect but not yet flushed must not go out on the next connection."""
    gate, batches, stats = recording_gate()
    old = gate.opened()
    gate.ack(item(5, old))
    gate.ack(item(6, old))
    gate.closed()
    gate.opened()
    gate.flush()
    assert batches == []
    assert (stats.acked, stats.acks_discarded) == (0, 2)


def test_nothing_is_acked_before_the_first_connection() -> None:
    """Before a CONNACK there is no connection to ack on."""
    gate, batches, stats = recording_gate()
    gate.ack(item(1, gate.generation))
    gate.flush()
    assert batches == []
    assert stats.acks_discarded == 1


def test_qos0_messages_need_no_ack_but_count_as_done() -> None:
    """QoS 0 has no packet id: nothing is sent, the message is still resolved."""
    gate, batches, stats = recording_gate()
    generation = gate.opened()
    gate.ack(item(0, generation, qos=0))
    gate.flush()
    assert batches == []
    assert stats.acked == 1


def test_no_ack_of_an_old_connection_slips_past_a_concurrent_reconnect() -> None:
    """Under concurrent reconnects, every batch sent holds only mids of the generation current at send time."""
    violations: list[int] = []
    stats = BridgeStats()

    def send(mids: list[int]) -> None:
        # Runs under the gate's lock; each mid encodes the generation its message was received on.
        violations.extend(mid for mid in mids if mid != gate.generation or not gate.connected)

    gate = AckGate(send, stats)
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
    for n in range(20_000):
        generation = gate.generation
        gate.ack(item(generation, generation))
        if n % 7 == 0:
            gate.flush()
    done.set()
    thread.join()
    gate.flush()
    assert reconnections > 0 and stats.acked > 0
    assert stats.acked + stats.acks_discarded == 20_000
    assert violations == []

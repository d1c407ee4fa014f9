"""Acks belong to one connection and follow the receipt order: the longest confirmed prefix goes out
at each flush, in one batch; acks of an older connection are discarded."""

from __future__ import annotations

import random
import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from iot_platform.bridge.acks import AckGate, InFlightMessage
from iot_platform.bridge.metrics import BridgeStats
from iot_platform.core.records import InboundMessage, OutboundRecord

MESSAGE = InboundMessage("t/a/b", b"x", 1, False, 0)
RECORD = OutboundRecord("topic", b"a", b"x", [])


def receive(gate: AckGate, mid: int, qos: int = 1) -> InFlightMessage:
    """What the bridge does on paho's thread for each PUBLISH: note its receipt, tag its connection."""
    receipt = gate.received(mid) if qos else -1
    return InFlightMessage(mid=mid, qos=qos, generation=gate.generation, message=MESSAGE, record=RECORD,
                    received_monotonic=0.0, receipt=receipt)


def recording_gate() -> tuple[AckGate, list[list[int]], BridgeStats]:
    batches: list[list[int]] = []
    stats = BridgeStats()
    return AckGate(lambda mids: batches.append(list(mids)), stats), batches, stats


def test_confirmed_acks_of_the_same_connection_are_sent_together_on_flush() -> None:
    """Messages confirmed in receipt order are acked with their mids, in that order, in one batch per flush."""
    gate, batches, stats = recording_gate()
    gate.opened()
    first, second = receive(gate, 7), receive(gate, 3)
    gate.ack(first)
    gate.ack(second)
    assert batches == [] and stats.acked == 0  # pending, not yet handed to paho
    gate.flush()
    gate.flush()  # nothing pending: no empty batch
    assert batches == [[7, 3]]
    assert (stats.acked, stats.acks_discarded, gate.unacked) == (2, 0, 0)


def test_out_of_order_confirmations_are_acked_in_receipt_order() -> None:
    """Kafka confirms 3 and 1 of 1..5: only 1 goes out; 2 releases 2 and 3; 5 waits for 4."""
    gate, batches, stats = recording_gate()
    gate.opened()
    items = {mid: receive(gate, mid) for mid in (1, 2, 3, 4, 5)}
    for confirmed, expected in [((3, 1), [1]), ((2,), [2, 3]), ((5,), None), ((4,), [4, 5])]:
        for mid in confirmed:
            gate.ack(items[mid])
        gate.flush()
        if expected is not None:
            assert batches[-1] == expected
    assert batches == [[1], [2, 3], [4, 5]]
    assert (stats.acked, gate.unacked) == (5, 0)


def test_a_confirmed_message_waits_behind_an_unconfirmed_one_until_it_is_confirmed() -> None:
    """A message still being retried holds back the acks of everything received after it."""
    gate, batches, _stats = recording_gate()
    gate.opened()
    retried, *later = [receive(gate, mid) for mid in range(10, 20)]
    for item in later:
        gate.ack(item)
    for _ in range(3):
        gate.flush()
    assert batches == [] and gate.unacked == 10
    gate.ack(retried)
    gate.flush()
    assert batches == [list(range(10, 20))]


def test_ack_after_disconnect_or_reconnect_is_discarded() -> None:
    """An ack for a mid of an older connection never reaches the broker (mids are reused)."""
    gate, batches, stats = recording_gate()
    gate.opened()
    old = receive(gate, 1)
    gate.closed()
    gate.ack(old)
    gate.opened()
    new = receive(gate, 1)  # the broker reuses the id for another (or the redelivered) message
    gate.ack(old)
    gate.ack(new)
    gate.flush()
    assert batches == [[1]]
    assert (stats.acked, stats.acks_discarded) == (1, 2)
    assert gate.is_stale(old) and not gate.is_stale(new)


def test_reconnect_between_out_of_order_confirmations_keeps_each_connection_in_its_own_order() -> None:
    """Connection 1 receives 1, 2, 3 and only 2 is confirmed before it drops: nothing of it is acked,
    and connection 2's prefix is not held back by connection 1's unconfirmed 1."""
    gate, batches, stats = recording_gate()
    gate.opened()
    one = [receive(gate, mid) for mid in (1, 2, 3)]
    gate.ack(one[1])
    gate.flush()
    gate.closed()
    gate.opened()
    two = [receive(gate, mid) for mid in (1, 2)]
    gate.ack(one[0])
    gate.ack(two[1])
    gate.ack(two[0])
    gate.ack(one[2])
    gate.flush()
    assert batches == [[1, 2]]
    assert (stats.acked, stats.acks_discarded) == (2, 3)


def test_pending_acks_are_dropped_when_their_connection_closes() -> None:
    """Acks accepted before a disconnect but not yet flushed must not go out on the next connection."""
    gate, batches, stats = recording_gate()
    gate.opened()
    for item in (receive(gate, 5), receive(gate, 6)):
        gate.ack(item)
    gate.closed()
    gate.opened()
    gate.flush()
    assert batches == []
    assert (stats.acked, stats.acks_discarded, gate.unacked) == (0, 2, 0)


def test_nothing_is_acked_before_the_first_connection() -> None:
    """Before a CONNACK there is no connection to ack on."""
    gate, batches, stats = recording_gate()
    gate.ack(receive(gate, 1))
    gate.flush()
    assert batches == []
    assert stats.acks_discarded == 1


def test_qos0_messages_need_no_ack_hold_nothing_back_and_count_as_done() -> None:
    """QoS 0 has no packet id: nothing is sent for it, it takes no place in the receipt order, and it is resolved."""
    gate, batches, stats = recording_gate()
    gate.opened()
    first, unacked_qos0, second = receive(gate, 1), receive(gate, 0, qos=0), receive(gate, 2)
    gate.ack(second)
    gate.ack(unacked_qos0)
    gate.flush()
    assert batches == [] and stats.acked == 1
    gate.ack(first)
    gate.flush()
    assert batches == [[1, 2]]
    assert stats.acked == 3


@settings(max_examples=300, deadline=None)
@given(
    qos=st.lists(st.sampled_from([0, 1, 1, 1]), min_size=1, max_size=40),
    seed=st.integers(0, 2**32 - 1),
    flush_every=st.integers(1, 7),
)
def test_every_batch_continues_the_receipt_order_whatever_the_confirmation_order(qos: list[int], seed: int, flush_every: int) -> None:
    """Any confirmation order, flushes anywhere: the PUBACKs sent, concatenated, are always a prefix of
    the QoS 1 receipt order, each batch is confirmed entirely, and everything is acked in the end."""
    gate, batches, stats = recording_gate()
    gate.opened()
    items = [receive(gate, mid, q) for mid, q in enumerate(qos, start=1)]
    order = [item.mid for item in items if item.qos]
    confirmed: set[int] = set()
    shuffled = items[:]
    random.Random(seed).shuffle(shuffled)
    for n, item in enumerate(shuffled, start=1):
        gate.ack(item)
        confirmed.add(item.mid)
        if n % flush_every == 0:
            gate.flush()
            sent = [mid for batch in batches for mid in batch]
            assert sent == order[: len(sent)]
            assert set(sent) <= confirmed
            prefix = next((i for i, mid in enumerate(order) if mid not in confirmed), len(order))
            assert len(sent) == prefix, "the whole confirmed prefix goes out at each flush"
    gate.flush()
    assert [mid for batch in batches for mid in batch] == order
    assert all(batches), "no empty batch"
    assert stats.acked == len(items) and gate.unacked == 0


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
    received: list[InFlightMessage] = []
    lock = threading.Lock()

    def network_thread() -> None:
        # paho's thread: receives and reconnects (received/opened/closed all run there).
        nonlocal reconnections
        while not done.is_set():
            gate.opened()
            for _ in range(50):
                item = receive(gate, gate.generation)
                with lock:
                    received.append(item)
            gate.closed()
            reconnections += 1

    thread = threading.Thread(target=network_thread)
    thread.start()
    confirmed = 0
    while confirmed < 20_000:
        with lock:
            batch, received[:] = received[:], []
        for item in batch:
            gate.ack(item)
            confirmed += 1
            if confirmed % 7 == 0:
                gate.flush()
    done.set()
    thread.join()
    gate.flush()
    assert reconnections > 0 and stats.acked > 0
    assert stats.acked + stats.acks_discarded == confirmed
    assert violations == []

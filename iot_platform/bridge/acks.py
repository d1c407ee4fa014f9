"""MQTT acks in receipt order, per connection, sent in batches.

Guarantee: a PUBACK is sent only for a message whose Kafka delivery succeeded (a dead letter
included), only on the connection that delivered it, and only once every QoS 1 message received
before it on that connection has been acked: MQTT 3.1.1 and 5 require PUBACKs in the order the
PUBLISH packets arrived ([MQTT-4.6.0-2]), while Kafka confirms records in its own order (partitions,
retries). Each flush acks the longest prefix of received messages that Kafka has confirmed; a
confirmed message behind an unconfirmed one waits for it. Packet ids are per connection: after a
reconnect the broker may reuse an id for another message, so an ack for the old id could acknowledge
a message Kafka never saw. Acks of an older connection are therefore discarded; the broker
redelivers those messages (a duplicate in Kafka, never a loss).

Batching: a delivery report only marks its message confirmed; `flush` (after each producer poll)
hands the acks of the newly confirmed prefix to paho at once. paho wakes its network thread with
one socket write per queued packet, which cost about a tenth of the bridge's CPU when every PUBACK
was its own packet.

Threads: `received`, `opened` and `closed` run on paho's network thread, `ack` and `flush` on the
thread that polls the producer. `received` appends to the receipt queue without the lock: only
paho's thread appends to it or resets it, and `flush` only pops from its head under the lock. One
lock makes "is this still the connection?" and "queue the PUBACKs" atomic: paho clears its outgoing
queue in `reconnect()`, which runs only after `closed()`, and `closed()` forgets the receipts still
waiting, so a PUBACK either goes out on its own connection or is dropped with it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from iot_platform.bridge.metrics import BridgeStats
from iot_platform.core.records import InboundMessage, OutboundRecord


@dataclass(slots=True)  # not frozen: built per message (core/records.py, InboundMessage)
class InFlightMessage:
    """One received message on its way to Kafka, until it is acked or its ack is discarded.

    ``receipt`` numbers the QoS 1 messages in the order their PUBLISH packets arrived (-1 for QoS 0).
    """

    mid: int
    qos: int
    generation: int
    message: InboundMessage
    record: OutboundRecord
    received_monotonic: float
    receipt: int = -1
    attempts: int = 0


class AckGate:
    """Tracks the connection generation and the receipt order, and sends acks only within them.

    ``send_pubacks(mids)`` queues PUBACKs for QoS 1 packet ids, in the given order (called under the
    gate's lock). ``stats.acked`` counts acks handed to paho (and QoS 0 messages, which need none);
    ``stats.acks_discarded`` counts acks dropped because their connection was gone.
    """

    def __init__(self, send_pubacks: Callable[[list[int]], object], stats: BridgeStats) -> None:
        self._send_pubacks = send_pubacks
        self._stats = stats
        self._lock = threading.Lock()
        self._generation = 0
        self._connected = False
        self._order: deque[int] = deque()  # mids of this connection's unacked QoS 1 messages, in receipt order
        self._head = 0  # receipt number of self._order[0]
        self._next = 0  # receipt number of the next QoS 1 message
        self._confirmed: set[int] = set()  # receipt numbers Kafka confirmed, not yet acked
        self.acks_sent = threading.Event()  # set whenever a flush queued PUBACKs (wakes a paused reader)
        self.connected_since = time.monotonic()

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def unacked(self) -> int:
        """QoS 1 messages of the current connection received and not yet acked."""
        return len(self._order)

    def opened(self) -> int:
        """A connection was accepted (CONNACK): messages from now on belong to a new generation."""
        with self._lock:
            self._forget_receipts()
            self._generation += 1
            self._connected = True
            self.connected_since = time.monotonic()
            return self._generation

    def closed(self) -> None:
        """The connection is gone: every ack still waiting becomes stale."""
        with self._lock:
            self._generation += 1
            self._connected = False
            self._stats.acks_discarded += len(self._confirmed)
            self._forget_receipts()
        self.acks_sent.set()

    def _forget_receipts(self) -> None:
        self._order.clear()
        self._confirmed.clear()
        self._head = self._next

    def received(self, mid: int) -> int:
        """Record a QoS 1 PUBLISH in arrival order (paho's thread); returns its receipt number."""
        receipt = self._next
        self._next = receipt + 1
        self._order.append(mid)
        return receipt

    def is_stale(self, item: InFlightMessage) -> bool:
        return item.generation != self._generation

    def ack(self, item: InFlightMessage) -> None:
        """Kafka confirmed ``item``: its ack may go out once every earlier receipt's has; stale: discarded."""
        with self._lock:
            if not self._connected or item.generation != self._generation:
                self._stats.acks_discarded += 1
            elif item.qos == 0:  # a QoS 0 message has no packet id and needs no ack
                self._stats.acked += 1
            else:
                self._confirmed.add(item.receipt)

    def flush(self) -> None:
        """Queue, as one batch, the acks of the longest confirmed prefix of the receipt order."""
        with self._lock:
            confirmed, head = self._confirmed, self._head
            if head not in confirmed:
                return
            order, mids = self._order, []
            while head in confirmed:
                confirmed.remove(head)
                mids.append(order.popleft())
                head += 1
            self._head = head
            self._send_pubacks(mids)
            self._stats.acked += len(mids)
        self.acks_sent.set()

"""When a draining bridge replica may end its MQTT session: only once the broker holds nothing for it.

Why a drain: Mosquitto hands each message of a shared subscription to the group's members in turn,
connected or not, and keeps what it handed to a member in that member's persistent session until the
same client id connects again (docs/design.md §9). A replica that goes away for good without a drain
would keep its share of the traffic for ever (until its session expires, when the broker drops it).

Draining, on every connection until it is done:
1. UNSUBSCRIBE both forms of the filter (replicas.py): from the broker's answer on, nothing new is
   routed to this session; what is already in it keeps coming and is delivered and acked as usual;
2. once the bridge holds nothing (every message received was confirmed by Kafka and its PUBACK
   queued), UNSUBSCRIBE again, as a probe. Mosquitto answers packets in order, and processing each
   PUBACK moves the session's queued messages into flight and writes them before it reads our next
   packet, so every message still in the session arrives before the probe's answer. An answer with no
   message received since the probe was sent, and nothing held then, proves the session empty;
   otherwise the next probe goes out when the bridge again holds nothing;
3. end the session (MQTT 5 DISCONNECT with session expiry 0): nothing stays queued for an identity
   that will not return.
A reconnect starts again at 1 (the session is resumed with whatever it still held).

Guarantee: the session ends only after every message the broker routed to it was delivered to Kafka
and acked. Threads: ``opened`` and ``answered`` on paho's network thread, ``next_step`` and
``send_probe`` on the main thread; one lock orders them (``send_probe`` registers the packet id
before paho's thread can see its answer).
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable
from dataclasses import dataclass


class DrainStep(enum.Enum):
    WAIT = "wait"
    UNSUBSCRIBE = "unsubscribe"  # send the UNSUBSCRIBE (first on a connection: stop the routing; then: a probe)
    END = "end"  # the session is proven empty: end it


@dataclass(frozen=True)
class _Probe:
    mid: int
    received: int  # messages received when it was sent
    held: int  # messages held (unacked) when it was sent


class SessionDrain:
    """The drain's progress on the current connection."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._probe: _Probe | None = None
        self._sent_on_connection = False
        self._empty = False
        self.probes = 0

    def opened(self) -> None:
        """A new connection (CONNACK): the resumed session may hold messages again; start over."""
        with self._lock:
            self._probe, self._sent_on_connection, self._empty = None, False, False

    def next_step(self, *, connected: bool, held: int, received: int) -> DrainStep:
        with self._lock:
            if not connected:
                return DrainStep.WAIT
            if self._empty:
                return DrainStep.END
            if self._probe is None and (held == 0 or not self._sent_on_connection):
                return DrainStep.UNSUBSCRIBE
            return DrainStep.WAIT

    def send_probe(self, send: Callable[[], int | None], *, held: int, received: int) -> None:
        """Send the UNSUBSCRIBE (``send`` returns its packet id) and wait for its answer.

        ``received`` must be read before ``held``: a message arriving in between then spoils the proof."""
        with self._lock:
            mid = send()
            if mid is None:  # not connected any more: the next connection starts over
                return
            self._probe = _Probe(mid, received, held)
            self._sent_on_connection = True
            self.probes += 1

    def answered(self, mid: int, *, received: int) -> None:
        """The broker answered UNSUBSCRIBE ``mid``; ``received`` counts the messages read before it."""
        with self._lock:
            probe = self._probe
            if probe is None or probe.mid != mid:
                return
            self._probe = None
            self._empty = probe.held == 0 and received == probe.received

"""One thread drives every MQTT connection of a simulated fleet: paho clients without threads of their own.

With ``loop_start()`` each paho client gets a network thread, and a publish from any other thread is
handed to it through a wake-up socket: the simulator's 20 gateway connections and its publishing
thread then passed the GIL back and forth for every PUBLISH and every PUBACK, about 0.8 of a core
at 2,000 msg/s (docs/benchmarks.md). Here the publishing thread does all of it: paho writes a
PUBLISH at once when the client has no network thread, and between bursts ``serve`` reads the
PUBACKs (``on_publish`` runs there), finishes partial writes, keeps each connection alive and
reconnects the lost ones. It uses paho's documented external-loop calls (``socket``,
``loop_read``, ``loop_write``, ``loop_misc``, ``want_write``, ``reconnect``).

Guarantee (paho's, unchanged): a client keeps every unacked QoS 1 message and sends it again on
its next connection. A lost connection is retried at once, then after a delay that doubles from
``min_delay_s`` to ``max_delay_s`` (a broker that refuses at once is not hammered), forever, until
the caller stops serving; a connection that held for ``max_delay_s`` starts the backoff afresh.
"""

from __future__ import annotations

import logging
import select
import time
from typing import Any

import paho.mqtt.client as mqtt

log = logging.getLogger(__name__)
_MISC_INTERVAL_S = 0.5  # keepalive checks: PINGREQ due, PINGRESP overdue


class NetworkLoop:
    """Serves the network side of ``clients`` from the calling thread (one thread only)."""

    def __init__(self, clients: list[mqtt.Client], *, min_delay_s: float = 0.2, max_delay_s: float = 2.0) -> None:
        self._clients = clients
        self._min_delay_s, self._max_delay_s = min_delay_s, max_delay_s
        self._retry_at: dict[int, tuple[float, float]] = {}  # client index -> (next attempt, its delay)
        self._next_misc = 0.0

    def serve(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for the connections, then read what arrived and write what is pending."""
        now = time.monotonic()
        sockets: dict[Any, mqtt.Client] = {}
        for index, client in enumerate(self._clients):
            sock = client.socket()
            if sock is None:
                self._reconnect_when_due(index, client, now)
                continue
            sockets[sock] = client
            retry = self._retry_at.get(index)
            if retry is not None and now >= retry[0] + self._max_delay_s:
                del self._retry_at[index]  # it held: the next loss starts the backoff from the beginning
        if not sockets:
            time.sleep(timeout_s)
            return
        # OpenSSL may hold decrypted bytes select() cannot see: read those without waiting.
        buffered = [sock for sock in sockets if getattr(sock, "pending", None) is not None and sock.pending()]
        writing = [sock for sock, client in sockets.items() if client.want_write()]
        try:
            readable, writable, _ = select.select(list(sockets), writing, [], 0 if buffered else timeout_s)
        except (OSError, ValueError):  # a socket closed under us: the next turn reconnects it
            readable, writable = [], []
        for sock in set(readable) | set(buffered):
            sockets[sock].loop_read()
        for sock in writable:
            if sockets[sock].socket() is sock:
                sockets[sock].loop_write()
        if now >= self._next_misc:
            self._next_misc = now + _MISC_INTERVAL_S
            for client in sockets.values():
                client.loop_misc()

    def _reconnect_when_due(self, index: int, client: mqtt.Client, now: float) -> None:
        at, delay = self._retry_at.get(index, (0.0, 0.0))
        if now < at:
            return
        delay = min(max(delay * 2, self._min_delay_s), self._max_delay_s)
        self._retry_at[index] = (now + delay, delay)
        try:
            client.reconnect()  # TCP and TLS now; CONNECT queued, its CONNACK read by a later turn
        except (OSError, ValueError) as exc:
            log.warning("mqtt reconnect failed", extra={"client": index, "error": str(exc), "retry_in_s": delay})

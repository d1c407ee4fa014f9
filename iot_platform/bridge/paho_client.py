"""The bridge's paho client through paho's public API, and the choice between it and the fast path.

PublicBridgeClient uses only paho-mqtt's public API (``manual_ack=True``, ``ack(mid, qos)``, an
override of the public ``loop_read``), so it works on any paho-mqtt 2.x. The fast path (paho_fast.py)
overrides paho internals and runs only on the release it was written for (``FAST_PATH_PAHO_VERSION``,
checked at import). Both keep the same guarantees: acks in receipt order, and no reading while the
bridge holds more unacked messages than its window. The public path is slower (one wake-up and one
packet per PUBACK, paho's per-message bookkeeping) and has one limit, see ``_wait_for_acks``.
"""

from __future__ import annotations

import select
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt
from paho.mqtt.client import Client, MQTTErrorCode

FAST_PATH_PAHO_VERSION = "2.2.0"  # the paho-mqtt release whose internals paho_fast.py overrides
PAHO_VERSION: str = paho.mqtt.__version__
_PAUSE_POLL_S = 0.05  # while paused, look again at least this often (keepalive, shutdown)


@dataclass(frozen=True)
class ClientPath:
    """Which paho code path the bridge runs, and why."""

    fast: bool
    reason: str

    @property
    def name(self) -> str:
        return "fast" if self.fast else "public"


def choose_client_path(installed_version: str, requested: str) -> ClientPath:
    """The fast path only on the paho-mqtt release it was written for, and unless the public one is asked for (pure)."""
    if requested == "public":
        return ClientPath(False, "IOT_MQTT_CLIENT_PATH=public")
    if installed_version != FAST_PATH_PAHO_VERSION:
        return ClientPath(False, f"paho-mqtt {installed_version} installed; the fast path was written for {FAST_PATH_PAHO_VERSION}")
    return ClientPath(True, f"paho-mqtt {installed_version}, the version the fast path was written for")


FAST_PATH_AVAILABLE = choose_client_path(PAHO_VERSION, "auto").fast  # checked once, at import


def _never() -> bool:
    return False


def _writable(sock: Any) -> bool:
    return sock is not None and bool(select.select([], [sock], [], 0)[1])


class PublicBridgeClient(Client):
    """paho's Client through its public API, plus acks in batches and reading paused above the window."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._over_window: Callable[[], bool] = _never
        self._acks_sent = threading.Event()
        self.path = ClientPath(False, "public API")

    def pause_reading_while(self, over_window: Callable[[], bool], acks_sent: threading.Event) -> None:
        """Read nothing while ``over_window()`` is true; ``acks_sent`` is set when acks were queued.

        ``over_window`` runs on paho's thread before every packet read, so it must be cheap.
        """
        self._over_window, self._acks_sent = over_window, acks_sent

    def pace_reads(self, interval_s: float) -> None:
        """Nothing here: paho's own ``loop_read`` takes one packet per call, so pacing it would cap
        this path at one packet per interval. The fast path paces its reads (paho_fast.py)."""

    def send_pubacks(self, mids: list[int]) -> None:
        """Queue a PUBACK for each QoS 1 packet id, in order (one ``ack()`` each)."""
        for mid in mids:
            self.ack(mid, 1)

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        if self._paused():
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        return super().loop_read(max_packets)

    def _paused(self) -> bool:
        if not self._over_window():
            return False
        self._wait_for_acks()
        return True

    def _wait_for_acks(self) -> None:
        """Reading is paused: return at once if PUBACKs can be written now (paho's loop writes them
        next), else sleep until acks are queued or a short poll passes.

        paho still sends its keepalive PINGREQs, but on this path it also expects the PINGRESP,
        which waits unread behind the PUBLISH packets: a pause longer than about twice
        IOT_MQTT_KEEPALIVE_S (only when Kafka stalls while the broker has pushed more than the
        window) ends in a reconnect. Memory stays bounded; the redelivered messages may be
        duplicated in Kafka, none is lost.
        """
        acks_sent = self._acks_sent
        acks_sent.clear()
        if not self._over_window():
            return
        if self.want_write() and _writable(self.socket()):
            return
        acks_sent.wait(_PAUSE_POLL_S)

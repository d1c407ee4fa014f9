"""The bridge's fast paho path: a few paho-mqtt 2.2.0 internals overridden (import only on 2.2.0).

paho's per-message Python work is the bridge's bound, so FastBridgeClient overrides some of paho's
internals: reads served from a buffer (plain and TLS sockets alike), a PUBLISH that is whole in
that buffer decoded in place (split_publish), no per-message tracking object or debug line, no
per-topic callback matching, acks in one write per batch, and MQTT 5 ``Properties`` with shared
lookup tables. Together they took one process from about 16,600 to 28,600-33,900 msg/s here before
the in-place decoding, which docs/benchmarks.md measures on its own.
Each override keeps paho's behaviour for what the bridge uses: golden tests run the same packets
through stock paho in a process that never loads this module and compare (test_bridge_paho_golden).

The internals used: ``Client._create_socket``, ``_sock``, ``_transport``,
``_packet_queue``, ``_handle_publish``, ``_in_packet``, ``_protocol``, ``_handle_on_message``,
``_in_callback_mutex``, ``_userdata``, ``_ping_t``, ``_msgtime_mutex``, ``_last_bytes_received``
and ``paho.mqtt._packet`` (``decode_publish``, ``Properties``). mqtt_session imports this module
only when paho-mqtt is the version it was written for; any other version runs paho's public API
(paho_client.PublicBridgeClient).
"""

from __future__ import annotations

import functools
import struct
import time
from typing import Any, NamedTuple

import paho.mqtt._packet
from paho.mqtt.client import PUBACK, Client, MQTTErrorCode, MQTTMessage, MQTTMessageInfo, MQTTv5, mqtt_ms_invalid
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from iot_platform.bridge.pace import Pace
from iot_platform.bridge.paho_client import PublicBridgeClient

# Most packets the bridge reads are ~200-byte PUBLISHes; one recv() takes many of them at once.
_RECV_CHUNK = 256 * 1024
_TLS_RECORD = 16 * 1024  # the most plaintext one TLS record (so one SSLSocket.recv) returns
_PACKETS_PER_READ = 1_000  # then let paho write the queued PUBACKs and check keepalive
_PUBACK = struct.Struct("!BBH")  # type, remaining length 2, packet id: a success PUBACK in 3.1.1 and 5


class _BufferedSocket:
    """A TCP or TLS socket read in large chunks.

    paho reads each packet with three or more recv() calls (1 byte of type, the length byte by
    byte, then the body) and one select() per packet. Serving those reads from a buffer, and
    telling paho through ``pending()`` (the hook it uses for TLS sockets) that bytes are buffered,
    removes most system calls per message. Everything else is the real socket's.

    On a TLS socket one ``recv()`` returns at most one TLS record, and Mosquitto writes a record per
    packet: a read therefore gathers the records already readable (up to ``_RECV_CHUNK``), so paho's
    loop (a select() per turn) runs once per chunk, not once per message. ``pending()`` also counts
    what OpenSSL has decrypted but not handed out, which select() cannot see. A non-blocking TLS
    socket with nothing decrypted raises ``SSLWantReadError`` from ``recv()``; paho reads that as
    "no data yet".
    """

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._data = b""
        self._offset = 0
        self._decrypted: Any = getattr(sock, "pending", None)  # SSLSocket.pending; plain sockets have none

    def recv(self, bufsize: int) -> bytes:
        if self._offset >= len(self._data):
            data = self._read(max(bufsize, _RECV_CHUNK))
            if len(data) <= bufsize:
                return data
            self._data, self._offset = data, 0
        end = min(self._offset + bufsize, len(self._data))
        chunk = self._data[self._offset : end]
        self._offset = end
        return chunk

    def _read(self, size: int) -> bytes:
        if self._decrypted is None:
            return self._sock.recv(size)
        data = self._sock.recv(_TLS_RECORD)  # SSLWantReadError when nothing is there: paho's "no data yet"
        if not data or self._sock.gettimeout() != 0.0:  # gather only where a read cannot block
            return data
        parts, total = [data], len(data)
        while total < size:
            try:
                more = self._sock.recv(_TLS_RECORD)
            except OSError:  # nothing more yet (SSLWantReadError), or an error the next read reports
                break
            if not more:
                break
            parts.append(more)
            total += len(more)
        return b"".join(parts)

    def unread(self) -> tuple[bytes, int]:
        """The buffer and the offset of its first unread byte (see ``consume``)."""
        return self._data, self._offset

    def consume(self, end: int) -> None:
        """Mark the buffer read up to ``end`` (a packet the client decoded in place)."""
        self._offset = end

    def pending(self) -> int:
        buffered = len(self._data) - self._offset
        if buffered or self._decrypted is None:
            return buffered
        return int(self._decrypted())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class BufferedPublish(NamedTuple):
    """A PUBLISH packet whole in the read buffer, split into paho's fields (``end``: the offset after it)."""

    end: int
    dup: bool
    qos: int
    retain: bool
    topic: bytes
    mid: int
    payload: bytes


def split_publish(data: bytes, offset: int, v5: bool) -> BufferedPublish | None:
    """The QoS 0 or 1 PUBLISH starting at ``data[offset]`` if it is whole and needs nothing of paho.

    None for anything else: another packet type, QoS 2, a packet not yet wholly read, MQTT 5
    properties (paho's decoder keeps them), an empty topic under MQTT 3.1.1 or any malformed field.
    The caller then lets paho read the packet, which gives it paho's exact handling and errors.
    """
    size = len(data)
    if offset + 2 > size:
        return None
    header = data[offset]
    qos = (header >> 1) & 0x03
    if header >> 4 != 3 or qos > 1:  # another packet type, or QoS 2 (or the invalid 3)
        return None
    remaining, shift, pos = 0, 0, offset + 1
    while True:  # the remaining length: a varint of at most 4 bytes
        if pos >= size or shift > 21:
            return None
        byte = data[pos]
        pos += 1
        remaining |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    end = pos + remaining
    if end > size or remaining < 2:
        return None
    topic_end = pos + 2 + (data[pos] << 8 | data[pos + 1])
    body = topic_end + 2 if qos else topic_end
    if body > end or (topic_end == pos + 2 and not v5):
        return None
    mid = data[topic_end] << 8 | data[topic_end + 1] if qos else 0
    if v5:
        if body >= end or data[body] != 0:  # no property length, or properties: paho's decoder
            return None
        body += 1
    return BufferedPublish(end, bool(header & 0x08), qos, bool(header & 0x01), data[pos + 2 : topic_end], mid, data[body:end])


class SharedTableProperties(Properties):
    """paho's MQTT 5 ``Properties`` with its lookup tables built once, not per packet.

    paho builds a dozen name and type tables in every ``Properties()``, and decodes each MQTT 5
    PUBLISH into a new one (about 6 µs a message), then clears it property by property before
    decoding even an empty property list. The tables are never modified after construction, so
    every instance shares the first one's, and a fresh PUBLISH with no properties skips the clearing.
    Property values remain per instance, so behaviour is unchanged (test_bridge_mqtt_session).
    """

    _tables: dict[str, Any] | None = None

    def __init__(self, packetType: int) -> None:  # noqa: N803 - paho's parameter name
        tables = SharedTableProperties._tables
        if tables is None:
            super().__init__(packetType)
            SharedTableProperties._tables = {k: v for k, v in vars(self).items() if k != "packetType"}
        else:
            self.__dict__.update(tables)
            self.packetType = packetType

    def unpack(self, buffer: bytes) -> tuple["SharedTableProperties", int]:
        # Device telemetry rarely carries properties: a zero length needs no clearing or parsing.
        # A fresh instance holds only the shared tables and packetType: no value to clear.
        fresh = self._tables is not None and len(self.__dict__) == len(self._tables) + 1
        if buffer[:1] == b"\x00" and fresh and self.packetType == PacketTypes.PUBLISH:
            return self, 1
        return super().unpack(buffer)


@functools.cache
def _no_publish_properties() -> SharedTableProperties:
    """The empty property list of every in-place decoded MQTT 5 PUBLISH, shared: building one per
    message cost 2-3% of the bridge's samples, and nothing on the bridge's path modifies it."""
    return SharedTableProperties(PacketTypes.PUBLISH)


def install_shared_table_properties() -> None:
    """Make paho's packet decoder (paho-mqtt 2.2.0 ``_packet``) build SharedTableProperties."""
    paho.mqtt._packet.Properties = SharedTableProperties  # type: ignore[attr-defined]


class ReceivedMessage(MQTTMessage):
    """An MQTTMessage whose ``info`` is a shared placeholder: received messages are not tracked."""

    __slots__ = ()
    _UNTRACKED = MQTTMessageInfo(0)

    def __init__(self, mid: int, topic: bytes) -> None:
        self.mid = mid
        self._topic = topic
        self.state = mqtt_ms_invalid
        self.info = self._UNTRACKED


class FastBridgeClient(PublicBridgeClient):
    """paho's Client, leaner per message (see the module docstring; paho-mqtt 2.2.0 only)."""

    _read_pace = Pace(0.0)  # unpaced until pace_reads

    def pace_reads(self, interval_s: float) -> None:
        """Start a socket read at most once per ``interval_s`` (IOT_BRIDGE_BATCH_INTERVAL_MS, pace.py).

        At a steady moderate rate the broker writes each PUBLISH as it comes, so an unpaced reader
        wakes up for one or two messages at a time: select, a TLS record and the hand-off then cost
        more than the message. A read here takes every packet already there, so a paced one takes
        what arrived during the interval.
        """
        self._read_pace = Pace(interval_s)

    def send_pubacks(self, mids: list[int]) -> None:
        """Queue a PUBACK for each QoS 1 packet id, in order, as one outgoing write.

        paho's ``ack()`` queues one packet per ack and writes a byte to its wake-up socket pair for
        each; one packet carrying all of them wakes the network thread once and is sent with one
        ``send()``. paho resumes a partial write at the right byte, and drops the queue on reconnect.
        """
        if mids:
            self._packet_queue(PUBACK, b"".join([_PUBACK.pack(PUBACK, 2, mid) for mid in mids]), 0, 1)

    def _create_socket(self) -> Any:
        sock = super()._create_socket()  # for TLS: the SSLSocket, handshake done
        if self._transport != "tcp":
            return sock
        return _BufferedSocket(sock)

    def _handle_publish(self) -> MQTTErrorCode:
        """paho's PUBLISH handling for QoS 0 and 1, minus two per-message costs the bridge never needs.

        paho gives every received message an ``MQTTMessageInfo`` (a lock and a condition, used only
        to track outgoing publishes), and formats a debug log line for it. A received message here
        shares one untracked info. QoS 2, which a QoS 1 subscription never receives, stays paho's.
        """
        packet = self._in_packet
        result = paho.mqtt._packet.decode_publish(packet["command"], packet["packet"], self._protocol)
        if result.qos == 2:
            return super()._handle_publish()
        message = ReceivedMessage(result.mid, result.topic)
        message.dup = result.dup
        message.qos = result.qos
        message.retain = result.retain
        message.properties = result.properties
        message.payload = result.payload
        message.timestamp = time.monotonic()  # paho's time_func; the bridge's receive time
        self._handle_on_message(message)
        return MQTTErrorCode.MQTT_ERR_SUCCESS  # manual acks: the bridge acks after Kafka

    def _handle_on_message(self, message: MQTTMessage) -> None:
        """Call ``on_message`` directly.

        paho first matches every topic against the callbacks of ``message_callback_add`` (5-8% of
        the bridge's CPU in a profile); the bridge registers none, and refuses them below.
        """
        on_message = self.on_message
        if on_message is not None:
            with self._in_callback_mutex:
                on_message(self, self._userdata, message)

    def message_callback_add(self, sub: str, callback: Any) -> None:
        raise NotImplementedError("FastBridgeClient dispatches every message to on_message")

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """Read the packets already buffered (up to _PACKETS_PER_READ), one at a time, until the bridge
        holds more unacked messages than its window."""
        if self._paused():
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        self._read_pace.turn()
        over_window = self._over_window
        rc = Client.loop_read(self, max_packets)
        for _ in range(_PACKETS_PER_READ):
            sock = self._sock
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or not isinstance(sock, _BufferedSocket) or not sock.pending() or over_window():
                break
            if self._in_packet["command"] == 0 and self._handle_buffered_publish(sock):
                continue
            rc = Client.loop_read(self, max_packets)
        return rc

    def _handle_buffered_publish(self, sock: _BufferedSocket) -> bool:
        """Hand a PUBLISH that is whole in the buffer to ``on_message`` without paho's packet reader.

        paho reads a packet with three or more ``recv()`` calls and a state dictionary, then decodes
        it with struct formats built per packet: for the ~200-byte PUBLISHes of a drain that was a
        third of the bridge's samples. The result is what ``_handle_publish`` would build from the
        same bytes (test_bridge_paho_golden); False leaves the packet to paho (split_publish).
        """
        data, offset = sock.unread()
        v5 = self._protocol == MQTTv5
        packet = split_publish(data, offset, v5)
        if packet is None:
            return False
        sock.consume(packet.end)
        message = ReceivedMessage(packet.mid, packet.topic)
        message.dup = packet.dup
        message.qos = packet.qos
        message.retain = packet.retain
        message.properties = _no_publish_properties() if v5 else None
        message.payload = packet.payload
        message.timestamp = now = time.monotonic()  # paho's time_func; the bridge's receive time
        with self._msgtime_mutex:
            self._last_bytes_received = now
        self._handle_on_message(message)
        return True

    def _wait_for_acks(self) -> None:
        # While reading is paused the broker's PINGRESP waits unread in the socket, so its absence
        # says nothing about the connection: paho would otherwise close it after twice the
        # keepalive. PINGREQs still go out (the broker's side of the keepalive).
        self._ping_t = 0
        super()._wait_for_acks()

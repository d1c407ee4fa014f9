"""The MQTT side of the bridge: a persistent QoS 1 session with manual acks.

The session survives the bridge (MQTT 5 session expiry with ``clean_start=False``, or 3.1.1
``clean_session=False``), so messages the bridge never acked, including those it held when it
was killed, are redelivered to its next connection. The receive maximum (MQTT 5) and the broker's
inflight limit bound how many unacked messages the bridge holds: that window is its only buffer.

Speed: paho's per-message Python work is the bridge's bound, so BridgeClient overrides a few of its
paho-mqtt 2.2.0 internals (reads served from a buffer, no per-message tracking object or debug line,
no per-topic callback matching, acks in one write per batch). Each override keeps paho's behaviour
for what the bridge uses; test_bridge_mqtt_session compares them with stock paho and fails if an
upgrade removes a hook. Together with the MQTT 5 ``Properties`` tables they took one process from
about 16,600 to 28,600-33,900 msg/s here (docs/benchmarks.md).
"""

from __future__ import annotations

import logging
import struct
import time
from typing import Any

import paho.mqtt._packet
from paho.mqtt.client import (
    PUBACK,
    CallbackAPIVersion,
    Client,
    MQTTErrorCode,
    MQTTMessage,
    MQTTMessageInfo,
    MQTTv5,
    MQTTv311,
    mqtt_ms_invalid,
)
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from iot_platform.access.connection import bridge_credentials, configure
from iot_platform.settings import Settings


# Most packets the bridge reads are ~200-byte PUBLISHes; one recv() takes many of them at once.
_RECV_CHUNK = 256 * 1024
_PACKETS_PER_READ = 1_000  # then let paho write the queued PUBACKs and check keepalive
_PUBACK = struct.Struct("!BBH")  # type, remaining length 2, packet id: a success PUBACK in 3.1.1 and 5


class _BufferedSocket:
    """A TCP socket read in large chunks.

    paho reads each packet with three or more recv() calls (1 byte of type, the length byte by
    byte, then the body) and one select() per packet. Serving those reads from a buffer, and
    telling paho through ``pending()`` (the hook it uses for TLS sockets) that bytes are buffered,
    removes most system calls per message. Everything else is the real socket's.
    """

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._data = b""
        self._offset = 0

    def recv(self, bufsize: int) -> bytes:
        if self._offset >= len(self._data):
            data = self._sock.recv(max(bufsize, _RECV_CHUNK))
            if len(data) <= bufsize:
                return data
            self._data, self._offset = data, 0
        end = min(self._offset + bufsize, len(self._data))
        chunk = self._data[self._offset : end]
        self._offset = end
        return chunk

    def pending(self) -> int:
        return len(self._data) - self._offset

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


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


class BridgeClient(Client):
    """paho's Client, leaner per message (see the module docstring; pinned paho-mqtt 2.2.0)."""

    def send_pubacks(self, mids: list[int]) -> None:
        """Queue a PUBACK for each QoS 1 packet id, in order, as one outgoing write.

        paho's ``ack()`` queues one packet per ack and writes a byte to its wake-up socket pair for
        each; one packet carrying all of them wakes the network thread once and is sent with one
        ``send()``. paho resumes a partial write at the right byte, and drops the queue on reconnect.
        """
        if mids:
            self._packet_queue(PUBACK, b"".join([_PUBACK.pack(PUBACK, 2, mid) for mid in mids]), 0, 1)

    def _create_socket(self) -> Any:
        sock = super()._create_socket()
        if self._ssl or self._transport != "tcp":
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
        raise NotImplementedError("BridgeClient dispatches every message to on_message")

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        rc = super().loop_read(max_packets)
        for _ in range(_PACKETS_PER_READ):
            sock = self._sock
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or not isinstance(sock, _BufferedSocket) or not sock.pending():
                break
            rc = super().loop_read(max_packets)
        return rc


def make_client(settings: Settings) -> BridgeClient:
    """A paho client for the bridge's session; not connected yet."""
    v5 = settings.mqtt_protocol == "5"
    if v5:
        install_shared_table_properties()
    client = BridgeClient(
        CallbackAPIVersion.VERSION2,
        client_id=settings.mqtt_client_id,
        protocol=MQTTv5 if v5 else MQTTv311,
        clean_session=None if v5 else False,
        manual_ack=True,
    )
    client.connect_timeout = settings.mqtt_connect_timeout_s
    client.enable_logger(logging.getLogger("iot_platform.bridge.paho"))
    configure(client, settings, bridge_credentials(settings))  # credentials; TLS for mqtts://
    return client


def connect_async(client: Client, settings: Settings) -> None:
    """Queue the first connection; paho's network thread makes (and remakes) it."""
    if settings.mqtt_protocol == "5":
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = settings.mqtt_session_expiry_s
        properties.ReceiveMaximum = settings.mqtt_receive_maximum
        client.connect_async(
            settings.mqtt_host, settings.mqtt_port, settings.mqtt_keepalive_s, clean_start=False, properties=properties
        )
    else:
        client.connect_async(settings.mqtt_host, settings.mqtt_port, settings.mqtt_keepalive_s)


def subscribe(client: Client, settings: Settings) -> None:
    if settings.mqtt_protocol == "5":
        client.subscribe(settings.mqtt_topic_filter, options=SubscribeOptions(qos=settings.mqtt_qos))
    else:
        client.subscribe(settings.mqtt_topic_filter, qos=settings.mqtt_qos)

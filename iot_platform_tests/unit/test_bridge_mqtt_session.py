"""The bridge's paho client: buffered reads hand paho exactly the bytes the socket delivered."""

from __future__ import annotations

import collections
import socket
import time

import pytest
from paho.mqtt.client import CallbackAPIVersion, Client, MQTTErrorCode, MQTTMessage, MQTTv5, MQTTv311

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from iot_platform.bridge.mqtt_session import BridgeClient, SharedTableProperties, _BufferedSocket, install_shared_table_properties, make_client
from iot_platform.settings import Settings


def test_paho_still_has_the_hooks_the_bridge_overrides() -> None:
    """BridgeClient relies on paho 2.2 internals; an upgrade that removes them must fail here, not in production."""
    hooks = (
        "_create_socket", "loop_read", "_sock", "_ssl", "_transport", "_packet_queue", "_out_packet",
        "_handle_publish", "_in_packet", "_protocol", "_handle_on_message", "_in_callback_mutex", "_userdata",
    )  # fmt: skip
    for name in hooks:
        assert hasattr(Client, name) or name in Client.__init__.__code__.co_names, name


@pytest.mark.parametrize("reads", [[1, 1, 5, 100], [3, 3, 3, 3, 3, 3, 3], [1, 2, 10_000]])
def test_buffered_socket_returns_the_stream_in_order(reads: list[int]) -> None:
    """Whatever read sizes paho asks for, the concatenated reads are the bytes sent, and pending() counts the rest."""
    left, right = socket.socketpair()
    try:
        sent = bytes(range(256)) * 4
        left.sendall(sent)
        buffered = _BufferedSocket(right)
        received = b""
        for size in reads:
            chunk = buffered.recv(size)
            assert len(chunk) <= size
            received += chunk
            assert buffered.pending() + len(received) <= len(sent)
        while len(received) < len(sent):
            received += buffered.recv(7)
        assert received == sent
        assert buffered.pending() == 0
        assert buffered.fileno() == right.fileno()  # everything else is the real socket's
    finally:
        left.close()
        right.close()


@pytest.mark.parametrize(("protocol", "v5"), [("5", True), ("3.1.1", False)])
def test_client_uses_manual_acks_and_a_persistent_session(protocol: str, v5: bool) -> None:
    """The bridge's client acks manually and never asks for a clean session."""
    client = make_client(Settings(mqtt_protocol=protocol, mqtt_client_id="unit-bridge"))
    assert isinstance(client, BridgeClient)
    assert client._manual_ack is True  # noqa: SLF001
    assert client._protocol == (MQTTv5 if v5 else MQTTv311)  # noqa: SLF001
    if not v5:
        assert client._clean_session is False  # noqa: SLF001


def test_paho_packet_decoder_still_builds_properties_by_module_name() -> None:
    """install_shared_table_properties replaces paho 2.2's `_packet.Properties`; an upgrade that moves it fails here."""
    import paho.mqtt._packet as packet

    assert "Properties" in vars(packet)


@pytest.mark.parametrize("packet_type", [PacketTypes.PUBLISH, PacketTypes.CONNECT, PacketTypes.CONNACK])
def test_shared_table_properties_behave_like_paho_properties(packet_type: int) -> None:
    """Packing, unpacking and per-instance values are exactly paho's, and instances never share values."""
    def fill(props: Properties) -> Properties:
        if packet_type == PacketTypes.PUBLISH:
            props.MessageExpiryInterval = 60
            props.UserProperty = ("a", "1")
            props.UserProperty = ("b", "2")
        elif packet_type == PacketTypes.CONNECT:
            props.SessionExpiryInterval = 3600
            props.ReceiveMaximum = 1000
        else:
            props.ReceiveMaximum = 20
            props.AssignedClientIdentifier = "x"
        return props

    ours, theirs = fill(SharedTableProperties(packet_type)), fill(Properties(packet_type))
    assert ours.pack() == theirs.pack()
    decoded, length = SharedTableProperties(packet_type).unpack(theirs.pack())
    expected, expected_length = Properties(packet_type).unpack(theirs.pack())
    assert (str(decoded), length) == (str(expected), expected_length)
    empty = SharedTableProperties(packet_type)
    assert empty.isEmpty() and str(empty) == str(Properties(packet_type))
    assert empty.unpack(b"\x00") == (empty, 1) and empty.isEmpty()
    reused = fill(SharedTableProperties(packet_type))
    assert reused.unpack(b"\x00") == (reused, 1) and reused.isEmpty(), "an empty list clears earlier values"


def test_decoded_publish_uses_shared_tables_and_keeps_its_payload() -> None:
    """With the decoder patched, an MQTT 5 PUBLISH decodes to the same topic, payload and properties."""
    import paho.mqtt._packet as packet
    from paho.mqtt.enums import MQTTProtocolVersion

    body = b"\x00\x03a/b" + b"\x00\x07" + b"\x05\x02\x00\x00\x00\x3c" + b'{"v": 1}'
    before = packet.decode_publish(0x32, body, MQTTProtocolVersion.MQTTv5)
    install_shared_table_properties()
    after = packet.decode_publish(0x32, body, MQTTProtocolVersion.MQTTv5)
    assert isinstance(after.properties, SharedTableProperties)
    assert (after.topic, after.mid, after.payload) == (before.topic, before.mid, before.payload) == (b"a/b", 7, b'{"v": 1}')
    assert after.properties.MessageExpiryInterval == before.properties.MessageExpiryInterval == 60


def test_send_pubacks_queues_one_packet_holding_every_puback_in_order() -> None:
    """A batch of acks is one outgoing write of 4-byte PUBACKs (type 0x40, length 2, packet id)."""
    client = make_client(Settings(mqtt_client_id="unit-bridge"))
    client.send_pubacks([1, 300, 65535])
    client.send_pubacks([])
    queued = list(client._out_packet)  # noqa: SLF001
    assert len(queued) == 1
    assert bytes(queued[0]["packet"]) == bytes.fromhex("40020001" "4002012c" "4002ffff")
    assert queued[0]["to_process"] == 12 and queued[0]["pos"] == 0


def test_every_message_goes_to_on_message_and_filtered_callbacks_are_refused() -> None:
    """BridgeClient skips paho's per-topic callback matching, so it must refuse filtered callbacks."""
    client = make_client(Settings(mqtt_client_id="unit-bridge"))
    seen: list[bytes] = []
    client.on_message = lambda _c, _u, message: seen.append(message.payload)
    message = MQTTMessage(mid=1, topic=b"a/b")
    message.payload = b"x"
    client._handle_on_message(message)  # noqa: SLF001
    assert seen == [b"x"]
    with pytest.raises(NotImplementedError):
        client.message_callback_add("a/#", lambda *_: None)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
@pytest.mark.parametrize("command", [0x32, 0x3B, 0x30])  # QoS 1; QoS 1 + dup + retain; QoS 0
def test_received_publish_reaches_on_message_exactly_as_paho_builds_it(protocol: str, command: int) -> None:
    """BridgeClient's leaner PUBLISH handling gives on_message the same message stock paho does."""
    v5 = protocol == "5"
    qos = (command >> 1) & 3
    body = b"\x00\x0ct/acme/p1/d7" + (b"\x01\x2c" if qos else b"") + (b"\x00" if v5 else b"") + b'{"v": 1}'
    stock = Client(CallbackAPIVersion.VERSION2, protocol=MQTTv5 if v5 else MQTTv311, manual_ack=True)
    ours = make_client(Settings(mqtt_protocol=protocol, mqtt_client_id="unit-bridge"))
    seen = []
    for client in (stock, ours):
        client.on_message = lambda _c, _u, message: seen.append(message)
        client._in_packet = {"command": command, "packet": body}  # noqa: SLF001
        assert client._handle_publish() == MQTTErrorCode.MQTT_ERR_SUCCESS  # noqa: SLF001
    theirs, mine = seen
    fields = ("topic", "payload", "qos", "retain", "dup", "mid", "state")
    assert [getattr(mine, f) for f in fields] == [getattr(theirs, f) for f in fields]
    assert (mine.topic, mine.qos, mine.mid if qos else 0) == ("t/acme/p1/d7", qos, 300 if qos else 0)
    assert str(mine.properties) == str(theirs.properties)
    assert abs(mine.timestamp - time.monotonic()) < 5, "the bridge's receive time is on the monotonic clock"
    assert ours._out_packet == collections.deque()  # noqa: SLF001  # manual acks: nothing sent yet

"""The bridge's paho clients: path choice, buffered reads, PUBLISH packets split in place, shared
property tables, batched PUBACKs, paused reading. Packet handling against stock paho:
test_bridge_paho_golden.py."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.client import Client, MQTTErrorCode, MQTTMessage, MQTTv5, MQTTv311
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from iot_platform.bridge.mqtt_session import make_client
from iot_platform.bridge.paho_client import FAST_PATH_AVAILABLE, FAST_PATH_PAHO_VERSION, PAHO_VERSION, PublicBridgeClient, choose_client_path
from iot_platform.settings import Settings
from iot_platform.stack.certs import server_certificate
from iot_platform_tests.unit.test_bridge_paho_golden import publish

fast_only = pytest.mark.skipif(not FAST_PATH_AVAILABLE, reason="the fast path runs only on the paho-mqtt release it was written for")
if FAST_PATH_AVAILABLE:
    from iot_platform.bridge.paho_fast import FastBridgeClient, SharedTableProperties, _BufferedSocket


@pytest.mark.parametrize(
    ("installed", "requested", "fast"),
    [("2.2.0", "auto", True), ("2.2.0", "public", False), ("2.2.1", "auto", False), ("2.1.0", "auto", False),
     ("3.0.0", "public", False)],
)
def test_fast_path_only_on_the_paho_release_it_was_written_for(installed: str, requested: str, fast: bool) -> None:
    """Any other paho-mqtt version, or IOT_MQTT_CLIENT_PATH=public, takes the public API path, and says why."""
    path = choose_client_path(installed, requested)
    assert path.fast is fast and path.name == ("fast" if fast else "public")
    assert (installed in path.reason) or requested == "public"


def test_installed_paho_is_the_release_the_fast_path_was_written_for() -> None:
    """The pin in pyproject.toml and the gate agree: CI runs the fast path (the public one is forced in tests)."""
    assert PAHO_VERSION == FAST_PATH_PAHO_VERSION and FAST_PATH_AVAILABLE


@pytest.mark.parametrize(("requested", "expected"), [("auto", "FastBridgeClient"), ("public", "PublicBridgeClient")])
def test_make_client_builds_the_client_of_the_chosen_path(requested: str, expected: str) -> None:
    client = make_client(Settings(mqtt_client_id="unit-bridge", mqtt_client_path=requested))
    assert type(client).__name__ == expected and isinstance(client, PublicBridgeClient)
    assert client.path.name == ("fast" if expected == "FastBridgeClient" else "public")


@fast_only
def test_paho_still_has_the_hooks_the_fast_path_overrides() -> None:
    """FastBridgeClient relies on paho 2.2 internals; an upgrade that removes them must fail here, not in production."""
    hooks = (
        "_create_socket", "loop_read", "_sock", "_transport", "_packet_queue", "_out_packet",
        "_handle_publish", "_in_packet", "_protocol", "_handle_on_message", "_in_callback_mutex", "_userdata",
        "_ping_t", "_msgtime_mutex", "_last_bytes_received",
    )  # fmt: skip
    for name in hooks:
        assert hasattr(Client, name) or name in Client.__init__.__code__.co_names, name


@fast_only
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


class _CountingSocket:
    """A socket whose recv() calls are counted."""

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self.sock, self.recvs = sock, 0

    def recv(self, bufsize: int) -> bytes:
        self.recvs += 1
        return self.sock.recv(bufsize)

    def pending(self) -> int:
        return self.sock.pending()

    def gettimeout(self) -> float | None:
        return self.sock.gettimeout()


def read_exactly(sock: "_BufferedSocket", size: int) -> bytes:
    """``size`` bytes, as paho assembles them: a read may end short at a record or buffer boundary."""
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "end of stream"
        data += chunk
    return data


@contextmanager
def tls_stream(tmp_path: Path, send: Callable[[ssl.SSLSocket], None]) -> Iterator[tuple[ssl.SSLSocket, threading.Event]]:
    """A TLS connection over a socket pair, verified as the bridge's is: a "broker" thread runs
    ``send`` on its end; yields the client end and an event set once ``send`` returned."""
    cert = server_certificate(tmp_path, "broker")
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert.cert, cert.key)
    client_context = ssl.create_default_context(cafile=str(cert.ca))
    left, right = socket.socketpair()
    sent, done = threading.Event(), threading.Event()

    def broker() -> None:
        with server_context.wrap_socket(left, server_side=True) as tls:
            send(tls)
            sent.set()
            done.wait(10)

    thread = threading.Thread(target=broker, daemon=True)
    thread.start()
    try:
        with client_context.wrap_socket(right, server_hostname="localhost") as tls:
            yield tls, sent
    finally:
        done.set()
        thread.join(10)


TELEMETRY_PACKETS = [bytes([0x30, 198]) + bytes([i % 256]) * 198 for i in range(1_000)]  # 200-byte PUBLISH-like


@fast_only
def test_buffered_tls_socket_serves_paho_sized_reads_from_few_tls_reads(tmp_path: Path) -> None:
    """Over TLS, 1,000 200-byte packets read as paho does (type byte, length byte, body: 3,000 reads)
    arrive whole and in order from a handful of SSLSocket reads (one per TLS record, not per packet);
    pending() counts what OpenSSL decrypted but did not hand out, which select() cannot see; an empty
    non-blocking socket raises SSLWantReadError, paho's "no data yet"."""
    packets = TELEMETRY_PACKETS
    with tls_stream(tmp_path, lambda tls: tls.sendall(b"".join(packets))) as (tls, _):
        tls.settimeout(10)
        first = tls.recv(2)  # as paho would without the buffer: OpenSSL keeps the rest of the record
        counting = _CountingSocket(tls)
        buffered = _BufferedSocket(counting)
        assert buffered.pending() == tls.pending() > 0, "decrypted bytes are reported as pending"
        received = [first + read_exactly(buffered, 198)]
        for _ in packets[1:]:
            head = read_exactly(buffered, 1) + read_exactly(buffered, 1)
            received.append(head + read_exactly(buffered, head[1]))
        assert received == packets
        assert counting.recvs <= 40, counting.recvs  # ~13 records of 16 KiB, against 3,000 reads
        assert buffered.pending() == 0
        tls.setblocking(False)
        with pytest.raises(ssl.SSLWantReadError):
            buffered.recv(1)


@fast_only
def test_buffered_tls_socket_gathers_the_records_already_readable(tmp_path: Path) -> None:
    """Mosquitto writes one TLS record per packet: 100 packets sent as 100 records, all in the socket,
    come out of one fill of the buffer of a non-blocking socket (as paho's is), not one per packet."""
    packets = TELEMETRY_PACKETS[:100]

    def one_record_each(tls: ssl.SSLSocket) -> None:
        for packet in packets:
            tls.sendall(packet)

    with tls_stream(tmp_path, one_record_each) as (tls, sent):
        assert sent.wait(10), "the broker thread did not send"
        tls.setblocking(False)
        buffered = _BufferedSocket(tls)
        first = buffered.recv(2)
        assert buffered.pending() == 100 * 200 - 2, "every readable record in one fill"
        assert first + read_exactly(buffered, 100 * 200 - 2) == b"".join(packets)
        with pytest.raises(ssl.SSLWantReadError):
            buffered.recv(1)


@pytest.mark.parametrize(("protocol", "v5"), [("5", True), ("3.1.1", False)])
def test_client_uses_manual_acks_and_a_persistent_session(protocol: str, v5: bool) -> None:
    """The bridge's client acks manually and never asks for a clean session."""
    client = make_client(Settings(mqtt_protocol=protocol, mqtt_client_id="unit-bridge"))
    assert client._manual_ack is True  # noqa: SLF001
    assert client._protocol == (MQTTv5 if v5 else MQTTv311)  # noqa: SLF001
    if not v5:
        assert client._clean_session is False  # noqa: SLF001


@fast_only
def test_paho_packet_decoder_still_builds_properties_by_module_name() -> None:
    """install_shared_table_properties replaces paho 2.2's `_packet.Properties`; an upgrade that moves it fails here."""
    import paho.mqtt._packet as packet

    assert "Properties" in vars(packet)


@fast_only
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


@fast_only
def test_send_pubacks_queues_one_packet_holding_every_puback_in_order() -> None:
    """A batch of acks is one outgoing write of 4-byte PUBACKs (type 0x40, length 2, packet id)."""
    client = make_client(Settings(mqtt_client_id="unit-bridge"))
    client.send_pubacks([1, 300, 65535])
    client.send_pubacks([])
    queued = list(client._out_packet)  # noqa: SLF001
    assert len(queued) == 1
    assert bytes(queued[0]["packet"]) == bytes.fromhex("40020001" "4002012c" "4002ffff")
    assert queued[0]["to_process"] == 12 and queued[0]["pos"] == 0


@fast_only
def test_every_message_goes_to_on_message_and_filtered_callbacks_are_refused() -> None:
    """FastBridgeClient skips paho's per-topic callback matching, so it must refuse filtered callbacks."""
    client = make_client(Settings(mqtt_client_id="unit-bridge"))
    seen: list[bytes] = []
    client.on_message = lambda _c, _u, message: seen.append(message.payload)
    message = MQTTMessage(mid=1, topic=b"a/b")
    message.payload = b"x"
    client._handle_on_message(message)  # noqa: SLF001
    assert seen == [b"x"]
    with pytest.raises(NotImplementedError):
        client.message_callback_add("a/#", lambda *_: None)


def test_public_path_queues_the_same_puback_bytes_one_packet_per_ack() -> None:
    """paho's own ack() per message: the bytes on the wire are the fast path's batch, in the same order."""
    client = make_client(Settings(mqtt_client_id="unit-bridge", mqtt_client_path="public"))
    client.send_pubacks([1, 300, 65535])
    assert b"".join(bytes(p["packet"]) for p in client._out_packet) == bytes.fromhex("40020001" "4002012c" "4002ffff")  # noqa: SLF001


class RecordingEvent(threading.Event):
    """An Event that records each wait's timeout instead of sleeping."""

    def __init__(self) -> None:
        super().__init__()
        self.timeouts: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.timeouts.append(timeout)
        return self.is_set()


@pytest.mark.parametrize("path", ["auto", "public"])
def test_reading_pauses_above_the_window_without_spinning_and_still_writes_pubacks(path: str) -> None:
    """Over the window, loop_read reads nothing and sleeps (no busy loop) unless PUBACKs can be written
    now; under it, the waiting PUBLISH is read."""
    client = make_client(Settings(mqtt_protocol="3.1.1", mqtt_client_id="unit-bridge", mqtt_client_path=path))
    broker, ours = socket.socketpair()
    try:
        broker.sendall(b"\x30\x04\x00\x01tx")  # QoS 0 PUBLISH, topic "t", payload "x"
        client._sock = ours  # noqa: SLF001
        client._ping_t = 123.0  # noqa: SLF001  # a PINGREQ outstanding; its PINGRESP would sit unread
        seen: list[bytes] = []
        client.on_message = lambda _c, _u, message: seen.append(message.payload)
        over, acks_sent = [True], RecordingEvent()
        client.pause_reading_while(lambda: over[0], acks_sent)
        assert client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
        assert seen == [] and ours.recv(16, socket.MSG_PEEK) == b"\x30\x04\x00\x01tx"
        assert len(acks_sent.timeouts) == 1 and acks_sent.timeouts[0] > 0, "paused: sleeps until acks are sent"
        if path == "auto":
            assert client._ping_t == 0, "fast path: no keepalive timeout for a PINGRESP it chose not to read"  # noqa: SLF001
        # A PUBACK queued by the producer thread (under loop_start paho's thread writes it; here we hold it).
        client._out_packet.append({"command": 0x40, "mid": 9, "qos": 1, "pos": 0, "to_process": 4,  # noqa: SLF001
                                   "packet": b"\x40\x02\x00\x09", "info": None})
        client.loop_read()
        assert len(acks_sent.timeouts) == 1, "a PUBACK waits to be written: return at once so paho writes it"
        client._out_packet.clear()  # noqa: SLF001
        over[0] = False
        client.loop_read()
        assert seen == [b"x"]
    finally:
        broker.close()
        ours.close()


_publish_fields = st.tuples(
    st.binary(max_size=40), st.binary(max_size=300), st.sampled_from([0, 1]), st.integers(1, 65535), st.booleans(), st.booleans(),
)


@fast_only
@settings(max_examples=300, deadline=None)
@given(fields=_publish_fields, v5=st.booleans(), properties=st.sampled_from([b"", b"\x01\x01", b"\x02\x00\x00\x00\x3c"]),
       before=st.binary(max_size=8), cut=st.integers(0, 400))
def test_split_publish_agrees_with_paho_or_leaves_the_packet_to_it(
    fields: tuple[bytes, bytes, int, int, bool, bool], v5: bool, properties: bytes, before: bytes, cut: int,
) -> None:
    """A whole PUBLISH without properties decodes exactly as paho's decode_publish does; a cut one,
    one with properties, or an empty 3.1.1 topic is None (paho reads it), and the offset is honoured."""
    from paho.mqtt import _packet
    from paho.mqtt.enums import MQTTProtocolVersion

    from iot_platform.bridge.paho_fast import split_publish

    topic, payload, qos, mid, dup, retain = fields
    packet = publish(topic, payload, qos, mid if qos else 0, v5=v5, dup=dup, retain=retain, properties=properties if v5 else b"")
    data = before + packet
    assert split_publish(data[: len(before) + min(cut, len(packet) - 1)], len(before), v5) is None  # not whole yet
    found = split_publish(data + b"\xd0\x00", len(before), v5)  # a PINGRESP after it is not read
    if (v5 and properties) or (not v5 and not topic):
        assert found is None
        return
    assert found is not None and found.end == len(data)
    protocol = MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311
    header_length = 2 + (len(packet) > 129) + (len(packet) > 16386)
    expected = _packet.decode_publish(packet[0], packet[header_length:], protocol)
    assert (found.dup, found.qos, found.retain, found.topic, found.mid, found.payload) == (
        expected.dup, expected.qos, expected.retain, expected.topic, expected.mid, expected.payload,
    )


@fast_only
@pytest.mark.parametrize("data", [
    b"\xd0\x00",  # PINGRESP
    b"\x34\x05\x00\x01t\x00\x01",  # QoS 2
    b"\x36\x05\x00\x01t\x00\x01",  # QoS "3"
    b"\x32\x03\x00\x05t",  # topic length beyond the packet
    b"\x32\x01\x00",  # remaining length too short for a topic length
    b"\x30\xff\xff\xff\xff\x01",  # remaining length over 4 bytes
    b"\x90\x03\x00\x01\x00",  # SUBACK
])  # fmt: skip
def test_split_publish_leaves_other_and_malformed_packets_to_paho(data: bytes) -> None:
    from iot_platform.bridge.paho_fast import split_publish

    assert split_publish(data, 0, False) is None and split_publish(data, 0, True) is None


@fast_only
def test_publishes_decoded_in_place_count_as_traffic_for_the_keepalive() -> None:
    """The packets after the first of a read are decoded in place (not by paho's reader), and each one
    still refreshes paho's last-received time: without it a long drain read this way would look like a
    silent broker to paho's keepalive check."""
    client = make_client(Settings(mqtt_protocol="3.1.1", mqtt_client_id="unit-bridge"))
    broker, ours = socket.socketpair()
    try:
        broker.sendall(b"".join(publish(f"t/{n}".encode(), b"x", 0, v5=False) for n in range(3)))
        client._sock = _BufferedSocket(ours)  # noqa: SLF001
        client._last_bytes_received = 0.0  # noqa: SLF001
        seen: list[tuple[float, float]] = []  # (message's receive time, paho's last-received time) in the callback
        client.on_message = lambda c, _u, message: seen.append((message.timestamp, c._last_bytes_received))  # noqa: SLF001
        assert client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
        assert len(seen) == 3
        assert 0.0 < seen[0][1] < seen[0][0]  # paho's reader refreshed it while reading, before its receive time
        assert all(received == last_received for received, last_received in seen[1:])  # decoded in place: at receipt
    finally:
        broker.close()
        ours.close()


@pytest.mark.parametrize("path", ["auto", "public"])
@pytest.mark.parametrize("interval_ms", [0, 40])
def test_reads_in_quick_succession_are_paced_by_the_batch_interval(path: str, interval_ms: int) -> None:
    """IOT_BRIDGE_BATCH_INTERVAL_MS on the fast path: a read that follows the previous one within the
    interval starts when the interval is over (so it takes what arrived meanwhile); 0 reads at once.
    The public path, whose reads take one packet each, always reads at once."""
    client = make_client(Settings(mqtt_protocol="3.1.1", mqtt_client_id="unit-bridge", mqtt_client_path=path,
                                  bridge_batch_interval_ms=interval_ms))
    broker, ours = socket.socketpair()
    try:
        client._sock = ours  # noqa: SLF001
        seen: list[bytes] = []
        client.on_message = lambda _c, _u, message: seen.append(message.payload)
        took = []
        for payload in (b"a", b"b", b"c"):
            broker.sendall(b"\x30\x04\x00\x01t" + payload)  # QoS 0 PUBLISH, topic "t"
            started = time.monotonic()
            client.loop_read()
            took.append(time.monotonic() - started)
        assert seen == [b"a", b"b", b"c"]
        assert took[0] < 0.02, "the first read starts at once"
        gaps = took[1:]
        if interval_ms and path == "auto":
            assert min(gaps) >= 0.9 * interval_ms / 1000, gaps
        else:
            assert max(gaps) < 0.02, gaps
    finally:
        broker.close()
        ours.close()

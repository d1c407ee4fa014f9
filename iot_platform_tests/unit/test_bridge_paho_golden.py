"""Golden tests: the bridge's paho clients handle packets exactly as stock paho-mqtt does.

A scripted broker on loopback sends CONNACK and a fixed stream of packets (QoS 0 and 1, dup and
retain, MQTT 5 properties, an empty and a 300 KB payload, a non-UTF-8 topic, an unsolicited
PINGRESP, 600 small messages), cut into random-sized TCP segments. The reference is stock paho in a
subprocess that never imports the bridge (so its decoder is never patched); the bridge's client runs
on the fast path and on the public path, each in a subprocess of its own. Both must hand
``on_message`` the same messages and write back the same bytes (PUBACKs in order, then DISCONNECT).
"""

from __future__ import annotations

import json
import random
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from iot_platform.bridge.paho_client import FAST_PATH_AVAILABLE


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(text: bytes) -> bytes:
    return struct.pack("!H", len(text)) + text


def publish(topic: bytes, payload: bytes, qos: int, mid: int = 0, *, v5: bool, dup: bool = False, retain: bool = False,
            properties: bytes = b"") -> bytes:
    body = _string(topic) + (struct.pack("!H", mid) if qos else b"")
    if v5:
        body += _varint(len(properties)) + properties
    body += payload
    return bytes([0x30 | dup << 3 | qos << 1 | retain]) + _varint(len(body)) + body


def stream(v5: bool) -> tuple[bytes, int]:
    """The broker's packets after CONNACK, and how many PUBLISHes they hold."""
    props = (
        b"\x01\x01"  # payload format indicator: UTF-8
        + b"\x02" + struct.pack("!I", 60)  # message expiry interval
        + b"\x03" + _string(b"application/json")  # content type
        + b"\x08" + _string(b"reply/here")  # response topic
        + b"\x09" + _string(b"\x00\x01corr")  # correlation data
        + b"\x0b" + _varint(7)  # subscription identifier
        + b"\x26" + _string(b"a") + _string(b"1")  # user properties, twice
        + b"\x26" + _string(b"b") + _string(b"2")
    )
    packets = [
        publish(b"mtic/msg/client/realtime/acme/p1/d7", b'{"v": 1}', 1, 1, v5=v5),
        publish(b"mtic/msg/client/realtime/acme/p1/d7", b"qos zero", 0, v5=v5),
        publish(b"mtic/msg/client/realtime/acme/p2", b"again", 1, 2, v5=v5, dup=True, retain=True),
        publish(b"t/props", b'{"p": true}', 1, 3, v5=v5, properties=props if v5 else b""),
        publish(b"t/empty", b"", 1, 4, v5=v5),
        bytes([0xD0, 0x00]),  # an unsolicited PINGRESP, between two PUBLISHes
        publish(b"t/big", bytes(range(256)) * 1200, 1, 5, v5=v5),  # 307,200 bytes: beyond one 256 KiB read
        publish("t/ünïcode/€".encode(), "température".encode(), 1, 6, v5=v5),
        publish(b"t/\xff\xfe", b"bad topic bytes", 1, 7, v5=v5),
        publish(b"t/last-id", b"x", 1, 65535, v5=v5),
    ]
    packets += [publish(f"t/many/{n % 17}".encode(), f'{{"seq": {n}}}'.encode(), 1 if n % 5 else 0, 100 + n, v5=v5)
                for n in range(600)]
    return b"".join(packets), sum(1 for p in packets if p[0] >> 4 == 3)


class ScriptedBroker:
    """Accepts one client: reads its CONNECT, sends CONNACK then ``data`` in random segments, and
    records every byte the client writes afterwards until it closes the connection."""

    def __init__(self, data: bytes, v5: bool, seed: int) -> None:
        self._data, self._v5, self._rng = data, v5, random.Random(seed)
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self.received = b""
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self._server.settimeout(30)
        conn, _ = self._server.accept()
        with conn:
            conn.settimeout(30)
            buffered = b""
            while not _complete_packet(buffered):
                buffered += conn.recv(65536)
            connect_length = _complete_packet(buffered)
            after_connect = buffered[connect_length:]
            conn.sendall(b"\x20\x03\x00\x00\x00" if self._v5 else b"\x20\x02\x00\x00")
            offset = 0
            while offset < len(self._data):
                size = self._rng.choice([1, 2, 3, 7, 100, 1500, 65536, 300_000])
                conn.sendall(self._data[offset : offset + size])
                offset += size
                if self._rng.random() < 0.05:
                    time.sleep(0.002)
            chunks = [after_connect]
            while chunk := conn.recv(65536):
                chunks.append(chunk)
            self.received = b"".join(chunks)
        self._server.close()

    def join(self) -> bytes:
        self._thread.join(30)
        return self.received


def _complete_packet(data: bytes) -> int:
    """Length of the first MQTT packet in ``data`` when it is complete, else 0."""
    if len(data) < 2:
        return 0
    length, multiplier, index = 0, 1, 1
    while index < len(data):
        byte = data[index]
        length += (byte & 0x7F) * multiplier
        index += 1
        if not byte & 0x80:
            return index + length if len(data) >= index + length else 0
        multiplier *= 128
    return 0


def run_client(kind: str, protocol: str) -> tuple[list[dict[str, object]], bytes]:
    data, count = stream(protocol == "5")
    broker = ScriptedBroker(data, protocol == "5", seed=sum(map(ord, kind + protocol)))
    result = subprocess.run(
        [sys.executable, "-m", "iot_platform_tests.paho_golden_client", "--port", str(broker.port),
         "--protocol", protocol, "--client", kind, "--count", str(count)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout), broker.join()


@pytest.fixture(scope="module")
def stock() -> dict[str, tuple[list[dict[str, object]], bytes]]:
    return {protocol: run_client("stock", protocol) for protocol in ("5", "3.1.1")}


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
@pytest.mark.parametrize("kind", ["fast", "public"])
def test_bridge_client_matches_stock_paho(kind: str, protocol: str, stock: dict[str, tuple[list[dict[str, object]], bytes]]) -> None:
    """Same messages to on_message, same bytes back to the broker, on both code paths."""
    if kind == "fast" and not FAST_PATH_AVAILABLE:
        pytest.skip("the installed paho-mqtt is not the release the fast path was written for")
    expected_messages, expected_bytes = stock[protocol]
    messages, written = run_client(kind, protocol)
    assert len(expected_messages) == stream(protocol == "5")[1] == 609
    assert messages == expected_messages
    assert written == expected_bytes
    acked = sum(1 for m in expected_messages if m["qos"] == 1)
    assert written.startswith(b"".join(struct.pack("!BBH", 0x40, 2, m["mid"]) for m in expected_messages if m["qos"] == 1))
    assert len(written) >= 4 * acked + 2, "PUBACKs, then DISCONNECT"

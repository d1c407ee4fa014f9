"""The bridge's paho client: buffered reads hand paho exactly the bytes the socket delivered."""

from __future__ import annotations

import socket

import pytest
from paho.mqtt.client import Client, MQTTv5, MQTTv311

from iot_platform.bridge.mqtt_session import BridgeClient, _BufferedSocket, make_client
from iot_platform.settings import Settings


def test_paho_still_has_the_hooks_the_bridge_overrides() -> None:
    """BridgeClient relies on paho 2.2 internals; an upgrade that removes them must fail here, not in production."""
    for name in ("_create_socket", "loop_read", "_sock", "_ssl", "_transport"):
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

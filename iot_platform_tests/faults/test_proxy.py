"""The fault tests' TCP proxy itself: passes bytes, cuts with a reset, blackholes without loss."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator

import pytest

from iot_platform.stack.ports import free_port
from iot_platform.stack.tcp_proxy import TcpProxy

pytestmark = pytest.mark.faults


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65_536):
            self.request.sendall(data)


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    proxy = TcpProxy(free_port(), "127.0.0.1", server.server_address[1]).start()
    try:
        yield proxy
    finally:
        proxy.stop()
        server.shutdown()
        server.server_close()


def _connect(proxy: TcpProxy) -> socket.socket:
    return socket.create_connection((proxy.host, proxy.port), timeout=2)


def test_passes_bytes_both_ways(proxy: TcpProxy) -> None:
    """Bytes sent through the proxy come back from the echo server unchanged."""
    with _connect(proxy) as sock:
        sock.sendall(b"hello" * 1000)
        received = b""
        while len(received) < 5000:
            received += sock.recv(65_536)
    assert received == b"hello" * 1000


def test_cut_resets_connections_and_refuses_until_healed(proxy: TcpProxy) -> None:
    """cut() breaks open connections and refuses new ones; heal() accepts again on the same port."""
    sock = _connect(proxy)
    sock.sendall(b"x")
    assert sock.recv(1) == b"x"
    proxy.cut()
    with pytest.raises(OSError):
        sock.sendall(b"y" * 100_000)
        if not sock.recv(1):
            raise ConnectionResetError("closed")
    sock.close()
    with pytest.raises(OSError):
        _connect(proxy).close()
    proxy.heal()
    with _connect(proxy) as again:
        again.sendall(b"z")
        assert again.recv(1) == b"z"


def test_blackhole_holds_bytes_and_heal_delivers_them(proxy: TcpProxy) -> None:
    """During a blackhole nothing arrives (a read times out); after heal() the held bytes arrive intact."""
    with _connect(proxy) as sock:
        proxy.blackhole()
        sock.sendall(b"held")
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            sock.recv(4)
        proxy.heal()
        sock.settimeout(2)
        received = b""
        while len(received) < 4:
            received += sock.recv(4)
    assert received == b"held"

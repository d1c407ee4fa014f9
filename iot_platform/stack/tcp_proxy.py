"""A small TCP proxy for fault tests: pass traffic, cut every connection, or blackhole it.

- ``cut()``: reset every open connection (RST) and refuse new ones, as a crashed peer or a firewall
  reject would; ``heal()`` listens again on the same port.
- ``blackhole()``: bytes stop moving in both directions, but nothing is closed or lost, as during a
  network partition; new connections are accepted and then hang. ``heal()`` lets the held bytes
  through, so connections the peers did not time out themselves carry on intact.

Runs an asyncio loop in a daemon thread; the public methods are thread-safe and return once done.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from concurrent.futures import Future


class TcpProxy:
    def __init__(self, listen_port: int, upstream_host: str, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.host, self.port = host, listen_port
        self.upstream = (upstream_host, upstream_port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"proxy-{listen_port}", daemon=True)
        self._server: asyncio.Server | None = None
        self._flowing: asyncio.Event | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.connections_total = 0

    # -- control (any thread) -------------------------------------------------------------------
    def start(self) -> "TcpProxy":
        self._thread.start()
        self._call(self._start())
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._call(self._close_all(listening=False))
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    def cut(self) -> None:
        self._call(self._close_all(listening=False))

    def blackhole(self) -> None:
        self._call(self._set_flowing(False))

    def heal(self) -> None:
        self._call(self._heal())

    def _call(self, coroutine: object) -> None:
        future: Future[None] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)  # type: ignore[arg-type]
        future.result(timeout=10)

    # -- loop side ------------------------------------------------------------------------------
    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        await self._listen()

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._accept, self.host, self.port, reuse_address=True)

    async def _set_flowing(self, flowing: bool) -> None:
        assert self._flowing is not None
        self._flowing.set() if flowing else self._flowing.clear()

    async def _heal(self) -> None:
        await self._listen()
        await self._set_flowing(True)

    async def _close_all(self, listening: bool) -> None:
        if self._server is not None and not listening:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            _reset(writer)
        self._writers.clear()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        self.connections_total += 1
        self._writers.add(client_writer)
        try:
            await self._flowing.wait()
            upstream_reader, upstream_writer = await asyncio.wait_for(asyncio.open_connection(*self.upstream), 10)
        except (OSError, asyncio.TimeoutError):
            self._writers.discard(client_writer)
            _reset(client_writer)
            return
        self._writers.add(upstream_writer)
        await asyncio.gather(
            self._pump(client_reader, upstream_writer, client_writer),
            self._pump(upstream_reader, client_writer, upstream_writer),
        )

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, other: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        try:
            while True:
                data = await reader.read(65_536)
                if not data:
                    break
                await self._flowing.wait()  # a blackhole holds the bytes, it does not drop them
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in (writer, other):
                self._writers.discard(w)
                if not w.is_closing():
                    w.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (linger 0), as a refused or broken connection looks to the peer."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()

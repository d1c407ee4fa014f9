"""Loopback ports for the local platform and the tests."""

from __future__ import annotations

import errno
import socket

from iot_platform.stack.process import StackError


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the OS picks it; tests use it right away)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def ensure_port_free(host: str, port: int, setting: str) -> None:
    """Raise a StackError naming the port and the setting that changes it when the port is taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise StackError(f"port {host}:{port} is already in use; set {setting} to a free port") from exc
            raise StackError(f"cannot bind {host}:{port} ({exc}); set {setting} to another port") from exc


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False

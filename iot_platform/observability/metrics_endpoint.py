"""The services' Prometheus endpoint: prometheus_client's /metrics server, refusing a port it cannot bind in one line."""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server

from iot_platform.errors import InvalidConfiguration


def start_metrics_server(port: int, registry: CollectorRegistry, setting: str) -> tuple[WSGIServer, threading.Thread]:
    """Serve ``registry`` on ``port`` (all interfaces); a port taken or not allowed names ``setting``."""
    try:
        return start_http_server(port, registry=registry)
    except OSError as exc:  # taken by another process, or privileged: retrying cannot help
        raise InvalidConfiguration(f"cannot serve /metrics on port {port}: {exc.strerror or exc} ({setting}; 0 turns it off)") from exc

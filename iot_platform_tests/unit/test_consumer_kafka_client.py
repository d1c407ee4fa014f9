"""The consumer's bounded close of its Kafka client (a thread and a timeout: no Kafka needed)."""

from __future__ import annotations

import threading
import time

from iot_platform.consumer.kafka_client import BoundedCloser


class _Client:
    """A client whose close() returns only once ``release`` is set."""

    def __init__(self, release: threading.Event) -> None:
        self.release, self.closed = release, threading.Event()

    def close(self) -> None:
        self.release.wait()
        self.closed.set()


def test_a_close_that_returns_in_time_is_done() -> None:
    """A close that returns within the timeout: True, and nothing is left closing."""
    release = threading.Event()
    release.set()
    client, closer = _Client(release), BoundedCloser()
    assert closer.close(client, timeout_s=5.0) is True
    assert client.closed.is_set() and closer.still_closing() == 0


def test_a_close_that_hangs_is_left_closing_in_the_background() -> None:
    """A close that does not return: False once the timeout has passed (not later), the client counted as
    still closing until its close returns."""
    release = threading.Event()
    client, closer = _Client(release), BoundedCloser()
    started = time.monotonic()
    assert closer.close(client, timeout_s=0.3) is False
    assert 0.3 <= time.monotonic() - started < 2.0
    assert closer.still_closing() == 1 and not client.closed.is_set()
    release.set()
    assert client.closed.wait(5.0)
    deadline = time.monotonic() + 5.0
    while closer.still_closing() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert closer.still_closing() == 0

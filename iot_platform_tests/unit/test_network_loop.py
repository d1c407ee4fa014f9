"""The simulator's single network loop (devices/network_loop.py): reconnect timing, on a fake clock.

Reading, writing and keepalive go through paho's own calls and are exercised against a real
Mosquitto (test_simulate_verify, the broker fault tests); what is the loop's own is when it tries a
lost connection again."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from iot_platform.devices import network_loop
from iot_platform.devices.network_loop import NetworkLoop
from iot_platform_tests.unit.fake_clock import FakeClock


STEP_S = 0.125  # each serve() waits this long when nothing is open (binary fractions: exact times)


class LostClient:
    """A client whose connection is gone; ``reconnect`` fails until ``up``."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock, self.up, self.attempts = clock, False, []
        self.sock: Any = None

    def socket(self) -> Any:
        return self.sock

    def want_write(self) -> bool:
        return False

    def loop_misc(self) -> int:
        return 0

    def reconnect(self) -> int:
        self.attempts.append(round(self.clock.now, 3))
        if not self.up:
            raise ConnectionRefusedError(111, "Connection refused")
        return 0


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    return FakeClock.install(monkeypatch, network_loop.time)


def test_a_lost_connection_is_retried_with_a_doubling_delay_up_to_the_longest(clock: FakeClock) -> None:
    client = LostClient(clock)
    loop = NetworkLoop([client], min_delay_s=0.25, max_delay_s=1.0)  # type: ignore[list-item]
    while clock.now < 4.0:
        loop.serve(STEP_S)
    assert client.attempts == [0.0, 0.25, 0.75, 1.75, 2.75, 3.75]


def test_a_connection_lost_at_once_is_not_retried_sooner_but_one_that_held_starts_afresh(clock: FakeClock) -> None:
    client = LostClient(clock)
    loop = NetworkLoop([client], min_delay_s=0.25, max_delay_s=1.0)  # type: ignore[list-item]
    while len(client.attempts) < 4:
        loop.serve(STEP_S)
    client.up = True
    while len(client.attempts) < 6:
        loop.serve(STEP_S)  # it connects, and the broker closes it at once (a refused CONNACK): still paced
    assert client.attempts == [0.0, 0.25, 0.75, 1.75, 2.75, 3.75]
    held, broker = socket.socketpair()  # this time the connection holds (nothing to read on it)
    try:
        client.sock = held
        while clock.now < 6.0:
            loop.serve(0)
            clock.now += STEP_S
    finally:
        held.close()
        broker.close()
    client.sock, client.up = None, False
    while len(client.attempts) < 8:
        loop.serve(STEP_S)
    assert client.attempts[6:] == [6.0, 6.25], "retried at once, then after the shortest delay"


def test_serving_no_open_connection_waits_out_the_timeout(clock: FakeClock) -> None:
    client = LostClient(clock)
    loop = NetworkLoop([client], min_delay_s=0.25, max_delay_s=1.0)  # type: ignore[list-item]
    loop.serve(STEP_S)
    assert clock.now == STEP_S

"""The bridge's paced turns (bridge/pace.py) on a fake clock: who sleeps, and for how long."""

from __future__ import annotations

import pytest

from iot_platform.bridge import pace
from iot_platform.bridge.pace import Pace
from iot_platform_tests.unit.fake_clock import FakeClock


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    return FakeClock.install(monkeypatch, pace.time, start=1_000.0)


def test_a_turn_within_the_interval_sleeps_out_the_rest_of_it(clock: FakeClock) -> None:
    turns = Pace(0.005)
    turns.turn()  # the first turn never waits
    clock.now += 0.001
    turns.turn()
    clock.now += 0.004
    turns.turn()
    assert clock.slept == [0.004, 0.001]


def test_turns_started_at_the_interval_are_evenly_spaced_however_early_they_are_asked_for(clock: FakeClock) -> None:
    """A thread that wakes at once every time (a stream of messages) runs a turn per interval, no more."""
    turns = Pace(0.005)
    started = []
    for _ in range(5):
        turns.turn()
        started.append(round(clock.now - 1_000.0, 9))
    assert started == [0.0, 0.005, 0.01, 0.015, 0.02]


def test_after_a_quiet_spell_or_a_long_turn_nothing_waits(clock: FakeClock) -> None:
    turns = Pace(0.005)
    turns.turn()
    clock.now += 2.0  # a quiet spell: the next message is read at once
    turns.turn()
    clock.now += 0.006  # a turn longer than the interval (a backlog): the next starts at once
    turns.turn()
    assert clock.slept == []


def test_an_interval_of_zero_never_waits(clock: FakeClock) -> None:
    turns = Pace(0.0)
    for _ in range(3):
        turns.turn()
    assert clock.slept == []

"""A fake clock for unit tests of code that reads ``time.monotonic()`` and calls ``time.sleep()``."""

from __future__ import annotations

from types import ModuleType

import pytest


class FakeClock:
    """Only ``sleep`` (or a test setting ``now``) moves it; every sleep is recorded."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 9))
        self.now += seconds

    @classmethod
    def install(cls, monkeypatch: pytest.MonkeyPatch, time_module: ModuleType, start: float = 0.0) -> "FakeClock":
        """Replace ``monotonic`` and ``sleep`` of the ``time`` module the code under test imported."""
        clock = cls(start)
        monkeypatch.setattr(time_module, "monotonic", clock.monotonic)
        monkeypatch.setattr(time_module, "sleep", clock.sleep)
        return clock

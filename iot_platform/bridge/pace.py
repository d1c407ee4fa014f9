"""A turn at most once per interval: how the bridge's two threads batch their wake-ups.

At a steady moderate rate, work arrives a message or a delivery report at a time, and waking a
thread for each costs more than the message itself. A thread that paces its turns sleeps out the
rest of the interval when its previous turn started less than an interval ago, then takes
everything that arrived meanwhile in one turn. Work waits at most one interval; the first turn after
a quiet spell starts at once; turns longer than the interval (a backlog) never sleep.
"""

from __future__ import annotations

import time


class Pace:
    """Turns at most once per ``interval_s`` (0: never wait). One thread's; not thread-safe."""

    __slots__ = ("_interval_s", "_next")

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._next = 0.0

    def turn(self) -> None:
        """Sleep until an interval has passed since the previous turn started; then start this one."""
        if not self._interval_s:
            return
        now = time.monotonic()
        if now < self._next:
            time.sleep(self._next - now)
            now = self._next
        self._next = now + self._interval_s

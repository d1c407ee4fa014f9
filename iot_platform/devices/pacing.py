"""Token bucket pacing for the simulator (pure: time is passed in, never read here)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; rate None means unlimited."""

    rate: float | None
    burst: float = 0.0
    _tokens: float = field(init=False, default=0.0)
    _last: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.rate is not None and self.rate <= 0:
            raise ValueError("rate must be positive (or None for unlimited)")
        if self.rate is not None and self.burst <= 0:
            # A tenth of a second of traffic: smooth, yet few sleeps at high rates.
            self.burst = max(1.0, self.rate / 10)

    def take(self, now: float, wanted: int = 1) -> int:
        """How many of ``wanted`` tokens may be spent at ``now`` (monotonic seconds)."""
        if self.rate is None:
            return wanted
        if self._last is None:
            self._last, self._tokens = now, 1.0
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        granted = min(wanted, int(self._tokens))
        self._tokens -= granted
        return granted

    def wait_s(self) -> float:
        """Time until the next whole token is available (0 when unlimited or available)."""
        if self.rate is None or self._tokens >= 1:
            return 0.0
        return (1 - self._tokens) / self.rate

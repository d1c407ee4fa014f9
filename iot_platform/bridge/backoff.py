"""Jittered exponential backoff, for MQTT reconnects and Kafka delivery retries.

Jitter keeps a fleet of bridges (or a burst of failed deliveries) from retrying in lockstep.
"""

from __future__ import annotations

import random
from collections.abc import Callable


def jittered_backoff(
    attempt: int,
    *,
    base_s: float = 0.5,
    cap_s: float = 30.0,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based): base * 2**attempt, capped, times 0.5-1.5."""
    exponential = base_s * 2 ** min(attempt, 32)
    return min(cap_s, exponential * (0.5 + rand()))

"""The platform's one retry policy: exponential backoff with jitter, and the loop that applies it (pure).

Retry number ``attempt`` (0 for the first retry) waits between half and all of its ceiling,
``initial_s * 2**attempt`` capped at ``maximum_s``: waits grow exponentially, never exceed the cap,
and stay jittered at the cap, so clients that failed together (bridges after a broker restart,
consumers after a database outage) do not retry in lockstep. ``jitter=False`` waits the ceiling
itself, a figure that can be shown to a person. Who retries with it:

- the bridge: MQTT reconnects and Kafka delivery retries, from 0.5 s up to
  ``IOT_BRIDGE_RECONNECT_MAX_BACKOFF_S``; a delivery retry is scheduled, never slept on;
- PostgreSQL infrastructure errors (``storage/db.py``: :data:`DATABASE_BACKOFF`, used by
  ``retry_infrastructure`` and the consumer's batch retries), 0.5 s up to 10 s, ending as soon as
  the service is stopping;
- ``service_watchdog``'s crash-loop backoff, 10 s doubling to 5 minutes, without jitter.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff from ``initial_s``, capped at ``maximum_s``, jittered unless ``jitter`` is False."""

    initial_s: float
    maximum_s: float
    jitter: bool = True

    def ceiling(self, attempt: int) -> float:
        return min(self.maximum_s, self.initial_s * 2 ** min(max(attempt, 0), 62))

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based): in [ceiling / 2, ceiling], or the ceiling."""
        ceiling = self.ceiling(attempt)
        return ceiling * (0.5 + rand() / 2) if self.jitter else ceiling

    def delays(self, rand: Callable[[], float] = random.random) -> Iterator[float]:
        """The waits before retries 0, 1, 2, ... (endless)."""
        return (self.delay(attempt, rand) for attempt in itertools.count())


def retry(
    operation: Callable[[], T],
    *,
    policy: Backoff,
    retryable: Callable[[Exception], bool],
    should_stop: Callable[[], bool] = lambda: False,
    on_retry: Callable[[Exception, int, float], None] = lambda _exc, _attempt, _delay: None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``operation`` until it returns, retrying only errors ``retryable`` accepts, after ``policy``'s waits.

    Any other error propagates on the first attempt: retrying cannot fix it. Once ``should_stop()``
    is true the retryable error propagates too, so a stopping service never retries for ever.
    ``on_retry(error, retry number from 1, delay)`` runs before each wait (to log it).
    """
    for attempt in itertools.count():
        try:
            return operation()
        except Exception as exc:  # noqa: BLE001 - classified by retryable
            if not retryable(exc) or should_stop():
                raise
            delay = policy.delay(attempt)
            on_retry(exc, attempt + 1, delay)
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover

"""The one retry policy (core/retry.py): waits grow, are capped and jittered; the loop retries only what may come back."""

from __future__ import annotations

import itertools

import pytest

from iot_platform.core.retry import Backoff, retry
from iot_platform.storage.db import DATABASE_BACKOFF


@pytest.mark.parametrize("attempt", [0, 1, 2, 5, 10, 100, 10_000])
@pytest.mark.parametrize("rand", [0.0, 0.5, 0.999])
def test_delay_grows_is_jittered_and_capped(attempt: int, rand: float) -> None:
    """Retry n waits between half and all of min(cap, initial * 2**n): never above the cap, never below half of it."""
    policy = Backoff(initial_s=0.5, maximum_s=30.0)
    ceiling = min(30.0, 0.5 * 2 ** min(attempt, 10))  # 0.5 * 2**10 is already far above the cap
    delay = policy.delay(attempt, rand=lambda: rand)
    assert ceiling / 2 <= delay <= ceiling <= 30.0
    assert delay == pytest.approx(ceiling * (0.5 + rand / 2))


@pytest.mark.parametrize("attempt", [3, 1_000])
def test_jitter_spreads_retries_also_at_the_cap(attempt: int) -> None:
    """Two clients retrying the same attempt rarely wait the same time, even once capped (no lockstep)."""
    policy = Backoff(initial_s=0.5, maximum_s=30.0)
    delays = {round(policy.delay(attempt), 6) for _ in range(50)}
    assert len(delays) > 40 and max(delays) <= policy.ceiling(attempt)


def test_without_jitter_the_wait_is_the_ceiling() -> None:
    """As the watchdog's crash-loop backoff waits (unit/test_orchestration.py checks its figures): exactly the ceiling."""
    policy = Backoff(initial_s=10.0, maximum_s=300.0, jitter=False)
    assert [policy.delay(n, rand=lambda: 0.9) for n in range(7)] == [10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0]


def test_database_backoff_starts_at_a_quarter_second_and_caps_at_ten() -> None:
    waits = list(itertools.islice(DATABASE_BACKOFF.delays(rand=lambda: 0.0), 8))
    assert waits == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_retry_waits_the_policy_between_attempts_until_success() -> None:
    calls, sleeps, seen = itertools.count(), [], []

    def flaky() -> str:
        if next(calls) < 3:
            raise ConnectionError("down")
        return "ok"

    result = retry(flaky, policy=Backoff(1.0, 3.0, jitter=False), retryable=lambda e: isinstance(e, ConnectionError),
                   on_retry=lambda exc, attempt, delay: seen.append((type(exc).__name__, attempt, delay)), sleep=sleeps.append)
    assert result == "ok" and sleeps == [1.0, 2.0, 3.0]
    assert seen == [("ConnectionError", 1, 1.0), ("ConnectionError", 2, 2.0), ("ConnectionError", 3, 3.0)]


def test_an_error_that_cannot_heal_is_not_retried() -> None:
    sleeps: list[float] = []
    with pytest.raises(ValueError):
        retry(lambda: int("x"), policy=DATABASE_BACKOFF, retryable=lambda e: isinstance(e, ConnectionError), sleep=sleeps.append)
    assert sleeps == []


def test_stopping_ends_the_retries_with_the_last_error() -> None:
    """Retried while running; once stopping, the retryable error propagates instead of another wait."""
    stopping, sleeps = iter([False, False, True]), []

    def down() -> None:
        raise ConnectionError("still down")

    with pytest.raises(ConnectionError, match="still down"):
        retry(down, policy=DATABASE_BACKOFF, retryable=lambda e: True, should_stop=lambda: next(stopping), sleep=sleeps.append)
    assert len(sleeps) == 2

"""The completeness arithmetic verify and the checks share (core/completeness.py): one partition's numbers, every case."""

from __future__ import annotations

import pytest

from iot_platform.core.completeness import PartitionCoverage, PartitionPosition, records_not_stored


@pytest.mark.parametrize(
    ("low", "high", "stored_next", "waiting", "already_expired", "lag"),
    [
        (0, 0, None, 0, 0, 0),  # empty partition, never consumed
        (0, 100, None, 100, 0, 100),  # never consumed: everything waits
        (90, 100, None, 10, 90, 10),  # never consumed, 0..89 gone: verify counts what Kafka still holds
        (0, 100, 100, 0, 0, 0),  # caught up
        (0, 100, 95, 5, 0, 5),
        (90, 100, 95, 5, 0, 5),  # behind, nothing deleted unread
        (90, 100, 50, 10, 40, 50),  # 50..89 deleted before they were read: the lag counts them
        (500, 500, 0, 0, 500, 500),  # everything deleted, nothing waits
        (0, 10, 20, 0, 0, -10),  # position past the end (topic recreated): nothing waits, never pending
    ],
)
def test_partition_position(low: int, high: int, stored_next: int | None, waiting: int, already_expired: int, lag: int) -> None:
    position = PartitionPosition("t", 0, low, high, stored_next)
    assert (position.waiting, position.already_expired, position.lag) == (waiting, already_expired, lag)
    assert records_not_stored([position]) == max(lag, 0)
    if stored_next is not None and stored_next <= high:  # with a position, lag = what waits + what is gone
        assert position.lag == position.waiting + position.already_expired


def test_records_not_stored_adds_partitions_and_ignores_positions_past_the_end() -> None:
    positions = [PartitionPosition("t", 0, 0, 100, 90), PartitionPosition("t", 1, 0, 10, 20), PartitionPosition("d", 0, 5, 8, None)]
    assert records_not_stored(positions) == 10 + 0 + 3


@pytest.mark.parametrize(
    ("first_offset", "next_offset", "found", "beyond", "expected", "complete"),
    [
        (None, 0, 0, 0, 0, True),  # nothing consumed in the window
        (10, 20, 10, 0, 10, True),
        (10, 20, 9, 0, 10, False),  # a consumed offset has no row
        (10, 20, 10, 2, 10, False),  # rows past the stored position: the offset table is behind
    ],
)
def test_partition_coverage(first_offset: int | None, next_offset: int, found: int, beyond: int, expected: int, complete: bool) -> None:
    coverage = PartitionCoverage("t", 0, next_offset, first_offset, found, beyond)
    assert (coverage.expected, coverage.complete) == (expected, complete)

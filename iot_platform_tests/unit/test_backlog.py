"""The oldest-unconsumed-record assessment (pure): waiting records, records already gone, age vs half the retention."""

from __future__ import annotations

import pytest

from iot_platform.devices.backlog import PartitionBacklog

HOUR_MS = 3_600_000
NOW_MS = 1_000 * HOUR_MS


def backlog(stored: int, low: int, high: int, age_h: float | None, retention_h: float = 72) -> PartitionBacklog:
    oldest = None if age_h is None else int(NOW_MS - age_h * HOUR_MS)
    return PartitionBacklog("t", 0, low, high, stored, int(retention_h * HOUR_MS), oldest)


@pytest.mark.parametrize(
    ("case", "waiting", "expired", "age_s", "at_risk"),
    [
        (backlog(100, 0, 100, None), 0, 0, None, False),  # caught up
        (backlog(90, 0, 100, 1.0), 10, 0, 3600.0, False),  # an hour behind, retention 72 h
        (backlog(90, 0, 100, 36.0), 10, 0, 129600.0, False),  # exactly half: not yet
        (backlog(90, 0, 100, 36.1), 10, 0, 129960.0, True),  # past half the retention
        (backlog(50, 80, 100, 10.0), 20, 30, 36000.0, True),  # 50..79 deleted before they were read
        (backlog(0, 500, 500, None), 0, 500, None, True),  # everything deleted, nothing waiting
        (backlog(0, 0, 0, None), 0, 0, None, False),  # empty partition
    ],
)
def test_backlog_assessment(case: PartitionBacklog, waiting: int, expired: int, age_s: float | None, at_risk: bool) -> None:
    assert case.waiting == waiting
    assert case.already_expired == expired
    assert case.age_s(NOW_MS) == age_s
    assert case.at_risk(NOW_MS) is at_risk

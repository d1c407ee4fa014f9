"""Unit tests of sequence accounting: gaps are loss, extra stored copies are duplicates (pure)."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iot_platform.devices.sequences import StreamKey, analyse, analyse_stream, missing_ranges, totals

K = StreamKey("run1", "dev1")


@pytest.mark.parametrize(
    ("seen", "first", "last", "expected"),
    [
        ([], 1, 0, ()),
        ([], 1, 1, ((1, 1),)),
        ([], 1, 5, ((1, 5),)),
        ([1, 2, 3], 1, 3, ()),
        ([3, 1, 2], 1, 3, ()),
        ([1, 1, 2, 2, 3], 1, 3, ()),
        ([2, 3], 1, 3, ((1, 1),)),
        ([1, 2], 1, 3, ((3, 3),)),
        ([1, 3], 1, 3, ((2, 2),)),
        ([1, 5, 9], 1, 10, ((2, 4), (6, 8), (10, 10))),
        ([0, 11, 5], 1, 10, ((1, 4), (6, 10))),
        ([5], 5, 5, ()),
        ([7, 8], 5, 10, ((5, 6), (9, 10))),
    ],
)
def test_missing_ranges(seen: list[int], first: int, last: int, expected: tuple[tuple[int, int], ...]) -> None:
    """Missing ranges are inclusive, sorted, merged, and ignore values outside first..last."""
    assert missing_ranges(seen, first, last) == expected


@given(st.sets(st.integers(1, 300)), st.integers(0, 300))
def test_missing_ranges_partition_the_range(seen: set[int], last: int) -> None:
    """Property: present values and missing ranges together cover 1..last exactly once."""
    gaps = missing_ranges(seen, 1, last)
    missing = [s for low, high in gaps for s in range(low, high + 1)]
    assert len(missing) == len(set(missing))
    assert sorted(missing + [s for s in seen if s <= last]) == list(range(1, last + 1))
    assert all(high >= low for low, high in gaps)
    assert all(a[1] + 1 < b[0] for a, b in itertools.pairwise(gaps))


def test_complete_stream_has_no_loss_and_no_duplicates() -> None:
    """Every seq stored once: lost 0, duplicates 0."""
    report = analyse_stream(K, range(1, 101), expected_last=100)
    assert (report.stored, report.lost, report.duplicates, report.missing) == (100, 0, 0, ())


def test_dead_letters_fill_the_sequence() -> None:
    """A seq that went to the dead letters is accounted for, not lost."""
    report = analyse_stream(K, [1, 2, 4, 6], dead_letter_seqs=[3, 5], expected_last=6)
    assert report.lost == 0 and report.dead_letters == 2 and report.stored == 4


def test_duplicates_count_extra_copies() -> None:
    """Three copies of one seq are two duplicates; duplicates never hide a gap."""
    report = analyse_stream(K, [1, 2, 2, 2, 4], expected_last=4)
    assert report.duplicates == 2 and report.stored == 3 and report.missing == ((3, 3),) and report.lost == 1


def test_trailing_loss_needs_an_expectation() -> None:
    """Without the simulator's last seq the tail cannot be judged; with it the tail is lost."""
    assert analyse_stream(K, [1, 2, 3]).lost == 0
    assert analyse_stream(K, [1, 2, 3], expected_last=5).missing == ((4, 5),)


def test_without_expectation_only_inner_gaps_count() -> None:
    """A window that starts mid-stream is not loss; a hole inside it is."""
    report = analyse_stream(K, [50, 51, 53])
    assert (report.first, report.last, report.missing) == (50, 53, ((52, 52),))


def test_expected_stream_with_nothing_stored_is_entirely_lost() -> None:
    """A device the simulator sent from but the database never saw: every seq lost."""
    [report] = analyse({}, {}, expected_last={K: 7}, tenants={K: "t1"})
    assert report.lost == 7 and report.stored == 0 and report.tenant_id == "t1"


def test_empty_stream_without_expectation() -> None:
    """No data and no expectation: an empty report, not an error."""
    report = analyse_stream(K, [])
    assert (report.first, report.last, report.lost, report.stored) == (None, None, 0, 0)


def test_analyse_merges_sources_and_sorts_by_tenant_device_run() -> None:
    """Streams from stored rows, dead letters and expectations are merged per key and sorted."""
    a, b, c = StreamKey("r", "a"), StreamKey("r", "b"), StreamKey("r", "c")
    reports = analyse(
        stored={b: [1, 2], a: [1, 1]},
        dead_letters={c: [1]},
        expected_last={a: 2, b: 2, c: 1},
        tenants={a: "t2", b: "t1", c: "t1"},
    )
    assert [(r.tenant_id, r.key.device_id) for r in reports] == [("t1", "b"), ("t1", "c"), ("t2", "a")]
    total = totals(reports)
    assert (total.streams, total.stored, total.duplicates, total.dead_letters, total.lost) == (3, 3, 1, 1, 1)


def test_shuffled_large_stream() -> None:
    """Order does not matter: 10,000 shuffled seqs with 3 removed and 2 repeated."""
    seqs = list(range(1, 10_001))
    for s in (17, 5_000, 10_000):
        seqs.remove(s)
    seqs += [1, 9_999]
    random.Random(1).shuffle(seqs)
    report = analyse_stream(K, seqs, expected_last=10_000)
    assert report.missing == ((17, 17), (5_000, 5_000), (10_000, 10_000)) and report.duplicates == 2

"""Sequence accounting for device streams (pure): what was lost, duplicated or dead-lettered.

A *stream* is one device in one simulator run (``run_id``); its messages carry seq 1, 2, 3, ...
A seq counts as delivered when it is stored in ``iot.messages`` or in ``iot.dead_letters``.
Lost = seqs in the expected range found in neither. Duplicates = extra stored copies of a seq
(the platform promises none). Without an expectation, the range is min..max of what was seen,
which cannot reveal loss at either end of a stream: pass the simulator's summary for that.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

Range = tuple[int, int]  # inclusive


@dataclass(frozen=True, slots=True)
class StreamKey:
    run_id: str
    device_id: str


@dataclass(frozen=True, slots=True)
class StreamReport:
    key: StreamKey
    tenant_id: str | None
    stored: int
    duplicates: int
    dead_letters: int
    missing: tuple[Range, ...]
    first: int | None
    last: int | None

    @property
    def lost(self) -> int:
        return sum(high - low + 1 for low, high in self.missing)


@dataclass(frozen=True, slots=True)
class Totals:
    streams: int
    stored: int
    duplicates: int
    dead_letters: int
    lost: int


def missing_ranges(seen: Iterable[int], first: int, last: int) -> tuple[Range, ...]:
    """Inclusive ranges of first..last absent from ``seen`` (values outside are ignored)."""
    present = sorted({s for s in seen if first <= s <= last})
    gaps: list[Range] = []
    expected = first
    for s in present:
        if s > expected:
            gaps.append((expected, s - 1))
        expected = s + 1
    if expected <= last:
        gaps.append((expected, last))
    return tuple(gaps)


def analyse_stream(
    key: StreamKey,
    stored_seqs: Iterable[int],
    dead_letter_seqs: Iterable[int] = (),
    expected_last: int | None = None,
    tenant_id: str | None = None,
) -> StreamReport:
    """One stream's report; with ``expected_last`` the range is 1..expected_last."""
    stored = Counter(stored_seqs)
    dead = set(dead_letter_seqs)
    seen = set(stored) | dead
    if expected_last is not None:
        first, last = 1, expected_last
    elif seen:
        first, last = min(seen), max(seen)
    else:
        first = last = None
    missing = missing_ranges(seen, first, last) if first is not None and last is not None else ()
    return StreamReport(
        key=key,
        tenant_id=tenant_id,
        stored=len(stored),
        duplicates=sum(n - 1 for n in stored.values()),
        dead_letters=len(dead),
        missing=missing,
        first=first,
        last=last,
    )


def analyse(
    stored: Mapping[StreamKey, Iterable[int]],
    dead_letters: Mapping[StreamKey, Iterable[int]],
    expected_last: Mapping[StreamKey, int] | None = None,
    tenants: Mapping[StreamKey, str] | None = None,
) -> list[StreamReport]:
    """Reports for every stream seen or expected, sorted by tenant, device and run."""
    expected_last = expected_last or {}
    tenants = tenants or {}
    keys = set(stored) | set(dead_letters) | set(expected_last)
    reports = [
        analyse_stream(k, stored.get(k, ()), dead_letters.get(k, ()), expected_last.get(k), tenants.get(k))
        for k in keys
    ]
    return sorted(reports, key=lambda r: (r.tenant_id or "", r.key.device_id, r.key.run_id))


def totals(reports: Iterable[StreamReport]) -> Totals:
    reports = list(reports)
    return Totals(
        streams=len(reports),
        stored=sum(r.stored for r in reports),
        duplicates=sum(r.duplicates for r in reports),
        dead_letters=sum(r.dead_letters for r in reports),
        lost=sum(r.lost for r in reports),
    )

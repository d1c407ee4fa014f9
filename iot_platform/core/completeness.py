"""Completeness arithmetic, per Kafka partition, shared by `iot-platform verify` and the Dagster checks (pure).

Two questions, each answered once here from plain numbers that ``storage/audit.py`` (PostgreSQL) and
``devices/verify.py`` (Kafka's watermarks) read:

- How far is the consumer behind Kafka? :class:`PartitionPosition`: Kafka's retained offsets
  ``[low, high)`` beside the consumer's stored next offset. Used by ``verify`` (records not yet
  stored, and its wait for the consumer to drain) and by ``kafka_backlog_within_half_retention``
  (records waiting, records deleted before they were read).
- Is every consumed offset stored? :class:`PartitionCoverage`: offsets ``[first_offset, next_offset)``
  against the rows, dead letters and skipped duplicates stored for them. Used by
  ``kafka_offsets_all_stored``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class PartitionPosition:
    """One partition: Kafka's retained offsets ``[low, high)`` and the consumer's stored next offset."""

    topic: str
    partition: int
    low: int
    high: int
    stored_next: int | None  # iot.ingest_offsets.next_offset; None: never stored (the consumer starts at 0)

    @property
    def waiting(self) -> int:
        """Records Kafka still holds that the consumer has not stored."""
        return max(0, self.high - max(self.stored_next or 0, self.low))

    @property
    def already_expired(self) -> int:
        """Records Kafka deleted before the consumer stored them (it records them when it reads on)."""
        return max(0, min(self.low, self.high) - (self.stored_next or 0))

    @property
    def lag(self) -> int:
        """End offset minus the stored next offset, or minus the start offset while nothing is stored.

        Once the consumer has a position this counts the records deleted before it read them too
        (:attr:`waiting` + :attr:`already_expired`); negative when the position is past the end.
        """
        return self.high - (self.low if self.stored_next is None else self.stored_next)


def records_not_stored(positions: Iterable[PartitionPosition]) -> int:
    """Records Kafka appended that the consumer has not stored yet, over all partitions (0 once it caught up)."""
    return sum(max(p.lag, 0) for p in positions)


@dataclass(frozen=True)
class PartitionCoverage:
    """Offsets [first_offset, next_offset) of one Kafka partition against the rows stored for them."""

    topic: str
    partition: int
    next_offset: int
    first_offset: int | None  # first stored offset received inside the window; None: nothing there
    found: int
    beyond: int  # rows stored at or past next_offset: the offset table is behind the rows
    gaps: tuple[tuple[int, int], ...] = ()

    @property
    def expected(self) -> int:
        return 0 if self.first_offset is None else self.next_offset - self.first_offset

    @property
    def complete(self) -> bool:
        return self.found == self.expected and self.beyond == 0

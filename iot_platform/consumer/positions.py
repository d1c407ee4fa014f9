"""Where each assigned partition's next record must start (pure).

On assignment the consumer seeks every partition to the offset stored in PostgreSQL and records it
here. A record below that position is a stale copy (fetched before a rebalance or a seek) and is
dropped, so a batch never holds the same offset twice; a record above it is a gap (Kafka retention
removed records never consumed) and is accepted and counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TopicPartitionKey = tuple[str, int]


@dataclass
class Positions:
    _next: dict[TopicPartitionKey, int | None] = field(default_factory=dict)
    gaps: int = 0

    def assign(self, key: TopicPartitionKey, stored_next: int | None) -> None:
        """Own ``key`` from ``stored_next`` (None: nothing stored yet, accept the first record)."""
        self._next[key] = stored_next

    def revoke(self, key: TopicPartitionKey) -> None:
        self._next.pop(key, None)

    def assigned(self) -> list[TopicPartitionKey]:
        return list(self._next)

    def next_offset(self, key: TopicPartitionKey) -> int | None:
        return self._next.get(key)

    def accept(self, key: TopicPartitionKey, offset: int) -> bool:
        """True when the record at ``offset`` is the next one to store for ``key``."""
        if key not in self._next:
            return False
        expected = self._next[key]
        if expected is not None and offset < expected:
            return False
        if expected is not None and offset > expected:
            self.gaps += offset - expected
        self._next[key] = offset + 1
        return True

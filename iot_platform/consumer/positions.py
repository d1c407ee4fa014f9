"""Where each assigned partition's next record must start (pure).

On assignment the consumer seeks every partition to the offset stored in PostgreSQL and records it
here (nothing stored yet: offset 0, the start of a partition). A record below that position is a
stale copy (fetched before a rebalance or a seek) and is dropped, so a batch never holds the same
offset twice. A record above it is a forward gap: Kafka's retention deleted records this consumer
never read (the topics are written only by the bridge's idempotent, non-transactional producer, so
every offset is a record). The record is accepted, and the gap is kept as an :class:`ExpiredRange`
for the consumer to record with the batch that moves past it (loud: metric, ERROR log, table).
"""

from __future__ import annotations

from dataclasses import dataclass, field

TopicPartitionKey = tuple[str, int]


@dataclass(frozen=True, slots=True)
class ExpiredRange:
    """Offsets ``first_offset..last_offset`` (inclusive) of one partition, deleted before they were read."""

    topic: str
    partition: int
    first_offset: int
    last_offset: int

    @property
    def key(self) -> TopicPartitionKey:
        return (self.topic, self.partition)

    @property
    def records(self) -> int:
        return self.last_offset - self.first_offset + 1


@dataclass
class Positions:
    _next: dict[TopicPartitionKey, int] = field(default_factory=dict)
    gaps: int = 0
    expired: list[ExpiredRange] = field(default_factory=list)  # detected, not yet taken by the consumer

    def assign(self, key: TopicPartitionKey, stored_next: int | None) -> None:
        """Own ``key`` from ``stored_next`` (None: nothing stored yet, so from the partition's start)."""
        self._next[key] = 0 if stored_next is None else stored_next

    def revoke(self, key: TopicPartitionKey) -> None:
        self._next.pop(key, None)
        self.expired = [e for e in self.expired if e.key != key]  # its next owner finds the gap again

    def assigned(self) -> list[TopicPartitionKey]:
        return list(self._next)

    def next_offset(self, key: TopicPartitionKey) -> int | None:
        return self._next.get(key)

    def accept(self, key: TopicPartitionKey, offset: int) -> bool:
        """True when the record at ``offset`` is the next one to store for ``key``."""
        expected = self._next.get(key)
        if expected is None or offset < expected:
            return False
        if offset > expected:
            self.gaps += offset - expected
            self.expired.append(ExpiredRange(key[0], key[1], expected, offset - 1))
        self._next[key] = offset + 1
        return True

    def take_expired(self) -> list[ExpiredRange]:
        """The gaps detected since the last call."""
        taken, self.expired = self.expired, []
        return taken

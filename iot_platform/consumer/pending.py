"""Records read from Kafka but not yet handed to the database thread (pure: no Kafka or database).

Each message row's COPY tuple is formatted as the row arrives, and a batch's claims of message ids
when it is taken, both on the reading thread, so handing a batch over costs a join instead of a
formatting pass that the database thread would wait for.
"""

from __future__ import annotations

from dataclasses import dataclass

from iot_platform.consumer.claims import Claims, claims_of
from iot_platform.consumer.copy_format import copy_row, wrap
from iot_platform.consumer.positions import ExpiredRange, TopicPartitionKey
from iot_platform.consumer.records import DeadLetterRow, MessageRow

Row = MessageRow | DeadLetterRow


@dataclass(frozen=True, slots=True)
class Batch:
    messages: list[MessageRow]
    dead_letters: list[DeadLetterRow]
    next_offsets: dict[TopicPartitionKey, int]  # per partition: last offset in the batch + 1
    # copy_format.copy_data(messages) and claims.claims_of(messages), when the reading thread formatted
    # them ahead (keeps that Python work, which holds the GIL, off the database thread's critical path).
    messages_copy: bytes | None = None
    claims: Claims | None = None
    expired: tuple[ExpiredRange, ...] = ()  # gaps (deleted by retention before they were read) this batch moves past


def row_key(row: Row, messages_topic: str) -> TopicPartitionKey:
    if isinstance(row, MessageRow):
        return (messages_topic, row.kafka_partition)
    return (row.kafka_topic, row.kafka_partition)


def make_batch(
    rows: list[Row], messages_topic: str, copy_tuples: list[bytes] | None = None, expired: tuple[ExpiredRange, ...] = (),
) -> Batch:
    """The batch of ``rows``: next offset per partition = its highest offset + 1; COPY data and claims
    included (``copy_tuples``: the message rows' tuples, in order, when already formatted);
    ``expired``: the gaps its records move past, recorded in the same transaction."""
    messages = [r for r in rows if isinstance(r, MessageRow)]
    letters = [r for r in rows if isinstance(r, DeadLetterRow)]
    next_offsets: dict[TopicPartitionKey, int] = {}
    for row in rows:
        key = row_key(row, messages_topic)
        offset = row.kafka_offset + 1
        if offset > next_offsets.get(key, -1):
            next_offsets[key] = offset
    if copy_tuples is None:
        copy_tuples = [copy_row(r) for r in messages]
    return Batch(messages, letters, next_offsets, wrap(copy_tuples), claims_of(messages), expired)


class PendingBatch:
    def __init__(self, messages_topic: str) -> None:
        self._messages_topic = messages_topic
        self._rows: list[Row] = []
        self._tuples: list[bytes] = []  # COPY tuples of the message rows among self._rows, in order
        self._expired: list[ExpiredRange] = []  # gaps the pending records move past

    def __len__(self) -> int:
        return len(self._rows)

    def append(self, row: Row) -> None:
        self._rows.append(row)
        if isinstance(row, MessageRow):
            self._tuples.append(copy_row(row))

    def add_expired(self, ranges: list[ExpiredRange]) -> None:
        """Gaps found before records now pending: they are recorded with the batch that holds those records."""
        self._expired.extend(ranges)

    def drop(self, partitions: set[TopicPartitionKey]) -> None:
        """Forget the records of ``partitions`` (revoked: their next owner reads them again)."""
        self._expired = [e for e in self._expired if e.key not in partitions]
        kept = [(r, row_key(r, self._messages_topic)) for r in self._rows]
        if all(key not in partitions for _, key in kept):
            return
        self._rows, self._tuples = [], []
        for row, key in kept:
            if key not in partitions:
                self.append(row)

    def take(self) -> tuple[list[Row], Batch] | None:
        """The pending records and their batch, leaving nothing pending (None when there is none)."""
        if not self._rows:
            return None
        rows, tuples, expired = self._rows, self._tuples, tuple(self._expired)
        self._rows, self._tuples, self._expired = [], [], []
        return rows, make_batch(rows, self._messages_topic, tuples, expired)

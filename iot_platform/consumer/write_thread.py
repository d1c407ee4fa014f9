"""The consumer's one database thread: it owns the BatchWriter and so the PostgreSQL connection.

Every database call of the consumer (batch writes, reads of the stored offsets on assignment) runs
here, one at a time, in submission order, so the connection never interleaves two transactions.
While the write of batch N runs (psycopg2 releases the GIL for the whole server round trip), the
main thread reads and classifies batch N+1 from Kafka. The service submits a write only after the
previous one committed, so at most one batch is in flight and batches commit in Kafka order.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from iot_platform.consumer.pending import Batch
from iot_platform.consumer.positions import TopicPartitionKey
from iot_platform.consumer.writer import BatchWriter, WriteResult

T = TypeVar("T")


class WriteThread:
    def __init__(self, writer: BatchWriter) -> None:
        self._writer = writer
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="iot-consumer-db")

    def submit(self, batch: Batch) -> Future[tuple[WriteResult, float]]:
        """Start writing ``batch``; the future holds (result, seconds) or the write's exception."""
        return self._executor.submit(self._timed_write, batch)

    def stored_offsets(self, keys: list[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        """The next offsets stored for ``keys``, read after anything submitted before (so including it)."""
        return self.call(lambda: self._writer.stored_offsets(keys))

    def call(self, function: Callable[[], T]) -> T:
        """Run ``function`` on the database thread (after anything submitted before) and wait for it."""
        return self._executor.submit(function).result()

    def close(self) -> None:
        """Wait for the running call, then close the connection."""
        self._executor.shutdown(wait=True)
        self._writer.close()

    def _timed_write(self, batch: Batch) -> tuple[WriteResult, float]:
        started = time.monotonic()
        result = self._writer.write(batch)
        return result, time.monotonic() - started

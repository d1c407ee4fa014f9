"""The consumer's sink: each batch and its partitions' next offsets into PostgreSQL, retried until stored.

Guarantee: a batch's rows and next offsets commit in one transaction (writer.py), on the one
database thread (write_thread.py). At most one batch is in flight, and a batch is submitted only
once the one before it committed, so batches commit in Kafka order. A failed attempt advances
nothing and is retried with jittered backoff (0.5 to 10 s; a vanished day partition at once) until
it commits or the consumer stops; stopping abandons it, and nothing submitted after an abandoned
batch is written (its offsets would skip the abandoned records, which are read again on restart).
Only after a database commit does ``on_commit`` get the batch's next offsets (the service commits
them to Kafka, for lag monitoring only).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass

from iot_platform.consumer.metrics import ConsumerMetrics
from iot_platform.consumer.pending import Batch, Row, make_batch, row_key
from iot_platform.consumer.positions import TopicPartitionKey
from iot_platform.consumer.write_thread import WriteThread
from iot_platform.consumer.writer import MissingPartition, WriteResult
from iot_platform.settings import Settings
from iot_platform.storage.db import DATABASE_BACKOFF, is_infrastructure_error, retry_infrastructure

log = logging.getLogger(__name__)

OnCommit = Callable[[dict[TopicPartitionKey, int]], None]


@dataclass
class InFlightBatch:
    """A batch handed to the database thread, and the outcome of its current attempt."""

    rows: list[Row]
    batch: Batch
    attempt: Future[tuple[WriteResult, float]]


class BatchSink:
    def __init__(self, settings: Settings, metrics: ConsumerMetrics, db: WriteThread, stopping: threading.Event,
                 on_commit: OnCommit) -> None:
        self._settings, self._metrics, self._db, self._stopping = settings, metrics, db, stopping
        self._on_commit = on_commit
        self._in_flight: InFlightBatch | None = None
        self._abandoned = False  # a batch was given up (only when stopping): nothing after it may be written
        self.commits = 0  # batches committed to the database

    def ready(self) -> bool:
        """The database thread would wait for the next batch: none was submitted, or the last one is done."""
        return self._in_flight is None or self._in_flight.attempt.done()

    def records_in_flight(self) -> int:
        return len(self._in_flight.rows) if self._in_flight is not None else 0

    def stored_offsets(self, keys: Iterable[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        """Next offsets stored in PostgreSQL, read after the batch in flight (so they include it)."""
        keys = list(keys)
        return retry_infrastructure(lambda: self._db.stored_offsets(keys), description="read stored offsets",
                                    should_stop=self._stopping.is_set)

    def submit(self, ready: tuple[list[Row], Batch] | None) -> None:
        """Hand a prepared batch to the database thread; call only once :meth:`finish` has returned."""
        if ready is None:
            return
        rows, batch = ready
        if self._abandoned:
            log.warning("stopping after an unwritten batch; the next one is read again on restart too", extra={"records": len(rows)})
            return
        self._in_flight = InFlightBatch(rows, batch, self._db.submit(batch))

    def finish(self) -> None:
        """Wait for the batch in flight; retry it until it commits or we stop."""
        delays = DATABASE_BACKOFF.delays()
        while (flight := self._in_flight) is not None:
            error = self._wait(flight)
            if error is None:
                return
            if isinstance(error, MissingPartition):
                log.warning("a day partition vanished (retention?); recreating it", extra={"records": len(flight.rows)})
                self._stopping.wait(0.1)
            elif self._stopping.is_set():
                log.warning("stopping with an unwritten batch; it is read again on restart", extra={"records": len(flight.rows)})
                self._in_flight, self._abandoned = None, True
                return
            else:
                self._stopping.wait(next(delays))
            flight.attempt = self._db.submit(flight.batch)

    def settle(self, revoked: set[TopicPartitionKey]) -> None:
        """On revocation: wait for the batch in flight; if it failed, keep only the partitions we still own."""
        flight = self._in_flight
        if flight is None or self._wait(flight) is None:
            return
        topic = self._settings.kafka_topic
        kept = [r for r in flight.rows if row_key(r, topic) not in revoked]
        log.warning("batch in flight failed during a rebalance; revoked partitions' records dropped",
                    extra={"dropped": len(flight.rows) - len(kept), "kept": len(kept)})
        self._in_flight = None
        if kept:
            batch = make_batch(kept, topic, expired=tuple(e for e in flight.batch.expired if e.key not in revoked))
            self._in_flight = InFlightBatch(kept, batch, self._db.submit(batch))

    def _wait(self, flight: InFlightBatch) -> Exception | None:
        """Wait for the current attempt. Success: metrics, ``on_commit``, nothing in flight; else the error."""
        try:
            result, seconds = flight.attempt.result()
        except MissingPartition as exc:
            return exc
        except Exception as exc:  # noqa: BLE001 - infrastructure retries; anything else also never advances
            self._metrics.record_database_error()
            infra = is_infrastructure_error(exc)
            log.log(logging.WARNING if infra else logging.ERROR, "batch not written, retrying",
                    extra={"records": len(flight.rows), "error": str(exc).strip()[:300], "infrastructure": infra},
                    exc_info=not infra)
            return exc
        self._in_flight = None
        self._metrics.record_batch(result, len(flight.rows), seconds)
        for gap in result.expired:
            log.error("records deleted by Kafka retention before they were read: lost", extra={
                "topic": gap.topic, "partition": gap.partition, "first_offset": gap.first_offset,
                "last_offset": gap.last_offset, "records": gap.records,
            })
        self.commits += 1
        if self.commits == self._settings.fault_exit_after_commits:
            # Fault injection for the test suite: die like a SIGKILL between the two commits.
            log.warning("fault injection: exiting after a database commit, before the Kafka commit")
            os._exit(137)
        self._on_commit(flight.batch.next_offsets)
        return None

"""`iot-platform consumer`: Kafka (messages + dead-letter topics) -> PostgreSQL, exactly-once effect.

Guarantee: every record of both topics ends up exactly once in PostgreSQL -- a row of iot.messages,
of iot.dead_letters, or (a copy the bridge produced twice, same tenant and payload message id) of
iot.duplicate_messages. The position of record is PostgreSQL's ``iot.ingest_offsets``, committed in
the same transaction as the rows (see writer.py); on assignment each partition is sought to it.
Kafka offsets are committed after the database commit, for lag monitoring only; auto commit is
off. Records Kafka's retention deleted before they were read (the consumer was down longer than the
topic's retention) are the one loss it cannot prevent; it makes it loud: the gap is recorded in
``iot.expired_offsets`` in the transaction that moves past it, counted in
``iot_consumer_records_expired_before_read`` and logged as an ERROR with its offsets. Database errors retry the same batch with jittered backoff, reconnecting, and never advance
an offset; the consumer stays in its group meanwhile (up to ``consumer_max_poll_interval_ms``).
On SIGTERM/SIGINT the batch in hand is written (or abandoned if the database is down), then the
consumer leaves its group and exits 0.

Threads: the main thread reads and classifies Kafka records and formats each batch's COPY text; one
database thread (write_thread.py) writes. Batch N+1 is collected while batch N is written (handed
over early, from half a batch, when the database thread would otherwise wait); N+1 is submitted only
once N has committed (at most one batch in flight, batches commit in Kafka order), and Kafka's
commit of N follows N's database commit. A batch abandoned at shutdown (database down) is the last:
nothing read after it is written, or its offsets would skip the abandoned records. On revocation
the callback waits for the batch in flight before returning: if it committed, its offsets are
committed to Kafka; if it failed, the rows of the revoked partitions are dropped (their next owner
starts from the database) and the rest is retried. Offsets on assignment are read on the database
thread, after the batch in flight, so they include it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from iot_platform.access.kafka_credentials import authentication_message, is_authentication_failure
from iot_platform.consumer.metrics import ConsumerMetrics
from iot_platform.consumer.pending import PendingBatch, make_batch, row_key
from iot_platform.consumer.positions import Positions
from iot_platform.consumer.records import Classifier, DeadLetterRow, MessageRow
from iot_platform.consumer.write_thread import WriteThread
from iot_platform.consumer.writer import Batch, BatchWriter, MissingPartition, WriteResult
from iot_platform.observability.identity import service_identity
from iot_platform.observability.progress import ProgressFile
from iot_platform.settings import Settings
from iot_platform.storage.db import DATABASE_BACKOFF, is_infrastructure_error, retry_infrastructure

log = logging.getLogger(__name__)
# Records per consume() call: small enough to notice soon that the database thread has finished its
# batch (2,000: it idled ~10% of the time; 500: +7% rows/s; 200: slower again), large enough to
# amortise the call.
_CONSUME_CHUNK = 500


def kafka_config(settings: Settings) -> dict[str, Any]:
    return {
        **settings.kafka_config(),
        "group.id": settings.kafka_consumer_group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",  # a partition with no stored position starts at its beginning
        "session.timeout.ms": settings.consumer_session_timeout_ms,
        "heartbeat.interval.ms": max(500, settings.consumer_session_timeout_ms // 4),
        "max.poll.interval.ms": settings.consumer_max_poll_interval_ms,
        "socket.timeout.ms": settings.kafka_request_timeout_ms,
        "fetch.max.bytes": 64 * 1024 * 1024,
        "client.id": "iot-postgres-writer",
    }


class KafkaAuthenticationFailed(RuntimeError):
    """Kafka refused the consumer's credentials (a misconfiguration: the service exits 1)."""


@dataclass
class InFlightBatch:
    """A batch handed to the database thread, and the outcome of its current attempt."""

    rows: list[MessageRow | DeadLetterRow]
    batch: Batch
    attempt: Future[tuple[WriteResult, float]]


class ConsumerService:
    def __init__(self, settings: Settings, metrics: ConsumerMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or ConsumerMetrics()
        self.writer = BatchWriter(settings)
        self._db = WriteThread(self.writer)
        self._in_flight: InFlightBatch | None = None
        self._abandoned = False  # a batch was given up (only when stopping): nothing after it may be written
        self._database_commits = 0
        self.positions = Positions()
        self._classify = Classifier(messages_topic=settings.kafka_topic, message_id_field=settings.message_id_field)
        self._stopping = threading.Event()
        self._pending = PendingBatch(settings.kafka_topic)
        self._unassigned_since: float | None = None  # since when the group has given no assignment
        self._last_heartbeat = self._last_lag_update = time.monotonic()
        self._heartbeat_inserted = 0
        self._lag_total = 0
        self._progress: ProgressFile  # made in run(), under IOT_HOME

    def stop(self) -> None:
        self._stopping.set()

    # -- rebalance callbacks (run inside consume()) -------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        stored = retry_infrastructure(
            lambda: self._db.call(lambda: self.writer.stored_offsets(keys)), description="read stored offsets",
            should_stop=self._stopping.is_set,
        )
        for tp in partitions:
            position = stored.get((tp.topic, tp.partition))
            tp.offset = OFFSET_BEGINNING if position is None else position
            self.positions.assign((tp.topic, tp.partition), position)
        consumer.assign(partitions)
        self._unassigned_since = None
        log.info("partitions assigned", extra={"partitions": {f"{t}[{p}]": stored.get((t, p)) for t, p in keys}})

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = {(tp.topic, tp.partition) for tp in partitions}
        self._settle_in_flight(consumer, gone)
        # Unwritten records of a revoked partition are dropped: its next owner starts from the database.
        self._pending.drop(gone)
        for topic, partition in gone:
            self.positions.revoke((topic, partition))
            self.metrics.forget_lag(topic, partition)
        if not self.positions.assigned():
            self._unassigned_since = time.monotonic()
        log.info("partitions revoked", extra={"partitions": sorted(f"{t}[{p}]" for t, p in gone)})

    # -- main loop ----------------------------------------------------------------------------------
    def run(self) -> int:
        """Consume until stopped: 0 after a clean stop; 1 when Kafka refuses the credentials."""
        try:
            return self._run()
        except KafkaAuthenticationFailed as exc:
            log.critical("kafka authentication failed: stopping", extra={"error": str(exc)})
            return 1

    def _run(self) -> int:
        self._progress = ProgressFile(self.settings.home, "consumer", service_identity("consumer", self.settings))
        consumer = self._open_consumer()
        log.info("consumer started", extra={"topics": [self.settings.kafka_topic, self.settings.kafka_dlq_topic],
                                            "group": self.settings.kafka_consumer_group})
        try:
            while not self._stopping.is_set():
                self._collect(consumer)
                ready = self._prepare()  # formatted while the batch before it is still being written
                self._finish_in_flight(consumer)
                self._submit(ready)
                self._heartbeat(consumer)
                consumer = self._reopen_if_stuck(consumer)
            ready = self._prepare()
            self._finish_in_flight(consumer)
            self._submit(ready)
            self._finish_in_flight(consumer)
        finally:
            try:
                consumer.close()  # its revocation callback still settles a batch in flight
            finally:
                self._db.close()
                self._progress.close()
            log.info("consumer stopped", extra={"totals": vars(self.metrics.totals)})
        return 0

    def _open_consumer(self) -> Consumer:
        consumer = Consumer(
            {**kafka_config(self.settings), "error_cb": self._on_client_error}, logger=logging.getLogger("iot_platform.consumer.kafka")
        )
        consumer.subscribe(
            [self.settings.kafka_topic, self.settings.kafka_dlq_topic],
            on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke,
        )
        self._unassigned_since = time.monotonic()
        return consumer

    def _reopen_if_stuck(self, consumer: Consumer) -> Consumer:
        """A new Kafka client when the group has given this one no assignment for too long.

        librdkafka calls on_assign after every rebalance, with an empty list for a member that gets no
        partition. After a broker stall it can instead stay stuck rejoining (seen once in this project's
        CI runs of the 30 s Kafka SIGSTOP fault test: the coordinator's requests queued and timed out for
        minutes). Reopening loses nothing: without an assignment nothing is pending or in flight (the
        revocation settled them), and positions come from PostgreSQL on the next assignment.
        """
        since = self._unassigned_since
        if since is None or time.monotonic() - since < self.settings.consumer_rejoin_timeout_s:
            return consumer
        log.warning("no partition assignment from the group; reopening the Kafka consumer",
                    extra={"waited_s": round(time.monotonic() - since, 1)})
        self._finish_in_flight(consumer)
        # close() leaves the group, and revokes through _on_revoke any assignment it is given meanwhile.
        # With Kafka blackholed it returned once Kafka answered again (about 16 s in the fault test).
        consumer.close()
        self.metrics.record_reopen()
        log.info("kafka consumer closed; opening a new one")
        return self._open_consumer()

    def _collect(self, consumer: Consumer) -> None:
        """Fill ``self._pending`` until the batch size or the maximum wait is reached."""
        size = self.settings.consumer_batch_size
        deadline = time.monotonic() + self.settings.consumer_batch_max_wait_ms / 1000
        consumed: Counter[str] = Counter()
        classify, accept = self._classify, self.positions.accept
        while len(self._pending) < size and not self._stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (len(self._pending) >= size // 2 and self._database_idle()):
                break  # half a batch is ready and the database thread would wait for it: hand it over now
            for message in consumer.consume(min(size - len(self._pending), _CONSUME_CHUNK), timeout=min(remaining, 1.0)):
                if message.error() is not None:
                    self._kafka_error(message.error())
                    continue
                topic, partition, offset = message.topic(), message.partition(), message.offset()
                if not accept((topic, partition), offset):
                    continue
                consumed[topic] += 1
                kind, timestamp_ms = message.timestamp()
                self._pending.append(classify(topic, partition, offset, message.headers(), message.value(), timestamp_ms if kind else None))
        if self.positions.expired:  # recorded with the batch holding the records after each gap
            self._pending.add_expired(self.positions.take_expired())
        self.metrics.record_consumed(consumed)

    def _database_idle(self) -> bool:
        return self._in_flight is not None and self._in_flight.attempt.done()

    def _on_client_error(self, error: KafkaError) -> None:
        """librdkafka's error callback (runs inside consume()): wrong credentials stop the consumer."""
        if is_authentication_failure(error.code()):
            raise KafkaAuthenticationFailed(authentication_message(error.str()))
        self._kafka_error(error)

    def _kafka_error(self, error: KafkaError) -> None:
        if error.fatal():
            raise KafkaException(error)
        if error.code() != KafkaError._PARTITION_EOF:
            log.warning("kafka error", extra={"error": str(error)})

    def _prepare(self) -> tuple[list[MessageRow | DeadLetterRow], Batch] | None:
        """Take the pending records as a batch (its COPY text was formatted as they arrived)."""
        return self._pending.take()

    def _submit(self, ready: tuple[list[MessageRow | DeadLetterRow], Batch] | None) -> None:
        """Hand a prepared batch to the database thread once the batch before it has committed.

        After an abandoned batch nothing more is written: its offsets would skip the abandoned records.
        """
        if ready is None:
            return
        rows, batch = ready
        if self._abandoned:
            log.warning("stopping after an unwritten batch; the next one is read again on restart too", extra={"records": len(rows)})
            return
        self._in_flight = InFlightBatch(rows, batch, self._db.submit(batch))

    def _finish_in_flight(self, consumer: Consumer) -> None:
        """Wait for the batch in flight; retry it until it commits or we stop; then commit to Kafka."""
        delays = DATABASE_BACKOFF.delays()
        while (flight := self._in_flight) is not None:
            error = self._wait(consumer, flight)
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

    def _settle_in_flight(self, consumer: Consumer, revoked: set[tuple[str, int]]) -> None:
        """On revocation: wait for the batch in flight; if it failed, keep only the partitions we still own."""
        flight = self._in_flight
        if flight is None or self._wait(consumer, flight) is None:
            return
        kept = [r for r in flight.rows if row_key(r, self.settings.kafka_topic) not in revoked]
        log.warning("batch in flight failed during a rebalance; revoked partitions' records dropped",
                    extra={"dropped": len(flight.rows) - len(kept), "kept": len(kept)})
        self._in_flight = None
        if kept:
            expired = tuple(e for e in flight.batch.expired if e.key not in revoked)
            batch = make_batch(kept, self.settings.kafka_topic, expired=expired)
            self._in_flight = InFlightBatch(kept, batch, self._db.submit(batch))

    def _wait(self, consumer: Consumer, flight: InFlightBatch) -> Exception | None:
        """Wait for the current attempt. Success: metrics, Kafka commit, nothing in flight; else the error."""
        try:
            result, seconds = flight.attempt.result()
        except MissingPartition as exc:
            return exc
        except Exception as exc:  # noqa: BLE001 - infrastructure retries; anything else also never advances
            self.metrics.record_database_error()
            infra = is_infrastructure_error(exc)
            log.log(logging.WARNING if infra else logging.ERROR, "batch not written, retrying",
                    extra={"records": len(flight.rows), "error": str(exc).strip()[:300], "infrastructure": infra},
                    exc_info=not infra)
            return exc
        self._in_flight = None
        self.metrics.record_batch(result, len(flight.rows), seconds)
        for gap in result.expired:
            log.error("records deleted by Kafka retention before they were read: lost", extra={
                "topic": gap.topic, "partition": gap.partition, "first_offset": gap.first_offset,
                "last_offset": gap.last_offset, "records": gap.records,
            })
        self._database_commits += 1
        if self._database_commits == self.settings.fault_exit_after_commits:
            # Fault injection for the test suite: die like a SIGKILL between the two commits.
            log.warning("fault injection: exiting after a database commit, before the Kafka commit")
            os._exit(137)
        self._commit_to_kafka(consumer, flight.batch.next_offsets)
        return None

    def _commit_to_kafka(self, consumer: Consumer, next_offsets: dict[tuple[str, int], int]) -> None:
        assigned = set(self.positions.assigned())
        offsets = [TopicPartition(t, p, n) for (t, p), n in next_offsets.items() if (t, p) in assigned]
        if not offsets:
            return
        try:
            consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as exc:  # lag monitoring only: the database holds the position
            log.debug("kafka commit failed", extra={"error": str(exc)})

    def _update_lag(self, consumer: Consumer) -> int:
        """Per partition: the broker's high watermark (as last fetched) minus the stored position."""
        total = 0
        for topic, partition in self.positions.assigned():
            position = self.positions.next_offset((topic, partition))
            try:
                _low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
            except KafkaException:
                continue
            if high >= 0 and position is not None:
                lag = max(0, high - position)
                self.metrics.set_lag(topic, partition, lag)
                total += lag
        return total

    def _heartbeat(self, consumer: Consumer) -> None:
        now = time.monotonic()
        if now - self._last_lag_update >= 1.0:
            self._lag_total = self._update_lag(consumer)
            self._last_lag_update = now
        # For service_watchdog: batches committed, and records waiting (in Kafka, pending, in flight).
        in_flight = self._in_flight
        self._progress.update(self._database_commits, self._lag_total + len(self._pending) + (len(in_flight.rows) if in_flight else 0), now)
        if now - self._last_heartbeat < self.settings.heartbeat_interval_s:
            return
        totals = self.metrics.totals
        rate = (totals.inserted - self._heartbeat_inserted) / (now - self._last_heartbeat)
        log.info("consumer heartbeat", extra={**vars(totals), "rows_per_s": round(rate, 1), "lag": self._lag_total,
                                              "assigned": len(self.positions.assigned()), "position_gaps": self.positions.gaps})
        self._last_heartbeat, self._heartbeat_inserted = now, totals.inserted

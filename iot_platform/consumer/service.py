"""`iot-platform consumer`: Kafka (messages + dead-letter topics) -> PostgreSQL, exactly-once effect.

Guarantee: every record of both topics ends up exactly once in PostgreSQL -- a row of iot.messages,
of iot.dead_letters, or (a copy the bridge produced twice, same tenant and payload message id) of
iot.duplicate_messages. The position of record is PostgreSQL's ``iot.ingest_offsets``, committed in
the same transaction as the rows (writer.py); on assignment each partition is sought to it
(group.py). Kafka offsets are committed after the database commit, for lag monitoring only; auto
commit is off. Records Kafka's retention deleted before they were read (the consumer was down longer
than the topic's retention) are the one loss it cannot prevent; it makes it loud: the gap is
recorded in ``iot.expired_offsets`` in the transaction that moves past it, counted in
``iot_consumer_records_expired_before_read`` and logged as an ERROR with its offsets. Database
errors retry the same batch with jittered backoff, reconnecting, and never advance an offset
(sink.py); the consumer stays in its group meanwhile (up to ``consumer_max_poll_interval_ms``).
On SIGTERM/SIGINT the batch in hand is written (or abandoned if the database is down), then the
consumer leaves its group and exits 0; 1 if its Kafka client does not close within
``IOT_CONSUMER_CLOSE_TIMEOUT_S`` (kafka_client.py), so that a supervisor restarts it.

Threads: the main thread runs this loop: it reads and classifies Kafka records (positions.py drops
stale copies and finds gaps, records.py classifies) and formats each batch's COPY data as records
arrive (pending.py); one database thread (write_thread.py) writes. Batch N+1 is collected while
batch N is written (handed over early, from half a batch, when the database thread would otherwise
wait; kept open past its wait while the database thread is still busy); N+1 is submitted only once N
has committed (at most one batch in flight, batches commit in Kafka order), and Kafka's commit of N
follows N's database commit. Rebalance callbacks run inside ``consume()`` on this thread (group.py);
lag, progress and heartbeat are reported once per turn (reporting.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

from confluent_kafka import Consumer

from iot_platform.consumer.group import GroupMember
from iot_platform.consumer.kafka_client import KafkaAuthenticationFailed, KafkaClientWedged, check_error
from iot_platform.consumer.metrics import ConsumerMetrics
from iot_platform.consumer.pending import PendingBatch
from iot_platform.consumer.positions import Positions
from iot_platform.consumer.records import Classifier
from iot_platform.consumer.reporting import Reporter
from iot_platform.consumer.sink import BatchSink
from iot_platform.consumer.write_thread import WriteThread
from iot_platform.consumer.writer import BatchWriter
from iot_platform.observability.identity import service_identity
from iot_platform.observability.progress import ProgressFile
from iot_platform.settings import Settings

log = logging.getLogger(__name__)
# Records per consume() call: small enough to notice soon that the database thread has finished its
# batch (2,000: it idled ~10% of the time; 500: +7% rows/s; 200: slower again), large enough to
# amortise the call.
_CONSUME_CHUNK = 500
_SINK_BUSY_POLL_S = 0.005  # past the batch's wait, how often to look whether the database thread can take it


class ConsumerService:
    def __init__(self, settings: Settings, metrics: ConsumerMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or ConsumerMetrics()
        self._stopping = threading.Event()
        self._db = WriteThread(BatchWriter(settings))
        self.positions = Positions()
        self._pending = PendingBatch(settings.kafka_topic)
        self._classify = Classifier(messages_topic=settings.kafka_topic, message_id_field=settings.message_id_field)
        self._sink = BatchSink(settings, self.metrics, self._db, self._stopping,
                               on_commit=lambda offsets: self._group.commit_offsets(offsets))
        self._group = GroupMember(settings, self.metrics, self._sink, self.positions, self._pending)

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> int:
        """Consume until stopped: 0 after a clean stop; 1 when Kafka refuses the credentials or a
        Kafka client does not close in time."""
        try:
            return self._run()
        except KafkaAuthenticationFailed as exc:
            log.critical("kafka authentication failed: stopping", extra={"error": str(exc)})
            return 1
        except KafkaClientWedged as exc:
            log.critical("kafka clients keep getting stuck: exiting so that the supervisor restarts the consumer",
                         extra={"error": str(exc)})
            return 1

    def _run(self) -> int:
        progress = ProgressFile(self.settings.home, "consumer", service_identity("consumer", self.settings))
        reporter = Reporter(self.settings, self.metrics, self.positions, progress)
        sink, consumer = self._sink, self._group.open()
        log.info("consumer started", extra={"topics": [self.settings.kafka_topic, self.settings.kafka_dlq_topic],
                                            "group": self.settings.kafka_consumer_group,
                                            "instance": self.settings.consumer_instance_id})
        try:
            while not self._stopping.is_set():
                self._collect(consumer)
                ready = self._pending.take()  # formatted while the batch before it is still being written
                sink.finish()
                sink.submit(ready)
                reporter.tick(consumer, sink.commits, len(self._pending) + sink.records_in_flight())
                consumer = self._group.replace_if_stuck(consumer)
            ready = self._pending.take()
            sink.finish()
            sink.submit(ready)
            sink.finish()
        finally:
            try:
                closed = self._group.close()
            finally:
                self._db.close()
                progress.close()
            log.info("consumer stopped", extra={"totals": vars(self.metrics.totals)})
        if not closed:
            log.error("the Kafka client did not close in time: exiting 1 (positions are in PostgreSQL)",
                      extra={"timeout_s": self.settings.consumer_close_timeout_s})
            return 1
        return 0

    def _collect(self, consumer: Consumer) -> None:
        """Fill the pending batch until the batch size, or until the maximum wait has passed and the
        database thread can take it.

        Past the wait, a batch the database thread cannot take yet stays open: its records would wait
        just as long in a closed one, and a fuller batch is one transaction for more rows. Half a
        batch goes as soon as the database thread would otherwise wait for it."""
        size = self.settings.consumer_batch_size
        deadline = time.monotonic() + self.settings.consumer_batch_max_wait_ms / 1000
        consumed: Counter[str] = Counter()
        classify, accept, pending, sink = self._classify, self.positions.accept, self._pending, self._sink
        while len(pending) < size and not self._stopping.is_set():
            remaining = deadline - time.monotonic()
            if (remaining <= 0 or len(pending) >= size // 2) and sink.ready():
                break
            timeout = min(remaining, 1.0) if remaining > 0 else _SINK_BUSY_POLL_S
            for message in consumer.consume(min(size - len(pending), _CONSUME_CHUNK), timeout=timeout):
                if message.error() is not None:
                    check_error(message.error())
                    continue
                topic, partition, offset = message.topic(), message.partition(), message.offset()
                if not accept((topic, partition), offset):
                    continue
                consumed[topic] += 1
                kind, timestamp_ms = message.timestamp()
                pending.append(classify(topic, partition, offset, message.headers(), message.value(), timestamp_ms if kind else None))
        if self.positions.expired:  # recorded with the batch holding the records after each gap
            pending.add_expired(self.positions.take_expired())
        self.metrics.record_consumed(consumed)

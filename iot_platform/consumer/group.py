"""The consumer's place in its Kafka group: the client it reads with, the partitions it owns and from where.

Guarantee: on assignment every partition is sought to the next offset stored in PostgreSQL, read on
the database thread after the batch in flight (so it includes it); nothing stored yet: the start of
the partition. On revocation (or loss) the batch in flight is settled first (committed, or the
revoked partitions' records dropped and the rest retried: sink.py), then the revoked partitions'
pending records and positions are dropped: their next owner starts from the database. Kafka gets a
batch's offsets only after its database commit, and only for partitions still owned.

A client the group has given no assignment (not even an empty one: librdkafka calls on_assign after
every rebalance) for ``IOT_CONSUMER_REJOIN_TIMEOUT_S`` is replaced: a client that lost its
coordinator is revoked by its own session timeout and never assigned again, and librdkafka 2.10-2.16
loses every broker for good when a Metadata response lists none (a fenced single broker,
docs/design.md §4.2), after which its close() never returns. The old client is retired first (its
partitions forgotten, its callbacks ignored from then on), closed within
``IOT_CONSUMER_CLOSE_TIMEOUT_S`` or left closing in the background (kafka_client.py). Nothing is
lost: nothing is pending while unassigned, and positions come from PostgreSQL on the next
assignment. A second stuck client while the first is still closing raises :class:`KafkaClientWedged`.
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from iot_platform.consumer.kafka_client import BoundedCloser, KafkaClientWedged, check_client_error, kafka_config
from iot_platform.consumer.metrics import ConsumerMetrics
from iot_platform.consumer.pending import PendingBatch
from iot_platform.consumer.positions import Positions, TopicPartitionKey
from iot_platform.consumer.sink import BatchSink
from iot_platform.settings import Settings

log = logging.getLogger(__name__)


class GroupMember:
    def __init__(self, settings: Settings, metrics: ConsumerMetrics, sink: BatchSink, positions: Positions,
                 pending: PendingBatch) -> None:
        self._settings, self._metrics, self._sink = settings, metrics, sink
        self._positions, self._pending = positions, pending
        self.client: Consumer | None = None  # the current client; callbacks of a retired one are ignored
        self._unassigned_since: float | None = None  # since when the group has given no assignment
        self._closer = BoundedCloser()

    def open(self) -> Consumer:
        consumer: Consumer | None = None

        def on_error(error: KafkaError) -> None:
            if consumer is not None and consumer is not self.client:
                # A retired client, still closing: its errors (fenced by its successor's static
                # membership, say) stop nothing.
                log.info("kafka error of a retired client", extra={"error": str(error)})
                return
            check_client_error(error)

        consumer = Consumer({**kafka_config(self._settings), "error_cb": on_error},
                            logger=logging.getLogger("iot_platform.consumer.kafka"))
        consumer.subscribe([self._settings.kafka_topic, self._settings.kafka_dlq_topic],
                           on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke)
        self.client = consumer
        self._unassigned_since = time.monotonic()
        return consumer

    def close(self) -> bool:
        """Leave the group; False if the client did not close within ``IOT_CONSUMER_CLOSE_TIMEOUT_S``.

        Its revocation callback (on the closing thread, while this one waits) still settles a batch in flight.
        """
        try:
            return self.client is None or self._closer.close(self.client, self._settings.consumer_close_timeout_s)
        finally:
            self.client = None

    def commit_offsets(self, next_offsets: dict[TopicPartitionKey, int]) -> None:
        """Commit a stored batch's offsets to Kafka (lag monitoring only: the database holds the position)."""
        assigned = set(self._positions.assigned())
        offsets = [TopicPartition(t, p, n) for (t, p), n in next_offsets.items() if (t, p) in assigned]
        if not offsets or self.client is None:
            return
        try:
            self.client.commit(offsets=offsets, asynchronous=True)
        except KafkaException as exc:
            log.debug("kafka commit failed", extra={"error": str(exc)})

    def replace_if_stuck(self, consumer: Consumer) -> Consumer:
        """``consumer``, or a new client when the group has given it no assignment for too long."""
        since = self._unassigned_since
        if since is None or time.monotonic() - since < self._settings.consumer_rejoin_timeout_s:
            return consumer
        log.warning("no partition assignment from the group; reopening the Kafka consumer",
                    extra={"waited_s": round(time.monotonic() - since, 1)})
        self._sink.finish()
        self._forget(set(self._positions.assigned()))
        self.client = None
        timeout_s = self._settings.consumer_close_timeout_s
        if not self._closer.close(consumer, timeout_s):
            log.error("the old Kafka client did not close in time; it is left closing in the background",
                      extra={"timeout_s": timeout_s})
            if (closing := self._closer.still_closing()) > 1:
                raise KafkaClientWedged(f"{closing} Kafka clients did not close")
        self._metrics.record_reopen()
        log.info("opening a new kafka consumer")
        return self.open()

    # -- rebalance callbacks (run inside consume(), or inside close() on the closing thread) ----------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if consumer is not self.client:
            return  # a retired client, closing in the background
        keys = [(tp.topic, tp.partition) for tp in partitions]
        stored = self._sink.stored_offsets(keys)
        for tp in partitions:
            position = stored.get((tp.topic, tp.partition))
            tp.offset = OFFSET_BEGINNING if position is None else position
            self._positions.assign((tp.topic, tp.partition), position)
        consumer.assign(partitions)
        self._unassigned_since = None
        log.info("partitions assigned", extra={"partitions": {f"{t}[{p}]": stored.get((t, p)) for t, p in keys}})

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if consumer is not self.client:
            return  # a retired client: its partitions were forgotten when it was retired
        self._forget({(tp.topic, tp.partition) for tp in partitions})

    def _forget(self, gone: set[TopicPartitionKey]) -> None:
        """Give up ``gone``: settle the batch in flight, drop their pending records and positions."""
        self._sink.settle(gone)
        self._pending.drop(gone)  # their next owner reads them again from the database's position
        for topic, partition in gone:
            self._positions.revoke((topic, partition))
            self._metrics.forget_lag(topic, partition)
        if not self._positions.assigned():
            self._unassigned_since = time.monotonic()
        if gone:
            log.info("partitions revoked", extra={"partitions": sorted(f"{t}[{p}]" for t, p in gone)})

"""The Kafka side of the bridge: produce every record until Kafka confirms it.

Guarantee: a record is never dropped. `send` hands it to librdkafka (idempotent, ``acks=all``);
when librdkafka's local queue is full it waits in a backlog, in order, instead of being dropped.
A failed delivery (timeout, broker down, unknown topic...) is produced again after a jittered
backoff, as often as it takes; it is never reported as delivered. Two exceptions: a record of a
connection that is already gone is not retried (the broker redelivers the message, and the retry's
ack would be discarded anyway), and a good record that Kafka refuses for its size is re-routed to
the dead-letter topic. A fatal producer error (the idempotence state is lost) stops the bridge:
nothing unconfirmed was acked, so a restart redelivers it.

Threads: `send` from any thread (paho's network thread); `service`, `flush` and therefore every
delivery callback on the one thread that owns the producer.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from iot_platform.access.kafka_credentials import authentication_message, is_authentication_failure
from iot_platform.bridge.acks import InFlightMessage
from iot_platform.core.records import KAFKA_REJECTED, RecordRules, dead_letter_record
from iot_platform.core.retry import Backoff
from iot_platform.settings import Settings

log = logging.getLogger(__name__)

# librdkafka's informational lines (one per timed-out request...) would flood a supervisor's event log.
_LIBRDKAFKA_LOG = logging.getLogger("iot_platform.bridge.librdkafka")
_LIBRDKAFKA_LOG.setLevel(logging.WARNING)
_REROUTABLE = {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_RECORD}


def producer_config(settings: Settings) -> dict[str, Any]:
    return {
        **settings.kafka_config(),
        "client.id": f"iot-bridge-{settings.bridge_id}",
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": settings.kafka_compression,
        "linger.ms": settings.kafka_linger_ms,
        "delivery.timeout.ms": settings.kafka_delivery_timeout_ms,
        "request.timeout.ms": settings.kafka_request_timeout_ms,
        "message.max.bytes": settings.kafka_max_message_bytes,
        "queue.buffering.max.kbytes": settings.bridge_buffer_kb,
        "socket.connection.setup.timeout.ms": 10_000,
        "reconnect.backoff.max.ms": int(settings.bridge_reconnect_max_backoff_s * 1000),
        "logger": _LIBRDKAFKA_LOG,
    }


class FatalProducerError(RuntimeError):
    """librdkafka raised a fatal error: the producer cannot continue and the bridge must restart."""


class ReliableProducer:
    """Produces InFlightMessage records until delivered; calls ``on_delivered(item)`` on the owning thread."""

    def __init__(
        self,
        settings: Settings,
        rules: RecordRules,
        on_delivered: Callable[[InFlightMessage], None],
        is_stale: Callable[[InFlightMessage], bool],
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        self._rules = rules
        self._on_delivered = on_delivered
        self._is_stale = is_stale
        self._backoff = Backoff(initial_s=0.5, maximum_s=settings.bridge_reconnect_max_backoff_s)
        self._producer = Producer({**producer_config(settings), **(extra_config or {}), "error_cb": self._on_error})
        self._lock = threading.Lock()  # guards the backlog and produce order
        self._backlog: deque[InFlightMessage] = deque()
        self._refused: deque[tuple[InFlightMessage, KafkaError]] = deque()  # produce() raised; owning thread retries
        self._retries: list[tuple[float, int, InFlightMessage]] = []  # (due, seq, item); owning thread only
        self._seq = itertools.count()
        self.retries = 0
        self.stale_failures = 0
        self.fatal: KafkaError | None = None
        self._last_error_log: dict[int, float] = {}

    def send(self, item: InFlightMessage) -> None:
        """Hand a record to Kafka without blocking; never drops it."""
        with self._lock:
            if self._backlog:
                self._backlog.append(item)
                return
            if not self._produce(item):
                self._backlog.append(item)

    def service(self, timeout_s: float) -> None:
        """Serve delivery reports for up to ``timeout_s``, then move backlog and due retries into Kafka."""
        self._producer.poll(0 if self._backlog else timeout_s)
        self._drain_backlog()
        while self._refused:
            self._failed(*self._refused.popleft())
        self._send_due_retries(time.monotonic())
        if self.fatal is not None:
            detail = self.fatal.str()
            raise FatalProducerError(authentication_message(detail) if is_authentication_failure(self.fatal.code()) else detail)

    def flush(self, timeout_s: float) -> int:
        """Send everything waiting (retries included, backoff ignored); return what is still undelivered."""
        deadline = time.monotonic() + timeout_s
        self._send_due_retries(float("inf"))
        while self._backlog and time.monotonic() < deadline:
            self._producer.poll(0.05)
            self._drain_backlog()
        return self._producer.flush(max(0.0, deadline - time.monotonic())) + len(self._backlog)

    def close(self) -> None:
        """Drop librdkafka's unsent copies (never acked, so the broker redelivers them) and release it."""
        self._producer.purge()
        self._producer.poll(0)

    @property
    def full(self) -> bool:
        """librdkafka's queue refused a record that now waits in the backlog: take no more for now."""
        return bool(self._backlog)

    @property
    def waiting(self) -> int:
        return len(self._backlog) + len(self._retries) + len(self._refused)

    def _produce(self, item: InFlightMessage) -> bool:
        """False when librdkafka's queue is full (the caller keeps the item); refusals are retried later."""
        record = item.record
        try:
            self._producer.produce(
                record.topic,
                value=record.value,
                key=record.key,
                headers=record.headers,
                on_delivery=functools.partial(self._delivered, item),
            )
        except BufferError:
            return False
        except KafkaException as exc:
            self._refused.append((item, exc.args[0]))
        return True

    def _drain_backlog(self) -> None:
        if not self._backlog:
            # Usually empty. Not taking the lock then keeps paho's thread from waiting on it in
            # `send` (6% of the bridge's samples); an item appended right after this check is
            # drained on the next call.
            return
        with self._lock:
            while self._backlog:
                if not self._produce(self._backlog[0]):
                    return
                self._backlog.popleft()

    def _send_due_retries(self, now: float) -> None:
        while self._retries and self._retries[0][0] <= now:
            _, _, item = heapq.heappop(self._retries)
            self.send(item)

    def _delivered(self, item: InFlightMessage, err: KafkaError | None, _msg: Message) -> None:
        if err is None:
            self._on_delivered(item)
        else:
            self._failed(item, err)

    def _failed(self, item: InFlightMessage, err: KafkaError) -> None:
        if err.fatal():
            self.fatal = err
            return
        if self._is_stale(item):
            self.stale_failures += 1
            return
        if err.code() in _REROUTABLE and item.record.dead_letter_reason is None:
            record = dead_letter_record(item.message, f"{KAFKA_REJECTED}:{err.name()}", self._rules)
            item = replace(item, record=record)
        self._log_rate_limited(err, item)
        self.retries += 1
        delay = self._backoff.delay(item.attempts)
        heapq.heappush(self._retries, (time.monotonic() + delay, next(self._seq), replace(item, attempts=item.attempts + 1)))

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal() or is_authentication_failure(err.code()):  # wrong credentials: retrying cannot help
            self.fatal = err
        self._log_rate_limited(err, None)

    def _log_rate_limited(self, err: KafkaError, item: InFlightMessage | None) -> None:
        now = time.monotonic()
        if now - self._last_error_log.get(err.code(), 0.0) < 10.0:
            return
        self._last_error_log[err.code()] = now
        extra = {"kafka_error": err.name(), "detail": err.str()}
        if item is not None:
            extra |= {"topic": item.record.topic, "attempts": item.attempts}
        log.warning("kafka delivery failed, will retry" if item else "kafka client error", extra=extra)

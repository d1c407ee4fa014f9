"""When the consumer closes a batch (consumer/service.py ``_collect``), with Kafka and the database
thread stood in for: a batch closes once its wait is over and the database thread can take it, and
stays open, still filling, while the database thread is busy."""

from __future__ import annotations

import threading
import time

from iot_platform.consumer.metrics import ConsumerMetrics
from iot_platform.consumer.pending import PendingBatch
from iot_platform.consumer.positions import Positions
from iot_platform.consumer.records import Classifier
from iot_platform.consumer.service import ConsumerService
from iot_platform.settings import Settings

TOPIC = "msgs"


class Record:
    """What ``consume()`` returns, as far as ``_collect`` reads it (a record without an envelope: a dead letter)."""

    def __init__(self, offset: int) -> None:
        self._offset = offset

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return TOPIC

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000)

    def headers(self) -> None:
        return None

    def value(self) -> bytes:
        return b"{}"


class Trickle:
    """A Kafka consumer handing over one record every ``every_s``."""

    def __init__(self, every_s: float) -> None:
        self.every_s, self.next_offset = every_s, 0

    def consume(self, num_messages: int, timeout: float) -> list[Record]:
        time.sleep(min(self.every_s, timeout))
        self.next_offset += 1
        return [Record(self.next_offset - 1)]


class Sink:
    """The database thread, busy until ``busy_until`` (monotonic)."""

    def __init__(self, busy_until: float) -> None:
        self.busy_until = busy_until

    def ready(self) -> bool:
        return time.monotonic() >= self.busy_until


def collector(sink: Sink, wait_ms: int) -> ConsumerService:
    service = ConsumerService.__new__(ConsumerService)  # only what _collect uses: no Kafka, no database
    service.settings = Settings(kafka_topic=TOPIC, consumer_batch_size=10_000, consumer_batch_max_wait_ms=wait_ms)
    service.metrics = ConsumerMetrics()
    service._stopping = threading.Event()  # noqa: SLF001
    service.positions = Positions()
    service.positions.assign((TOPIC, 0), 0)
    service._pending = PendingBatch(TOPIC)  # noqa: SLF001
    service._classify = Classifier(messages_topic=TOPIC, message_id_field="msg_id")  # noqa: SLF001
    service._sink = sink  # type: ignore[assignment]  # noqa: SLF001
    return service


def test_a_batch_closes_after_its_wait_when_the_database_thread_can_take_it() -> None:
    service = collector(Sink(busy_until=0.0), wait_ms=30)
    started = time.monotonic()
    service._collect(Trickle(0.002))  # noqa: SLF001
    assert 0.03 <= time.monotonic() - started < 1.0
    assert len(service._pending) > 0  # noqa: SLF001


def test_past_its_wait_a_batch_stays_open_and_fills_while_the_database_thread_is_busy() -> None:
    started = time.monotonic()
    service = collector(Sink(busy_until=started + 0.3), wait_ms=30)
    service._collect(Trickle(0.002))  # noqa: SLF001
    assert time.monotonic() - started >= 0.3, "closed while the database thread could not take it"
    assert len(service._pending) >= 50, "it went on collecting meanwhile"  # noqa: SLF001

"""Error classification and retry: infrastructure errors retry with backoff, data errors do not."""

from __future__ import annotations

import itertools

import psycopg2
import psycopg2.errors
import pytest

from iot_platform.consumer.pending import PendingBatch, make_batch
from iot_platform.consumer.records import DeadLetterRow, MessageRow
from iot_platform.core.retry import Backoff
from iot_platform.storage.db import DATABASE_BACKOFF, is_infrastructure_error, retry_infrastructure


def _pg_error(cls: type[psycopg2.Error], sqlstate: str) -> psycopg2.Error:
    """An error as the server would send it: psycopg2's class with its SQLSTATE."""
    with_code = type(cls.__name__, (cls,), {"pgcode": sqlstate})
    return with_code("simulated")


@pytest.mark.parametrize(
    ("exc", "infrastructure"),
    [
        (psycopg2.OperationalError("server closed the connection"), True),
        (psycopg2.InterfaceError("connection already closed"), True),
        (_pg_error(psycopg2.errors.QueryCanceled, "57014"), True),
        (_pg_error(psycopg2.errors.AdminShutdown, "57P01"), True),
        (_pg_error(psycopg2.errors.DeadlockDetected, "40P01"), True),
        (_pg_error(psycopg2.errors.LockNotAvailable, "55P03"), True),
        (_pg_error(psycopg2.errors.UndefinedTable, "42P01"), True),
        (_pg_error(psycopg2.errors.DiskFull, "53100"), True),
        (TimeoutError(), True),
        (_pg_error(psycopg2.errors.InvalidTextRepresentation, "22P02"), False),
        (_pg_error(psycopg2.errors.CheckViolation, "23514"), False),
        (_pg_error(psycopg2.errors.UntranslatableCharacter, "22P05"), False),
        (_pg_error(psycopg2.errors.UniqueViolation, "23505"), False),
        (ValueError("A string literal cannot contain NUL (0x00) characters."), False),
    ],
)
def test_classification(exc: BaseException, infrastructure: bool) -> None:
    """Database unavailable, overloaded or not migrated yet: infrastructure (retry, never advance).
    Bad data (and psycopg2's ValueError for NUL): not infrastructure (isolate and dead-letter)."""
    assert is_infrastructure_error(exc) is infrastructure


def test_retry_until_success_with_growing_jittered_delays() -> None:
    """Infrastructure errors are retried (sleeping a jittered, growing delay) until the call succeeds."""
    calls, sleeps = itertools.count(), []

    def flaky() -> str:
        if next(calls) < 4:
            raise psycopg2.OperationalError("down")
        return "ok"

    assert retry_infrastructure(flaky, description="t", sleep=sleeps.append, policy=Backoff(1, 4)) == "ok"
    assert len(sleeps) == 4 and all(0.5 <= s <= 4 for s in sleeps)


def test_data_errors_are_not_retried() -> None:
    """A data error propagates at once: retrying cannot fix bad data."""
    sleeps: list[float] = []
    with pytest.raises(ValueError):
        retry_infrastructure(lambda: (_ for _ in ()).throw(ValueError("NUL")), description="t", sleep=sleeps.append)
    assert sleeps == []


def test_stop_ends_retrying() -> None:
    """When the service is stopping, the infrastructure error is raised instead of retried forever."""
    with pytest.raises(psycopg2.OperationalError):
        retry_infrastructure(lambda: (_ for _ in ()).throw(psycopg2.OperationalError("down")), description="t",
                             should_stop=lambda: True, sleep=lambda _: None)


def test_database_backoff_is_bounded() -> None:
    """Delays never exceed the maximum and never drop below half the initial delay."""
    delays = list(itertools.islice(DATABASE_BACKOFF.delays(), 50))
    assert all(0.25 <= d <= 10.0 for d in delays) and max(delays[10:]) > 2


def test_batch_next_offsets_per_topic_partition() -> None:
    """A batch's next offset per (topic, partition) is its highest offset + 1, for both topics."""
    m = MessageRow("t", "p", "x", b"", None, None, None, None, 0, 2, 0)
    rows = [m, m.__class__(**{**{f: getattr(m, f) for f in m.__slots__}, "kafka_offset": 9}),
            DeadLetterRow("r", "bridge", "x", None, b"", 0, "dlq", 0, 4)]
    batch = make_batch(rows, "msgs")
    assert batch.next_offsets == {("msgs", 2): 10, ("dlq", 0): 5}
    assert len(batch.messages) == 2 and len(batch.dead_letters) == 1


def test_nothing_is_written_after_an_abandoned_batch(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Stopping while the database is down abandons the batch in flight; the batch prepared behind it
    is not written either (its stored offsets would skip the abandoned records for good)."""
    import threading
    from concurrent.futures import Future

    from iot_platform.consumer.metrics import ConsumerMetrics
    from iot_platform.consumer.sink import BatchSink
    from iot_platform.settings import Settings

    class DatabaseDown:
        def __init__(self) -> None:
            self.submitted: list[object] = []

        def submit(self, batch: object) -> Future:
            self.submitted.append(batch)
            attempt: Future = Future()
            attempt.set_exception(psycopg2.OperationalError("database down"))
            return attempt

    database, stopping, committed = DatabaseDown(), threading.Event(), []
    sink = BatchSink(Settings(home=tmp_path, kafka_topic="msgs", consumer_metrics_port=0), ConsumerMetrics(),
                     database, stopping, on_commit=committed.append)  # type: ignore[arg-type]
    first = [MessageRow("t", "p", "x", b"", None, None, None, None, 0, 0, 0)]
    sink.submit((first, make_batch(first, "msgs")))
    pending = PendingBatch("msgs")
    pending.append(MessageRow("t", "p", "x", b"", None, None, None, None, 0, 0, 1))
    stopping.set()
    ready = pending.take()
    sink.finish()
    sink.submit(ready)
    assert len(database.submitted) == 1 and sink.records_in_flight() == 0 and committed == []


def test_pending_batch_formats_as_rows_arrive_and_drops_revoked_partitions() -> None:
    """The batch taken from PendingBatch carries exactly the COPY data of its message rows (formatted
    on arrival) and their ids' claims, also after the rows of a revoked partition were dropped;
    taking leaves nothing."""
    from iot_platform.consumer.claims import claims_of
    from iot_platform.consumer.copy_format import copy_data

    pending = PendingBatch("msgs")
    rows = [MessageRow("t", "p", "x", bytes([i]), None, f"m{i}" if i % 3 else None, None, None, 0, i % 2, i) for i in range(6)]
    for row in [*rows, DeadLetterRow("r", "bridge", "x", None, b"", 0, "dlq", 0, 4)]:
        pending.append(row)
    pending.drop({("msgs", 1)})
    taken = pending.take()
    assert taken is not None and len(pending) == 0 and pending.take() is None
    kept, batch = taken
    assert batch.messages == rows[0::2] and len(kept) == 4
    assert batch.messages_copy == copy_data(rows[0::2])
    assert batch.claims == claims_of(rows[0::2]) != claims_of([])  # the claim of m2 and of m4
    assert batch.next_offsets == {("msgs", 0): 5, ("dlq", 0): 5}

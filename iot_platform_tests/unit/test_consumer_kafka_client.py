"""The consumer's bounded close of its Kafka client (a thread and a timeout: no Kafka needed)."""

from __future__ import annotations

import threading
import time

from iot_platform.consumer.kafka_client import BoundedCloser


class _Client:
    """A client whose close() returns only once ``release`` is set."""

    def __init__(self, release: threading.Event) -> None:
        self.release, self.closed = release, threading.Event()

    def close(self) -> None:
        self.release.wait()
        self.closed.set()


def test_a_close_that_returns_in_time_is_done() -> None:
    """A close that returns within the timeout: True, and nothing is left closing."""
    release = threading.Event()
    release.set()
    client, closer = _Client(release), BoundedCloser()
    assert closer.close(client, timeout_s=5.0) is True
    assert client.closed.is_set() and closer.still_closing() == 0


def test_a_close_that_hangs_is_left_closing_in_the_background() -> None:
    """A close that does not return: False once the timeout has passed (not later), the client counted as
    still closing until its close returns."""
    release = threading.Event()
    client, closer = _Client(release), BoundedCloser()
    started = time.monotonic()
    assert closer.close(client, timeout_s=0.3) is False
    assert 0.3 <= time.monotonic() - started < 2.0
    assert closer.still_closing() == 1 and not client.closed.is_set()
    release.set()
    assert client.closed.wait(5.0)
    deadline = time.monotonic() + 5.0
    while closer.still_closing() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert closer.still_closing() == 0


class _Sink:
    """What GroupMember needs of the sink: nothing in flight, nothing stored yet."""

    def finish(self) -> None: ...

    def settle(self, revoked: set[tuple[str, int]]) -> None: ...

    def stored_offsets(self, keys: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        return {}


def test_a_client_given_no_assignment_is_replaced_and_a_second_stuck_one_ends_the_process(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Past the rejoin timeout the client is retired: its partitions forgotten, its callbacks ignored
    from then on, its close (hanging) left in the background, a new client opened. A second client
    stuck while the first still closes raises KafkaClientWedged (the service exits 1)."""
    import pytest
    from confluent_kafka import TopicPartition

    from iot_platform.consumer.group import GroupMember
    from iot_platform.consumer.kafka_client import KafkaClientWedged
    from iot_platform.consumer.metrics import ConsumerMetrics
    from iot_platform.consumer.pending import PendingBatch
    from iot_platform.consumer.positions import Positions
    from iot_platform.settings import Settings

    release = threading.Event()
    clients = [_Client(release) for _ in range(3)]
    opened = iter(clients)
    settings = Settings(home=tmp_path, kafka_topic="msgs", consumer_metrics_port=0,
                        consumer_rejoin_timeout_s=0.01, consumer_close_timeout_s=0.1)
    positions, metrics = Positions(), ConsumerMetrics()
    member = GroupMember(settings, metrics, _Sink(), positions, PendingBatch("msgs"))  # type: ignore[arg-type]

    def open_fake() -> _Client:
        member.client, member._unassigned_since = next(opened), time.monotonic()  # type: ignore[assignment]
        return member.client  # type: ignore[return-value]

    monkeypatch.setattr(member, "open", open_fake)
    first = member.open()
    positions.assign(("msgs", 0), 5)
    member._unassigned_since = time.monotonic() - 1  # as if revoked long ago and never assigned again
    try:
        second = member.replace_if_stuck(first)  # type: ignore[arg-type]
        assert second is clients[1] and member.client is second and metrics.totals.kafka_reopened == 1
        assert positions.assigned() == [] and not first.closed.is_set()  # forgotten; its close still hangs
        positions.assign(("msgs", 1), 7)
        member._on_revoke(first, [TopicPartition("msgs", 1)])  # type: ignore[arg-type]  # a retired client's: ignored
        assert positions.assigned() == [("msgs", 1)]
        member._unassigned_since = None  # assigned (even an empty assignment counts): kept however long
        assert member.replace_if_stuck(second) is second  # type: ignore[arg-type]
        member._unassigned_since = time.monotonic() - 1
        with pytest.raises(KafkaClientWedged):
            member.replace_if_stuck(second)  # type: ignore[arg-type]
    finally:
        release.set()


def test_errors_of_a_retired_client_stop_nothing_those_of_the_current_one_still_do(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A retired client still closing may report a fatal error (fenced by its successor, which has the
    same static membership): ignored. The same error from the current client still stops the consumer."""
    import pytest
    from confluent_kafka import KafkaError, KafkaException

    from iot_platform.consumer import group
    from iot_platform.consumer.metrics import ConsumerMetrics
    from iot_platform.consumer.pending import PendingBatch
    from iot_platform.consumer.positions import Positions
    from iot_platform.settings import Settings

    class _Consumer:
        def __init__(self, config: dict, logger: object = None) -> None:
            self.config = config

        def subscribe(self, topics: list[str], **callbacks: object) -> None: ...

    monkeypatch.setattr(group, "Consumer", _Consumer)
    member = group.GroupMember(Settings(home=tmp_path, consumer_metrics_port=0), ConsumerMetrics(), _Sink(),  # type: ignore[arg-type]
                               Positions(), PendingBatch("msgs"))
    retired, current = member.open(), member.open()
    fenced = KafkaError(KafkaError.FENCED_INSTANCE_ID, "fenced", fatal=True)
    retired.config["error_cb"](fenced)  # type: ignore[attr-defined]
    with pytest.raises(KafkaException):
        current.config["error_cb"](fenced)  # type: ignore[attr-defined]

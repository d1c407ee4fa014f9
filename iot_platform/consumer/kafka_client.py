"""The consumer's Kafka client: its configuration, its errors, and a close that never blocks for long.

Guarantee: :meth:`BoundedCloser.close` returns within its timeout, whether or not librdkafka's
``close()`` does. That ``close()`` waits for the group coordinator (offset commits in flight, the
LeaveGroup answer) and, once the client has lost every broker, waits for ever: librdkafka 2.10-2.16
decommissions every broker a Metadata response leaves out, and a Kafka whose only broker is fenced
for a moment (KRaft, after the process was frozen past ``broker.session.timeout.ms``) answers with
no broker at all (docs/design.md §4.2). Such a client never reconnects and its close never returns.
The close runs in a daemon thread of its own; past the timeout it is left running there and the
caller goes on with a new client. Nothing is lost by leaving it: the positions of record are in
PostgreSQL, and a closing client neither rejoins the group nor calls back into the service (the
service ignores callbacks of a client it retired).
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException

from iot_platform.access.kafka_credentials import authentication_message, is_authentication_failure
from iot_platform.settings import Settings

log = logging.getLogger(__name__)


class KafkaAuthenticationFailed(RuntimeError):
    """Kafka refused the consumer's credentials (a misconfiguration: the service exits 1)."""


class KafkaClientWedged(RuntimeError):
    """A second Kafka client got stuck while an earlier one was still closing: restart the process."""


class Closeable(Protocol):
    def close(self) -> None: ...


def kafka_config(settings: Settings) -> dict[str, Any]:
    """librdkafka properties of the consumer (``error_cb`` and callbacks are added by the service)."""
    return {
        **settings.kafka_config(),
        "group.id": settings.kafka_consumer_group,
        # Static membership: a restarted replica takes its partitions back without a rebalance; it never
        # sends LeaveGroup, so a replica scaled away keeps its partitions until the session times out.
        "group.instance.id": settings.consumer_instance_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",  # a partition with no stored position starts at its beginning
        "session.timeout.ms": settings.consumer_session_timeout_ms,
        "heartbeat.interval.ms": max(500, settings.consumer_session_timeout_ms // 4),
        "max.poll.interval.ms": settings.consumer_max_poll_interval_ms,
        "socket.timeout.ms": settings.kafka_request_timeout_ms,
        "fetch.max.bytes": 64 * 1024 * 1024,
        "fetch.min.bytes": settings.consumer_fetch_min_bytes,
        "fetch.wait.max.ms": settings.consumer_fetch_wait_max_ms,
        "client.id": "iot-postgres-writer",
    }


def check_client_error(error: KafkaError) -> None:
    """librdkafka's error callback (runs inside consume()): wrong credentials stop the consumer."""
    if is_authentication_failure(error.code()):
        raise KafkaAuthenticationFailed(authentication_message(error.str()))
    check_error(error)


def check_error(error: KafkaError) -> None:
    """A record's or the client's error: fatal ones raise, others are logged (end of partition is no error)."""
    if error.fatal():
        raise KafkaException(error)
    if error.code() != KafkaError._PARTITION_EOF:
        log.warning("kafka error", extra={"error": str(error)})


class BoundedCloser:
    """Closes clients in threads of their own; remembers those whose close has not returned."""

    def __init__(self) -> None:
        self._closing: list[threading.Thread] = []

    def close(self, client: Closeable, timeout_s: float) -> bool:
        """Close ``client``; True if it closed within ``timeout_s``, False if it is still closing."""
        thread = threading.Thread(target=client.close, name="iot-consumer-kafka-close", daemon=True)
        thread.start()
        thread.join(timeout_s)
        if thread.is_alive():
            self._closing.append(thread)
            return False
        return True

    def still_closing(self) -> int:
        """Clients handed to :meth:`close` whose close has not returned yet."""
        self._closing = [t for t in self._closing if t.is_alive()]
        return len(self._closing)

"""The message-id claims of a batch, as the array literals of one prepared statement (pure).

The fast path claims a batch's message ids in ``iot.message_ids`` with ``iot_claim_ids``
(consumer/sql.py), which unnests five arrays: tenant, message id, receive time (epoch milliseconds),
Kafka partition and offset. They travel as array literals, so the claims need no temporary table:
before, they were copied into one, and PostgreSQL emptied it, with its TOAST table and index, at
every commit (about a quarter of a one-row transaction's CPU there, docs/design.md §11). Every text
element is double-quoted with backslash and double quote escaped, so an id holding commas, braces,
spaces, quotes or the word NULL reads back exactly; the integers are exact decimal.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from iot_platform.consumer.records import MessageRow


class Claims(NamedTuple):
    """The parameters of ``iot_claim_ids``, one element per row with a message id, in row order."""

    tenant_ids: str
    message_ids: str
    received_at_ms: str
    kafka_partitions: str
    kafka_offsets: str


def claims_of(rows: Iterable[MessageRow]) -> Claims:
    """The claims of those ``rows`` that have a message id."""
    claimed = [row for row in rows if row.message_id is not None]
    return Claims(
        text_array([row.tenant_id for row in claimed]),
        text_array([row.message_id for row in claimed]),  # type: ignore[misc]  # filtered above
        integer_array([row.received_at_ms for row in claimed]),
        integer_array([row.kafka_partition for row in claimed]),
        integer_array([row.kafka_offset for row in claimed]),
    )


def text_array(values: list[str]) -> str:
    """The text[] literal of ``values``."""
    if not values:
        return "{}"
    joined = "".join(values)  # one scan finds the rare batch that needs escapes
    if "\\" in joined or '"' in joined:
        values = [value.replace("\\", "\\\\").replace('"', '\\"') for value in values]
    return '{"' + '","'.join(values) + '"}'


def integer_array(values: list[int]) -> str:
    """The int[] or bigint[] literal of ``values``."""
    return "{" + ",".join(map(str, values)) + "}"

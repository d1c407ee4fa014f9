"""One consumer batch -> one PostgreSQL transaction: rows, dead letters and next offsets together.

Guarantee (exactly-once effect): the rows of a batch and the ``iot.ingest_offsets`` positions after
it commit atomically, together with the offset ranges it moves past that Kafka's retention deleted
before they were read (``iot.expired_offsets``: a recorded loss, never a silent one). Inside the
transaction each partition's offset row is locked and records below the stored position are skipped,
so a batch written twice (a retry after a commit whose outcome was lost, a zombie consumer after a
rebalance) adds nothing. A payload message id seen before for the same tenant (``iot.message_ids``)
turns the row into an ``iot.duplicate_messages`` entry. The fast path expects no such copy: it
claims the batch's message ids (one prepared statement, consumer/claims.py), then COPYs the rows
straight into their day partitions. A unique violation (a copy of an earlier message id, two copies
inside the batch, a replay that slipped past the fence) undoes that and stores the batch through a
staging table with ``ON CONFLICT DO NOTHING``, which the writer uses directly after a batch that held
copies (the server logs each failed attempt as an error). Likewise a bridge dead letter whose MQTT
topic and message id were dead-lettered before becomes an ``iot.duplicate_dead_letters`` entry. A row
PostgreSQL rejects is isolated by bisection under savepoints: retried once without its jsonb, then
dead-lettered; the rest of the batch is stored. Infrastructure errors (a session that lost the
writer's prepared statements among them: psycopg2 raises OperationalError), and a privilege the
writer lacks, propagate after a rollback (and the connection is dropped): nothing of the batch,
offsets included, is stored; the next connection prepares the statements again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras

from iot_platform.consumer import copy_format, sql
from iot_platform.consumer.claims import Claims, claims_of
from iot_platform.consumer.pending import Batch  # what the reading thread hands over (re-exported here)
from iot_platform.consumer.positions import ExpiredRange, TopicPartitionKey
from iot_platform.consumer.records import DeadLetterRow, MessageRow, rejected
from iot_platform.settings import Settings
from iot_platform.storage.db import connect, is_infrastructure_error
from iot_platform.storage.migrate import ensure_day_partitions

log = logging.getLogger(__name__)
_MS_PER_DAY = 86_400_000
_COPY_BUFFER = 1 << 20
_EPOCH_DAY = dt.date(1970, 1, 1)


@dataclass
class WriteResult:
    inserted: int = 0
    duplicates_message_id: int = 0
    replays_skipped: int = 0
    json_dropped: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)  # by source
    duplicate_dead_letters: int = 0  # later copies of a bad message, by its message id
    expired: list[ExpiredRange] = field(default_factory=list)  # gaps recorded by this transaction (not seen before)


class MissingPartition(Exception):
    """A row's day partition vanished (retention dropped it): recreate it and retry the batch."""


class BatchWriter:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._messages_topic = settings.kafka_topic
        self._conn: psycopg2.extensions.connection | None = None
        self._partitions: dict[dt.date, str] = {}  # day -> its partition of iot.messages, known to exist
        self._copies_expected = False  # the last batch held copies of earlier message ids

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg2.Error):
                self._conn.close()
            self._conn = None

    def _connection(self) -> psycopg2.extensions.connection:
        if self._conn is None or self._conn.closed:
            conn = connect(self._settings)
            try:
                with conn.cursor() as cur:
                    cur.execute(sql.SESSION_SETUP)
                    cur.execute(sql.CREATE_STAGING)
                    cur.execute(sql.PREPARE_STATEMENTS)
                conn.commit()
            except BaseException:
                conn.close()
                raise
            self._conn = conn
            self._partitions.clear()
        return self._conn

    def stored_offsets(self, keys: Iterable[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        """The stored next offsets of ``keys`` (absent when nothing was stored yet)."""
        keys = list(keys)
        conn = self._connection()
        try:
            with conn.cursor() as cur:
                cur.execute(sql.SELECT_OFFSETS, ([t for t, _ in keys], [p for _, p in keys]))
                found = {(t, p): n for t, p, n in cur.fetchall()}
            conn.commit()
            return found
        except BaseException:
            self._abandon()
            raise

    def write(self, batch: Batch) -> WriteResult:
        """Store ``batch`` in one transaction; see the module docstring for the guarantee."""
        conn = self._connection()
        try:
            self._ensure_days(_days({row.received_at_ms // _MS_PER_DAY for row in batch.messages}))
            with conn.cursor() as cur:
                result = self._write_in_transaction(cur, batch)
            conn.commit()
            return result
        except MissingPartition:
            self._partitions.clear()
            self._abandon(close=False)
            raise
        except BaseException:
            self._abandon()
            raise

    def _abandon(self, close: bool = True) -> None:
        if self._conn is None:
            return
        with contextlib.suppress(psycopg2.Error):
            self._conn.rollback()
        if close:
            self.close()

    def _ensure_days(self, days: set[dt.date]) -> None:
        missing = days - self._partitions.keys()
        if missing:
            self._partitions.update(zip(sorted(missing), ensure_day_partitions(self._conn, missing)))

    def _write_in_transaction(self, cur: psycopg2.extensions.cursor, batch: Batch) -> WriteResult:
        stored = self._lock_offsets(cur, batch.next_offsets)
        fresh = [r for r in batch.messages if r.kafka_offset >= stored.get((self._messages_topic, r.kafka_partition), 0)]
        letters = [d for d in batch.dead_letters if d.kafka_offset >= stored.get((d.kafka_topic, d.kafka_partition), 0)]
        result = WriteResult(replays_skipped=len(batch.messages) + len(batch.dead_letters) - len(fresh) - len(letters))
        if fresh:
            whole = len(fresh) == len(batch.messages)
            letters += self._store_messages(cur, fresh, result, top_level=True, data=batch.messages_copy if whole else None,
                                            claims=batch.claims if whole else None)
        if letters:
            self._store_dead_letters(cur, letters, result)
        # A gap below the stored position was recorded (or stored past) by whoever wrote that position.
        expired = [e for e in batch.expired if e.first_offset >= stored.get(e.key, 0)]
        if expired:
            values = [(e.topic, e.partition, e.first_offset, e.last_offset) for e in expired]
            rows = psycopg2.extras.execute_values(cur, sql.INSERT_EXPIRED, values, fetch=True)
            result.expired = [ExpiredRange(t, p, first, last) for t, p, first, last in rows]
        keys = sorted(batch.next_offsets)
        advanced = [max(batch.next_offsets[key], stored.get(key, 0)) for key in keys]
        cur.execute(sql.UPDATE_OFFSETS, ([t for t, _ in keys], [p for _, p in keys], advanced))
        return result

    def _store_dead_letters(self, cur: psycopg2.extensions.cursor, letters: list[DeadLetterRow], result: WriteResult) -> None:
        """Insert dead letters; a later copy of a bad message with a known message id is recorded as a duplicate."""
        values = [_dead_letter_values(d) for d in letters]
        inserted = set(psycopg2.extras.execute_values(cur, sql.INSERT_DEAD_LETTERS, values, page_size=1000, fetch=True))
        copies = []
        for d in letters:
            if (d.kafka_topic, d.kafka_partition, d.kafka_offset) in inserted:
                result.dead_letters[d.source] = result.dead_letters.get(d.source, 0) + 1
            elif d.message_id is not None:
                copies.append((d.kafka_topic, d.kafka_partition, d.kafka_offset, _clean(d.mqtt_topic), _clean(d.message_id),
                               _clean(d.tenant_id), copy_format.timestamp_ms(d.received_at_ms)))
        if copies:
            psycopg2.extras.execute_values(cur, sql.INSERT_DUPLICATE_DEAD_LETTERS, copies, page_size=1000)
            result.duplicate_dead_letters += len(copies)

    def _lock_offsets(self, cur: psycopg2.extensions.cursor, next_offsets: dict[TopicPartitionKey, int]) -> dict[TopicPartitionKey, int]:
        keys = sorted(next_offsets)
        cur.execute(sql.LOCK_OFFSETS, {"topics": [t for t, _ in keys], "partitions": [p for _, p in keys]})
        return {(t, p): n for t, p, n in cur.fetchall()}

    def _store_messages(
        self, cur: psycopg2.extensions.cursor, rows: list[MessageRow], result: WriteResult, *, top_level: bool,
        with_json: bool = True, data: bytes | None = None, claims: Claims | None = None,
    ) -> list[DeadLetterRow]:
        """Insert ``rows`` (``data``, ``claims``: their COPY data and claims, if formatted ahead);
        returns the dead letters of rows PostgreSQL rejected (bisecting to find them)."""
        cur.execute("SAVEPOINT rows")
        try:
            chunks = self._by_partition(rows, with_json, data)
            if not self._copies_expected and _copy_rows(cur, chunks, claims_of(rows) if claims is None else claims):
                inserted = len(rows)
            else:  # a copy or a replay among the rows: the fast path's work is undone
                for _, chunk in chunks:
                    cur.copy_expert(sql.COPY_STAGING, io.BytesIO(chunk), size=_COPY_BUFFER)
                cur.execute(sql.INSERT_FROM_STAGING)
                inserted = cur.rowcount
            duplicates = 0
            if inserted < len(rows):  # some row is a copy (or a replay)
                cur.execute(sql.INSERT_DUPLICATES)
                duplicates = cur.rowcount
            if top_level:  # the savepoint stays open: the commit releases it, one round trip fewer
                self._copies_expected = duplicates > 0
            else:  # later bisection steps reuse the staging table in this transaction
                cur.execute(sql.EMPTY_STAGING + "; RELEASE SAVEPOINT rows")
        except (psycopg2.Error, ValueError) as exc:
            if isinstance(exc, psycopg2.errors.UndefinedTable) and "messages_p" in str(exc):
                raise MissingPartition(str(exc)) from exc  # retention dropped it since _ensure_days
            if isinstance(exc, psycopg2.Error) and (is_infrastructure_error(exc) or exc.pgcode == "42501"):
                raise  # a privilege missing is the deployment's fault, never a row's
            if isinstance(exc, psycopg2.Error) and exc.pgcode == "23514" and "no partition" in str(exc):
                raise MissingPartition(str(exc)) from exc
            cur.execute("ROLLBACK TO SAVEPOINT rows")
            return self._isolate(cur, rows, result, with_json, exc)
        result.inserted += inserted
        result.duplicates_message_id += duplicates
        if not with_json:
            result.json_dropped += inserted
        result.replays_skipped += len(rows) - inserted - duplicates
        return []

    def _by_partition(self, rows: list[MessageRow], with_json: bool, data: bytes | None) -> list[tuple[str, bytes]]:
        """(day partition, COPY data of its rows) for each day ``rows`` fall on (``data``: all rows' COPY data)."""
        day = rows[0].received_at_ms // _MS_PER_DAY
        if data is not None and all(row.received_at_ms // _MS_PER_DAY == day for row in rows):  # nearly always
            return [(self._partitions[_EPOCH_DAY + dt.timedelta(days=day)], data)]
        by_day: dict[int, list[MessageRow]] = defaultdict(list)
        for row in rows:
            by_day[row.received_at_ms // _MS_PER_DAY].append(row)
        return [(self._partitions[_EPOCH_DAY + dt.timedelta(days=day)], copy_format.copy_data(day_rows, with_json=with_json))
                for day, day_rows in sorted(by_day.items())]

    def _isolate(self, cur: psycopg2.extensions.cursor, rows: list[MessageRow], result: WriteResult, with_json: bool, exc: Exception) -> list[DeadLetterRow]:
        if len(rows) > 1:
            middle = len(rows) // 2
            return self._store_messages(cur, rows[:middle], result, top_level=False, with_json=with_json) + self._store_messages(
                cur, rows[middle:], result, top_level=False, with_json=with_json
            )
        row = rows[0]
        if with_json and row.json_text is not None:
            return self._store_messages(cur, rows, result, top_level=False, with_json=False)
        reason = f"rejected by PostgreSQL: {_error_text(exc)}"
        log.warning("row dead-lettered", extra={"partition": row.kafka_partition, "offset": row.kafka_offset, "reason": reason})
        return [rejected(row, reason, self._messages_topic)]


def _days(epoch_days: set[int]) -> set[dt.date]:
    return {_EPOCH_DAY + dt.timedelta(days=d) for d in epoch_days}


def _copy_rows(cur: psycopg2.extensions.cursor, chunks: list[tuple[str, bytes]], claims: Claims) -> bool:
    """The fast path: claim the message ids, then COPY each day's rows into its partition. False
    after a unique violation, with everything it did undone (the savepoint "rows" stays)."""
    try:
        cur.execute(sql.CLAIM_IDS, claims)
        for partition, chunk in chunks:
            cur.copy_expert(sql.copy_into_partition(partition).as_string(cur), io.BytesIO(chunk), size=_COPY_BUFFER)
    except psycopg2.errors.UniqueViolation:
        cur.execute("ROLLBACK TO SAVEPOINT rows")
        return False
    return True


def _error_text(exc: Exception) -> str:
    if isinstance(exc, psycopg2.Error):
        return f"{exc.pgcode or ''} {(exc.pgerror or str(exc)).strip().splitlines()[0]}"[:500]
    return f"{type(exc).__name__}: {exc}"[:500]


def _clean(text: str | None) -> str | None:
    """Text PostgreSQL accepts: no NUL (psycopg2 raises ValueError), no lone surrogate."""
    if text is None:
        return None
    return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def _dead_letter_values(d: DeadLetterRow) -> tuple[object, ...]:
    return (
        _clean(d.reason), d.source, _clean(d.mqtt_topic), _clean(d.tenant_id), psycopg2.Binary(d.payload),
        copy_format.timestamp_ms(d.received_at_ms), d.kafka_topic, d.kafka_partition, d.kafka_offset,
        _clean(d.bridge_id), d.original_size, d.truncated, _clean(d.message_id),
    )

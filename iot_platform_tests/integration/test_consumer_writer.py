"""BatchWriter on a real PostgreSQL: row isolation, jsonb fallback, fencing of a re-written batch."""

from __future__ import annotations

import datetime as dt
import threading
import time

import psycopg2.errors
import psycopg2.extensions
import pytest

from iot_platform.consumer import sql, writer as writer_module
from iot_platform.consumer.records import DeadLetterRow, MessageRow
from iot_platform.consumer.writer import Batch, BatchWriter, WriteResult
from iot_platform.settings import Settings
from iot_platform.storage.db import connect
from iot_platform.storage.migrate import apply_migrations
from iot_platform_tests.helpers import wait_for

pytestmark = pytest.mark.integration
NOW_MS = int(time.time() * 1000)


def row(offset: int, *, tenant: str = "acme", json_text: str | None = None, message_id: str | None = None, received_at_ms: int = NOW_MS) -> MessageRow:
    payload = (json_text or f"raw-{offset}").encode()
    return MessageRow(tenant, "p1", "a/b", payload, json_text, message_id, None, None, received_at_ms, 0, offset)


def fetch_all(settings: Settings, statement: str) -> list[tuple]:
    conn = connect(settings)
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
            return cur.fetchall()
    finally:
        conn.close()


def rows_by_offset(settings: Settings) -> dict[int, tuple]:
    return {o: (bytes(p), j) for o, p, j in fetch_all(settings, "SELECT kafka_offset, payload, payload_json IS NULL FROM iot.messages")}


def scalar(settings: Settings, statement: str) -> object:
    return fetch_all(settings, statement)[0][0]


def test_bad_rows_are_isolated_and_the_batch_is_stored(settings: Settings) -> None:
    """In a 200-row batch, a row PostgreSQL refuses (NUL in text) is dead-lettered alone; a row whose
    JSON only jsonb refuses (numeric overflow) is stored with payload_json NULL; the other rows and the
    next offset commit together."""
    apply_migrations(settings)
    rows = [row(i, json_text='{"v": %d}' % i) for i in range(200)]
    rows[17] = row(17, tenant="bad\x00tenant")
    rows[150] = row(150, json_text='{"v": 1e999999999}')
    writer = BatchWriter(settings)
    try:
        result = writer.write(Batch(rows, [], {(settings.kafka_topic, 0): 200}))
    finally:
        writer.close()
    assert (result.inserted, result.json_dropped, result.dead_letters) == (199, 1, {"consumer": 1})
    stored = rows_by_offset(settings)
    assert sorted(stored) == [o for o in range(200) if o != 17]
    assert stored[150] == (b'{"v": 1e999999999}', True) and stored[0] == (b'{"v": 0}', False)
    assert scalar(settings, "SELECT reason FROM iot.dead_letters WHERE kafka_offset = 17").startswith("rejected by PostgreSQL")
    assert scalar(settings, "SELECT next_offset FROM iot.ingest_offsets") == 200


def test_every_column_arrives_exactly(settings: Settings) -> None:
    """The binary COPY path stores what the row holds: text with tabs, newlines, backslashes and
    non-ASCII characters, every byte value of a payload, device times to the microsecond (before
    2000 too), receive times to the millisecond at both ends of the range, NULLs, and the jsonb parsed
    from the payload only when flagged."""
    apply_migrations(settings, partitions_ahead_days=0)
    before_2000 = dt.datetime(1999, 12, 31, 23, 59, 59, 999_999, tzinfo=dt.timezone.utc)
    device_ts = dt.datetime(2026, 12, 1, 22, 45, 1, 123_456, tzinfo=dt.timezone.utc)
    rows = [
        MessageRow("t\tw€", "p\\1", "a/b\nc", bytes(range(256)), None, "m\t1", "dev-é", device_ts, NOW_MS, 0, 0),
        MessageRow("acme", "p1", "a/b", b'{"v": 1.5}', '{"v": 1.5}', None, None, before_2000, 0, 0, 1),
        MessageRow("acme", "p1", "a/b", b'{"v": 2}', '{"v": 2}', "m2", None, None, 253_402_300_799_999, 0, 2),
    ]
    writer = BatchWriter(settings)
    try:
        assert writer.write(Batch(rows, [], {(settings.kafka_topic, 0): 3})).inserted == 3
    finally:
        writer.close()
    found = fetch_all(settings, "SELECT tenant_id, project_id, mqtt_topic, payload, payload_json, message_id, device_id,"
                      " device_ts, (extract(epoch FROM received_at) * 1000)::bigint, kafka_partition, kafka_offset"
                      " FROM iot.messages ORDER BY kafka_offset")
    stored = [(*r[:3], bytes(r[3]), *r[4:]) for r in found]
    assert stored == [
        ("t\tw€", "p\\1", "a/b\nc", bytes(range(256)), None, "m\t1", "dev-é", device_ts, NOW_MS, 0, 0),
        ("acme", "p1", "a/b", b'{"v": 1.5}', {"v": 1.5}, None, None, before_2000, 0, 0, 1),
        ("acme", "p1", "a/b", b'{"v": 2}', {"v": 2}, "m2", None, None, 253_402_300_799_999, 0, 2),
    ]


def test_claims_store_every_message_id_and_receive_time_exactly(settings: Settings) -> None:
    """The fast path's claims travel as array literals: message ids with commas, braces, spaces,
    quotes, backslashes, non-ASCII characters or the word NULL, of tenants with the same, and receive
    times at both ends of their range, are stored in iot.message_ids exactly as in their rows; a
    later copy of each is recognised as one."""
    apply_migrations(settings, partitions_ahead_days=0)
    ids = ["a,b", "{c}", " d ", "NULL", "", 'say "hi"', "back\\slash", "é€😀", "it's", "x" * 256]
    times = [0, NOW_MS, 253_402_300_799_999]
    tenants = ['t"1', "t\\2", "t 3,{}"]
    rows = [row(i, tenant=tenants[i % 3], message_id=m, json_text='{"n": %d}' % i, received_at_ms=times[i % 3])
            for i, m in enumerate(ids)]
    key = (settings.kafka_topic, 0)
    writer = BatchWriter(settings)
    try:
        assert writer.write(Batch(rows, [], {key: len(rows)})).inserted == len(rows)
        copies = [row(len(rows) + i, tenant=r.tenant_id, message_id=r.message_id, received_at_ms=NOW_MS) for i, r in enumerate(rows)]
        copied = writer.write(Batch(copies, [], {key: 2 * len(rows)}))
    finally:
        writer.close()
    assert (copied.inserted, copied.duplicates_message_id) == (0, len(rows))
    stored = fetch_all(settings, "SELECT c.tenant_id, c.message_id, (extract(epoch FROM c.received_at) * 1000)::bigint,"
                                 " c.received_at = m.received_at, c.kafka_offset FROM iot.message_ids c"
                                 " JOIN iot.messages m USING (kafka_partition, kafka_offset) ORDER BY c.kafka_offset")
    assert stored == [(r.tenant_id, r.message_id, r.received_at_ms, True, r.kafka_offset) for r in rows]


def test_a_session_without_the_prepared_statements_fails_the_write_whole(settings: Settings) -> None:
    """A session that lost the writer's prepared statements (a pooler in transaction mode would do
    that) fails the write like an unreachable database: nothing stored, no row dead-lettered; the
    retry, on a new connection, prepares them again and stores the batch."""
    apply_migrations(settings)
    key = (settings.kafka_topic, 0)
    batch = Batch([row(2, json_text='{"msg_id": "b"}', message_id="b")], [], {key: 3})
    writer = BatchWriter(settings)
    try:
        writer.write(Batch([row(0, json_text='{"msg_id": "a"}', message_id="a"), row(1)], [], {key: 2}))
        with writer._connection().cursor() as cur:
            cur.execute("DEALLOCATE iot_claim_ids")
        with pytest.raises(psycopg2.errors.InvalidSqlStatementName):
            writer.write(batch)
        assert (scalar(settings, "SELECT count(*) FROM iot.dead_letters"), scalar(settings, "SELECT next_offset FROM iot.ingest_offsets")) == (0, 2)
        assert writer.write(batch).inserted == 1
    finally:
        writer.close()
    assert sorted(rows_by_offset(settings)) == [0, 1, 2]


def test_rewritten_batch_adds_nothing(settings: Settings) -> None:
    """A batch written again (lost commit acknowledgement, zombie consumer) is skipped as a replay:
    rows, dead letters, message ids and the offset are unchanged."""
    apply_migrations(settings)
    batch = Batch([row(0, json_text='{"msg_id": "a"}', message_id="a"), row(1)],
                  [DeadLetterRow("r\x00eason", "bridge", "x", None, b"\x00", NOW_MS, settings.kafka_dlq_topic, 0, 0)],
                  {(settings.kafka_topic, 0): 2, (settings.kafka_dlq_topic, 0): 1})
    writer = BatchWriter(settings)
    try:
        first = writer.write(batch)
        second = writer.write(batch)
    finally:
        writer.close()
    assert (first.inserted, first.dead_letters) == (2, {"bridge": 1})
    assert (second.inserted, second.replays_skipped, second.dead_letters) == (0, 3, {})
    assert scalar(settings, "SELECT count(*) FROM iot.messages") == 2
    assert scalar(settings, "SELECT count(*) FROM iot.duplicate_messages") == 0
    assert scalar(settings, "SELECT reason FROM iot.dead_letters") == "r\ufffdeason"


def test_old_days_get_partitions_on_demand(settings: Settings) -> None:
    """Rows received days ago (a replay) and in the future land in day partitions created on demand."""
    apply_migrations(settings, partitions_ahead_days=0)
    day_ms = 86_400_000
    rows = [row(0, received_at_ms=NOW_MS - 40 * day_ms), row(1, received_at_ms=NOW_MS + 9 * day_ms), row(2)]
    writer = BatchWriter(settings)
    try:
        assert writer.write(Batch(rows, [], {(settings.kafka_topic, 0): 3})).inserted == 3
    finally:
        writer.close()
    assert scalar(settings, "SELECT count(DISTINCT tableoid) FROM iot.messages") == 3


def test_replay_past_the_fence_is_harmless(settings: Settings) -> None:
    """Rows already stored while the stored offsets say otherwise (a position reset by hand) are
    skipped as replays by the replay-safe re-run of the insert: nothing doubled, nothing dead-lettered,
    new rows of the same batch stored, and the copy of a message id recorded once."""
    apply_migrations(settings)
    first = [row(0, json_text='{"msg_id": "a"}', message_id="a"), row(1)]
    writer = BatchWriter(settings)
    try:
        writer.write(Batch(first, [], {(settings.kafka_topic, 0): 2}))
        conn = connect(settings)
        with conn.cursor() as cur:
            cur.execute("UPDATE iot.ingest_offsets SET next_offset = 0")
        conn.commit()
        conn.close()
        again = [*first, row(2, json_text='{"msg_id": "a"}', message_id="a"), row(3, json_text='{"v": 3}')]
        result = writer.write(Batch(again, [], {(settings.kafka_topic, 0): 4}))
    finally:
        writer.close()
    assert (result.inserted, result.replays_skipped, result.duplicates_message_id, result.dead_letters) == (1, 2, 1, {})
    assert rows_by_offset(settings) == {0: (b'{"msg_id": "a"}', False), 1: (b"raw-1", True), 3: (b'{"v": 3}', False)}
    assert scalar(settings, "SELECT first_kafka_offset FROM iot.duplicate_messages WHERE kafka_offset = 2") == 0
    assert scalar(settings, "SELECT next_offset FROM iot.ingest_offsets") == 4


def _lock_waiters(settings: Settings) -> int:
    return int(scalar(settings, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"))


def test_racing_writers_on_one_partition_store_each_record_once(settings: Settings) -> None:
    """Two replicas both believing they own partition 0 (a rebalance under load): one holds offsets
    0-199, the other 0-99. Both are started while a third session holds the partition's offset row, so
    they race from the same stored position; released together, the first stores 200 rows and the
    second, fenced by the row lock, skips its 100 as replays. Nothing is stored twice and the stored
    position stays at 200 (without the lock, or without the max, the second writer moves it back to 100)."""
    apply_migrations(settings)
    key = (settings.kafka_topic, 0)
    long_writer, short_writer = BatchWriter(settings), BatchWriter(settings)
    holder = connect(settings)
    results: dict[str, object] = {}

    def write(name: str, writer: BatchWriter, end: int) -> None:
        try:
            results[name] = writer.write(Batch([row(i, json_text='{"v": %d}' % i) for i in range(end)], [], {key: end}))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            results[name] = exc

    threads = [threading.Thread(target=write, args=("long", long_writer, 200)), threading.Thread(target=write, args=("short", short_writer, 100))]
    try:
        long_writer.write(Batch([], [], {key: 0}))  # the partition's offset row exists, at 0
        with holder.cursor() as cur:
            cur.execute("SELECT next_offset FROM iot.ingest_offsets WHERE topic = %s AND partition = 0 FOR UPDATE", (key[0],))
        for waiting, thread in enumerate(threads, start=1):
            thread.start()
            wait_for(lambda n=waiting: _lock_waiters(settings) >= n, 30, f"{waiting} writer(s) waiting on the offset row", interval_s=0.05)
        holder.commit()
        for thread in threads:
            thread.join(30)
    finally:
        holder.close()
        long_writer.close()
        short_writer.close()
    long, short = results["long"], results["short"]
    assert isinstance(long, WriteResult) and isinstance(short, WriteResult), results
    assert (long.inserted, long.replays_skipped) == (200, 0)
    assert (short.inserted, short.replays_skipped, short.duplicates_message_id) == (0, 100, 0)
    assert scalar(settings, "SELECT count(*) FROM iot.messages") == 200
    assert scalar(settings, "SELECT count(DISTINCT kafka_offset) FROM iot.messages") == 200
    assert scalar(settings, "SELECT next_offset FROM iot.ingest_offsets") == 200


def _recording_connect(statements: list[str]):  # type: ignore[no-untyped-def]
    """storage.db.connect, with every statement its cursors execute appended to ``statements``."""

    class RecordingCursor(psycopg2.extensions.cursor):
        def execute(self, query, vars=None):  # type: ignore[no-untyped-def, override]
            statements.append(query if isinstance(query, str) else query.decode())  # execute_values sends bytes
            return super().execute(query, vars)

    def recording_connect(*args, **kwargs):  # type: ignore[no-untyped-def]
        conn = connect(*args, **kwargs)
        conn.cursor_factory = RecordingCursor
        return conn

    return recording_connect


def _insert_attempts(statements: list[str]) -> list[str]:
    """The insert attempts among ``statements``: "plain" (the fast path's claim of the ids) and/or
    "safe" (the conflict-safe insert from staging), in order; empties the list."""
    found = ["plain" if s == sql.CLAIM_IDS else "safe" for s in statements if s in (sql.CLAIM_IDS, sql.INSERT_FROM_STAGING)]
    statements.clear()
    return found


def test_copies_of_message_ids_take_the_conflict_safe_insert_while_they_keep_coming(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path expects no conflict. A batch with a copy of an earlier message id fails its
    claim and is stored by the conflict-safe statement (the copy recorded as a duplicate); the next
    batch starts with the conflict-safe statement, and a batch without copies brings back the fast path."""
    apply_migrations(settings)
    statements: list[str] = []
    monkeypatch.setattr(writer_module, "connect", _recording_connect(statements))
    key = (settings.kafka_topic, 0)

    def with_id(offset: int, message_id: str) -> MessageRow:
        return row(offset, json_text='{"msg_id": "%s"}' % message_id, message_id=message_id)

    writer = BatchWriter(settings)
    try:
        counts, attempts = [], []
        for batch in ([with_id(0, "a"), with_id(1, "b")], [with_id(2, "a"), with_id(3, "c")], [with_id(4, "d")], [with_id(5, "e")]):
            result = writer.write(Batch(batch, [], {key: batch[-1].kafka_offset + 1}))
            counts.append((result.inserted, result.duplicates_message_id))
            attempts.append(_insert_attempts(statements))
    finally:
        writer.close()
    assert counts == [(2, 0), (1, 1), (1, 0), (1, 0)]
    assert attempts == [["plain"], ["plain", "safe"], ["safe"], ["plain"]]
    assert sorted(rows_by_offset(settings)) == [0, 1, 3, 4, 5]
    assert scalar(settings, "SELECT first_kafka_offset FROM iot.duplicate_messages WHERE kafka_offset = 2") == 0
    assert scalar(settings, "SELECT count(*) FROM iot.message_ids") == 5


def test_a_batch_across_midnight_goes_to_both_day_partitions(settings: Settings) -> None:
    """Rows are copied into their day partitions: a batch whose rows fall on two UTC days stores each
    in its own (the last millisecond of a day in that day's)."""
    apply_migrations(settings)
    midnight_ms = (NOW_MS // 86_400_000 + 5) * 86_400_000  # days no partition exists for yet
    rows = [row(0, received_at_ms=midnight_ms - 1, message_id="a", json_text='{"a": 1}'), row(1, received_at_ms=midnight_ms),
            row(2, received_at_ms=midnight_ms - 2)]
    writer = BatchWriter(settings)
    try:
        result = writer.write(Batch(rows, [], {(settings.kafka_topic, 0): 3}))
    finally:
        writer.close()
    assert result.inserted == 3
    found = fetch_all(settings, "SELECT kafka_offset, c.relname FROM iot.messages m JOIN pg_class c ON c.oid = m.tableoid ORDER BY 1")
    day = dt.datetime.fromtimestamp(midnight_ms / 1000, dt.timezone.utc)
    before, after = f"messages_p{day - dt.timedelta(days=1):%Y%m%d}", f"messages_p{day:%Y%m%d}"
    assert found == [(0, before), (1, after), (2, before)]
    assert scalar(settings, "SELECT count(*) FROM iot.message_ids") == 1


def test_a_partition_dropped_under_the_writer_is_created_again(settings: Settings) -> None:
    """Retention may drop a day partition the writer saw before: the write raises MissingPartition
    (the sink retries it) with nothing stored, and the retry creates the partition again."""
    apply_migrations(settings)
    day_ms = (NOW_MS // 86_400_000 - 2) * 86_400_000 + 1000
    key = (settings.kafka_topic, 0)
    writer = BatchWriter(settings)
    try:
        writer.write(Batch([row(0, received_at_ms=day_ms)], [], {key: 1}))
        with connect(settings, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(f"DROP TABLE iot.messages_p{dt.datetime.fromtimestamp(day_ms / 1000, dt.timezone.utc):%Y%m%d}")
        with pytest.raises(writer_module.MissingPartition):
            writer.write(Batch([row(1, received_at_ms=day_ms)], [], {key: 2}))
        assert scalar(settings, "SELECT next_offset FROM iot.ingest_offsets") == 1
        assert writer.write(Batch([row(1, received_at_ms=day_ms)], [], {key: 2})).inserted == 1
    finally:
        writer.close()
    assert sorted(rows_by_offset(settings)) == [1]

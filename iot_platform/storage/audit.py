"""Read-only queries that prove (or disprove) that the stored data is complete and consistent.

They read the numbers; the arithmetic on them is :mod:`iot_platform.core.completeness`'s.

Each function runs in one REPEATABLE READ, READ ONLY transaction, so rows and the consumer's
offsets (committed together by the consumer) are read from the same snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from iot_platform.core.completeness import PartitionCoverage
from iot_platform.settings import Settings
from iot_platform.storage.db import connect

# Every consumed Kafka record is exactly one of these rows (see migrations 002, 004, 005, 030).
_STORED = """
SELECT %(topic)s AS topic, kafka_partition AS partition, kafka_offset, received_at FROM iot.messages
UNION ALL SELECT %(topic)s, kafka_partition, kafka_offset, received_at FROM iot.duplicate_messages
UNION ALL SELECT kafka_topic, kafka_partition, kafka_offset, received_at FROM iot.dead_letters
UNION ALL SELECT kafka_topic, kafka_partition, kafka_offset, received_at FROM iot.duplicate_dead_letters
"""

_COVERAGE = f"""
WITH stored AS ({_STORED}),
firsts AS (SELECT topic, partition, min(kafka_offset) AS first_offset FROM stored
           WHERE received_at >= %(window_start)s GROUP BY topic, partition)
SELECT o.topic, o.partition, o.next_offset, f.first_offset,
       (SELECT count(DISTINCT s.kafka_offset) FROM stored s
        WHERE s.topic = o.topic AND s.partition = o.partition
          AND s.kafka_offset >= f.first_offset AND s.kafka_offset < o.next_offset) AS found,
       (SELECT count(*) FROM stored s WHERE s.topic = o.topic AND s.partition = o.partition
          AND s.kafka_offset >= o.next_offset) AS beyond
FROM iot.ingest_offsets o LEFT JOIN firsts f ON f.topic = o.topic AND f.partition = o.partition
ORDER BY o.topic, o.partition
"""

_GAPS = f"""
WITH stored AS ({_STORED}),
offsets AS (SELECT DISTINCT kafka_offset FROM stored WHERE topic = %(p_topic)s AND partition = %(partition)s
            AND kafka_offset >= %(first)s AND kafka_offset < %(next)s),
edges AS (SELECT kafka_offset + 1 AS gap_start,
                 lead(kafka_offset, 1, %(next)s) OVER (ORDER BY kafka_offset) - 1 AS gap_end FROM offsets)
SELECT gap_start, gap_end FROM edges WHERE gap_end >= gap_start ORDER BY gap_start LIMIT %(limit)s
"""


def _read_only(settings: Settings):  # type: ignore[no-untyped-def]
    conn = connect(settings)
    conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
    return conn


def kafka_coverage(settings: Settings, window_start: datetime, gap_limit: int = 20) -> list[PartitionCoverage]:
    """Per consumed partition: stored rows + dead letters + skipped duplicates vs offsets consumed.

    The window starts at the first offset received at or after ``window_start`` (choose it inside
    the retention window so retention's cut does not look like a gap); gaps are listed, up to
    ``gap_limit`` per partition, only where the counts disagree.
    """
    conn = _read_only(settings)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(_COVERAGE, {"topic": settings.kafka_topic, "window_start": window_start})
            rows = cur.fetchall()
            result = []
            for topic, partition, next_offset, first_offset, found, beyond in rows:
                coverage = PartitionCoverage(topic, partition, next_offset, first_offset, int(found or 0), int(beyond))
                if coverage.found != coverage.expected:
                    cur.execute(_GAPS, {"topic": settings.kafka_topic, "p_topic": topic, "partition": partition,
                                        "first": first_offset, "next": next_offset, "limit": gap_limit})
                    coverage = PartitionCoverage(**{**coverage.__dict__, "gaps": tuple(cur.fetchall())})
                result.append(coverage)
    finally:
        conn.close()
    return result


@dataclass(frozen=True)
class RollupDifference:
    tenant_id: str
    project_id: str
    raw_count: int
    rollup_count: int


def rollup_differences(settings: Settings, hour: datetime) -> tuple[int, list[RollupDifference]]:
    """Raw rows in ``hour`` and every (tenant, project) whose rollup count differs from them."""
    conn = _read_only(settings)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                """
                WITH raw AS (SELECT tenant_id, project_id, count(*) AS n FROM iot.messages
                             WHERE received_at >= %(start)s AND received_at < %(end)s GROUP BY 1, 2),
                     rolled AS (SELECT tenant_id, project_id, message_count AS n FROM iot.rollup_hourly
                                WHERE hour = %(start)s)
                SELECT tenant_id, project_id, coalesce(raw.n, 0), coalesce(rolled.n, 0)
                FROM raw FULL JOIN rolled USING (tenant_id, project_id)
                ORDER BY 1, 2
                """,
                {"start": hour, "end": hour + timedelta(hours=1)},
            )
            rows = cur.fetchall()
    finally:
        conn.close()
    total = sum(int(raw) for _, _, raw, _ in rows)
    return total, [RollupDifference(t, p, int(raw), int(rolled)) for t, p, raw, rolled in rows if raw != rolled]


@dataclass(frozen=True)
class IngestActivity:
    newest_received_at: datetime | None
    messages: int
    dead_letters: int

    @property
    def dead_letter_rate(self) -> float:
        total = self.messages + self.dead_letters
        return self.dead_letters / total if total else 0.0


def ingest_activity(settings: Settings, since: datetime) -> IngestActivity:
    """Newest stored message overall, and messages vs dead letters received since ``since``."""
    conn = _read_only(settings)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                """
                SELECT (SELECT max(received_at) FROM iot.messages WHERE received_at >= %(recent)s),
                       (SELECT count(*) FROM iot.messages WHERE received_at >= %(since)s),
                       (SELECT count(*) FROM iot.dead_letters WHERE received_at >= %(since)s)
                """,
                {"since": since, "recent": since - timedelta(days=1)},
            )
            newest, messages, dead = cur.fetchone()
            if newest is None:  # nothing lately: the unbounded max scans every partition, so only now
                cur.execute("SELECT max(received_at) FROM iot.messages")
                (newest,) = cur.fetchone()
    finally:
        conn.close()
    return IngestActivity(newest, int(messages), int(dead))


@dataclass(frozen=True)
class ExpiredOffsets:
    """A range of Kafka offsets the consumer found deleted by retention before it read them (lost)."""

    topic: str
    partition: int
    first_offset: int
    last_offset: int
    detected_at: datetime

    @property
    def records(self) -> int:
        return self.last_offset - self.first_offset + 1

    def as_json(self) -> dict[str, object]:
        return {"topic": self.topic, "partition": self.partition, "first_offset": self.first_offset,
                "last_offset": self.last_offset, "records": self.records, "detected_at": self.detected_at.isoformat()}


def expired_offsets(settings: Settings, since: datetime | None = None, until: datetime | None = None) -> list[ExpiredOffsets]:
    """The ranges recorded in iot.expired_offsets, detected in [since, until) (unbounded when None)."""
    conn = _read_only(settings)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "SELECT topic, partition, first_offset, last_offset, detected_at FROM iot.expired_offsets"
                " WHERE detected_at >= %(since)s AND detected_at < %(until)s ORDER BY topic, partition, first_offset",
                {"since": since or "-infinity", "until": until or "infinity"},
            )
            return [ExpiredOffsets(*row) for row in cur.fetchall()]
    finally:
        conn.close()


def consumed_offsets(settings: Settings) -> dict[tuple[str, int], int]:
    """The consumer's stored position: (topic, partition) -> next offset."""
    conn = _read_only(settings)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT topic, partition, next_offset FROM iot.ingest_offsets")
            return {(topic, partition): int(next_offset) for topic, partition, next_offset in cur.fetchall()}
    finally:
        conn.close()

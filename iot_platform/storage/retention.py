"""Raw-data retention: remove telemetry, dead letters and dedupe records older than the window.

Guarantee: after :func:`apply_retention` commits, no row of ``iot.messages``, ``iot.dead_letters``,
``iot.message_ids``, ``iot.duplicate_messages`` or ``iot.duplicate_dead_letters`` has ``received_at`` before the cutoff
(``now - retention_hours``), and no row at or after the cutoff was touched. Day partitions of
``iot.messages`` wholly before the cutoff are dropped (cheap, no dead tuples); the boundary day (and
a default partition, if any) loses only its older rows. Everything happens in one transaction with
a short ``lock_timeout``: dropping a partition briefly locks the parent, and retention would rather
fail and retry next hour than stall the consumer. Rollups are never removed here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from psycopg2 import sql

from iot_platform.settings import Settings
from iot_platform.storage.db import connect

# Tables pruned row by row (all keyed on the time the bridge received the message).
ROW_TABLES = ("messages", "dead_letters", "message_ids", "duplicate_messages", "duplicate_dead_letters")
_BOUND = re.compile(r"FOR VALUES FROM \('([^']+)'\) TO \('([^']+)'\)")


@dataclass(frozen=True)
class Partition:
    name: str
    lower: datetime | None  # None: MINVALUE, or a DEFAULT partition
    upper: datetime | None  # None: MAXVALUE, or a DEFAULT partition
    approx_rows: int = 0


@dataclass(frozen=True)
class RetentionReport:
    cutoff: datetime
    dropped_partitions: tuple[str, ...] = ()
    dropped_rows_estimate: int = 0
    deleted_rows: dict[str, int] = field(default_factory=dict)


def parse_bound(expression: str) -> tuple[datetime | None, datetime | None]:
    """Bounds of ``FOR VALUES FROM ('..') TO ('..')`` (rendered in UTC); (None, None) otherwise."""
    match = _BOUND.search(expression)
    if not match:
        return None, None
    return datetime.fromisoformat(match.group(1)), datetime.fromisoformat(match.group(2))


def partitions_to_drop(partitions: Sequence[Partition], cutoff: datetime) -> list[Partition]:
    """Partitions whose every possible row is older than ``cutoff`` (upper bound is exclusive)."""
    return [p for p in partitions if p.upper is not None and p.lower is not None and p.upper <= cutoff]


def _partitions(cur) -> list[Partition]:  # type: ignore[no-untyped-def]
    cur.execute(
        """
        SELECT c.relname, pg_get_expr(c.relpartbound, c.oid), greatest(c.reltuples, 0)::bigint
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'iot.messages'::regclass
        """
    )
    return [Partition(name, *parse_bound(bound or ""), approx_rows=rows) for name, bound, rows in cur.fetchall()]


def apply_retention(settings: Settings, now: datetime | None = None, lock_timeout_ms: int = 10_000) -> RetentionReport:
    """Remove raw data received before ``now - settings.retention_hours``; report what went."""
    now = now or datetime.now(timezone.utc)
    cutoff = now - timedelta(hours=settings.retention_hours)
    conn = connect(settings)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SET LOCAL TimeZone = 'UTC'")  # partition bounds are rendered, then parsed, in UTC
            cur.execute("SELECT set_config('lock_timeout', %s, true)", (f"{int(lock_timeout_ms)}ms",))
            doomed = partitions_to_drop(_partitions(cur), cutoff)
            for partition in doomed:
                cur.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier("iot", partition.name)))
            deleted: dict[str, int] = {}
            for table in ROW_TABLES:
                cur.execute(
                    sql.SQL("DELETE FROM {} WHERE received_at < %s").format(sql.Identifier("iot", table)),
                    (cutoff,),
                )
                deleted[table] = cur.rowcount
    finally:
        conn.close()
    return RetentionReport(
        cutoff=cutoff,
        dropped_partitions=tuple(sorted(p.name for p in doomed)),
        dropped_rows_estimate=sum(p.approx_rows for p in doomed),
        deleted_rows=deleted,
    )

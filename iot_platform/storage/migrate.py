"""Numbered SQL migrations, applied in order and recorded; day partitions of iot.messages.

Guarantee: :func:`apply_migrations` applies every ``migrations/NNN_*.sql`` not yet recorded in
``iot.schema_migrations``, in numeric order, each file in its own transaction together with its
record, so a file is either fully applied and recorded or not at all. Concurrent callers (Dagster,
a consumer, `iot-platform migrate`) serialise on a session advisory lock: each file runs once. A
recorded file whose content has changed since is reported, never re-applied.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import psycopg2
import psycopg2.extensions

from iot_platform.settings import Settings
from iot_platform.storage.db import connect

log = logging.getLogger(__name__)

MIGRATIONS_LOCK_KEY = 0x10_7A_11_0F  # arbitrary, constant: the platform's migration lock
_NAME = re.compile(r"^(\d{3})_[A-Za-z0-9_]+\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    number: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations_dir() -> Path:
    return Path(str(resources.files("iot_platform.storage") / "migrations"))


def load_migrations(directory: Path | None = None) -> list[Migration]:
    """The migration files of ``directory`` in the order they apply (number, then name)."""
    directory = directory or migrations_dir()
    found = []
    for path in directory.iterdir():
        match = _NAME.match(path.name)
        if match:
            found.append(Migration(int(match.group(1)), path.name, path.read_text()))
    return sorted(found, key=lambda m: (m.number, m.name))


def apply_migrations(settings: Settings, *, partitions_ahead_days: int = 3, directory: Path | None = None) -> list[str]:
    """Apply the pending migrations; return the names applied now (empty when up to date).

    Also makes sure day partitions of iot.messages exist from yesterday to ``partitions_ahead_days``
    ahead.
    """
    conn = connect(settings)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (MIGRATIONS_LOCK_KEY,))
            cur.execute("CREATE SCHEMA IF NOT EXISTS iot")
            cur.execute(
                "CREATE TABLE IF NOT EXISTS iot.schema_migrations ("
                " name text PRIMARY KEY, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            conn.commit()
            cur.execute("SELECT name, checksum FROM iot.schema_migrations")
            recorded = dict(cur.fetchall())
            conn.commit()
        applied = []
        for migration in load_migrations(directory):
            if migration.name in recorded:
                if recorded[migration.name] != migration.checksum:
                    log.warning("applied migration has changed since; not re-applied", extra={"migration": migration.name})
                continue
            with conn.cursor() as cur:
                cur.execute(migration.sql)
                cur.execute(
                    "INSERT INTO iot.schema_migrations (name, checksum) VALUES (%s, %s)",
                    (migration.name, migration.checksum),
                )
            conn.commit()
            applied.append(migration.name)
            log.info("migration applied", extra={"migration": migration.name})
        if _messages_table_exists(conn):
            ensure_partitions(conn, partitions_ahead_days)
        _warn_unless_bytewise_collation(conn)
        return applied
    except BaseException:
        with contextlib.suppress(psycopg2.Error):
            conn.rollback()
        raise
    finally:
        # Closing releases the advisory lock too; unlocking first keeps a pooled session clean.
        with contextlib.suppress(psycopg2.Error):
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s)", (MIGRATIONS_LOCK_KEY,))
            conn.commit()
        conn.close()


def _warn_unless_bytewise_collation(conn: psycopg2.extensions.connection) -> None:
    """PostgreSQL compares text bytewise only under collation "C" (or "POSIX"); any other, C.UTF-8
    included, sends every comparison in the message-id and tenant B-trees through the C library's
    strcoll, which costs the consumer's inserts CPU on every row (docs/design.md §11). The database's
    collation is fixed when it is created, so this can only be said, not mended."""
    with conn.cursor() as cur:
        cur.execute("SELECT datcollate FROM pg_database WHERE datname = current_database()")
        (collation,) = cur.fetchone()
    conn.commit()
    if collation not in ("C", "POSIX"):
        log.warning(
            "the database's collation is not C: text keys compare through the C library, at a CPU cost on every "
            "stored row; create the database with LC_COLLATE 'C' (CloudNativePG's default; docs/design.md §11)",
            extra={"collation": collation},
        )


def _messages_table_exists(conn: psycopg2.extensions.connection) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('iot.messages') IS NOT NULL")
        exists = bool(cur.fetchone()[0])
    conn.commit()
    return exists


def ensure_partitions(conn: psycopg2.extensions.connection, days_ahead: int, *, today: dt.date | None = None) -> list[str]:
    """Day partitions from yesterday to ``days_ahead`` days after today (UTC); commits. Returns their names."""
    today = today or dt.datetime.now(dt.timezone.utc).date()
    return ensure_day_partitions(conn, (today + dt.timedelta(days=n) for n in range(-1, days_ahead + 1)))


def ensure_day_partitions(conn: psycopg2.extensions.connection, days: Iterable[dt.date]) -> list[str]:
    """The partitions of iot.messages for ``days`` (old days too, for replays); commits."""
    names = []
    with conn.cursor() as cur:
        # Creating a partition locks iot.messages exclusively: never queue for long behind a reader.
        cur.execute("SET LOCAL lock_timeout = '5s'")
        for day in sorted(set(days)):
            cur.execute("SELECT iot.ensure_messages_partition(%s)", (day,))
            names.append(cur.fetchone()[0])
    conn.commit()
    return names

"""The migration files themselves: well named, uniquely numbered, loaded in numeric order."""

from __future__ import annotations

from pathlib import Path

from iot_platform.storage.migrate import load_migrations, migrations_dir


def test_every_sql_file_is_a_numbered_migration() -> None:
    """No .sql file in the folder is silently skipped for a bad name."""
    files = sorted(p.name for p in migrations_dir().glob("*.sql"))
    assert files == sorted(m.name for m in load_migrations())


def test_numbers_are_unique_and_ordered() -> None:
    """Numbers never repeat, and load order is numeric order."""
    numbers = [m.number for m in load_migrations()]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    assert numbers[0] == 1


def test_raw_schema_is_in_the_consumer_range() -> None:
    """The raw schema (messages, message ids, dead letters, offsets) lives in 001-009."""
    raw = " ".join(m.sql for m in load_migrations() if m.number < 10)
    for table in ("iot.messages", "iot.message_ids", "iot.duplicate_messages", "iot.dead_letters", "iot.ingest_offsets"):
        assert f"CREATE TABLE {table}" in raw, table


def test_load_order_numeric_not_lexical(tmp_path: Path) -> None:
    """Files load by number then name; files not matching NNN_name.sql are ignored."""
    for name in ("010_b.sql", "002_a.sql", "010_a.sql", "readme.md", "7_bad.sql"):
        (tmp_path / name).write_text(f"-- {name}")
    assert [m.name for m in load_migrations(tmp_path)] == ["002_a.sql", "010_a.sql", "010_b.sql"]
    assert load_migrations(tmp_path)[0].checksum == load_migrations(tmp_path)[0].checksum

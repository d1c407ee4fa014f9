"""Faults of PostgreSQL: stopped (immediate) for 30 s, the consumer's database link cut and blackholed.

One private stack for the module, PostgreSQL behind a TCP proxy that the consumer (and verify) use.
Invariant of every test: lost = 0, duplicates in the database = 0, dead letters = exactly the bad
messages sent (nothing dead-lettered because of the outage), and the consumer recovers without a
restart: infrastructure errors are retried and never advance an offset.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from iot_platform.settings import Settings
from iot_platform_tests.faults.harness import PrivateStack, run_with_fault

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateStack]:
    private = PrivateStack(tmp_path_factory.mktemp("database-faults"), pg_proxy=True).start()
    try:
        yield private
    finally:
        private.stop()


@pytest.fixture
def settings(stack: PrivateStack, tmp_path: Path) -> Settings:
    return stack.settings(tmp_path / "home")


def test_postgres_stopped_immediate_30s(stack: PrivateStack, settings: Settings, tmp_path: Path) -> None:
    """Invariant: PostgreSQL stopped in immediate mode (a crash: no checkpoint) for 30 s mid-stream and
    started again: the consumer retries, the rows of uncommitted batches are written again exactly once."""

    def fault() -> None:
        stack.postgres.stop(mode="immediate")
        time.sleep(30)
        stack.postgres.start()

    run_with_fault(settings, tmp_path / "logs", fault, count=3_000, rate=600)


def test_postgres_link_cut(stack: PrivateStack, settings: Settings, tmp_path: Path) -> None:
    """Invariant: the consumer's database connections reset and refused for 5 s: the open transaction
    rolls back, the consumer reconnects and writes the batch again, once."""

    def fault() -> None:
        assert stack.pg_tcp is not None
        stack.pg_tcp.cut()
        time.sleep(5)
        stack.pg_tcp.heal()

    run_with_fault(settings, tmp_path / "logs", fault)


def test_postgres_link_blackholed(stack: PrivateStack, settings: Settings, tmp_path: Path) -> None:
    """Invariant: database traffic blackholed for 20 s (no reset, no answer): the consumer waits or times
    out and retries; after healing every message is stored exactly once."""

    def fault() -> None:
        assert stack.pg_tcp is not None
        stack.pg_tcp.blackhole()
        time.sleep(20)
        stack.pg_tcp.heal()

    run_with_fault(settings, tmp_path / "logs", fault, count=3_000, rate=600)

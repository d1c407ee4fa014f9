"""Unit tests of the verification report: dead-letter identity, expectations, verdicts (pure)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

import pytest

from iot_platform.devices.fleet import GOOD, Fleet, FleetSpec
from iot_platform.devices.sequences import StreamKey
from iot_platform.devices.verify_cli import parse_time
from iot_platform.core.completeness import PartitionPosition
from iot_platform.devices.verify_report import (
    Expectation,
    build_report,
    dead_letter_identity,
    exit_code,
)

GRAMMAR = "mtic/msg/client/realtime/{tenant_id}/{project_id}[/...]"


def simulated(count: int, bad_fraction: float = 0.0) -> tuple[list, list, Expectation]:  # type: ignore[type-arg]
    """Rows as the database would hold them after a perfect run, and the simulator's expectation."""
    fleet = Fleet(FleetSpec(2, 2, 3, GRAMMAR, "run9", bad_fraction=bad_fraction, max_payload_bytes=1_000, seed=5))
    stored, dead, acked, last = [], [], {"good": 0}, {}
    for m in fleet.messages(count, 0):
        last[m.device_id] = {"tenant_id": m.tenant_id, "last_seq": m.seq}
        acked[m.category] = acked.get(m.category, 0) + 1
        if m.category == GOOD:
            stored.append((m.tenant_id, "run9", m.device_id, m.seq))
        else:
            dead.append((None, m.category, m.payload[:512]))
    return stored, dead, Expectation.from_summary({"run_id": "run9", "acked": acked, "devices": last})


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        (b'{"msg_id":"r1:dev-1:42","device_id":"dev-1"}', (StreamKey("r1", "dev-1"), 42, None)),
        (b'{"msg_id":"r1:dev-1:7","seq":7,"sim_bad":"oversize","padding":"xxx', (StreamKey("r1", "dev-1"), 7, "oversize")),
        (b'{"msg_id":"r1:dev-1:7"', (StreamKey("r1", "dev-1"), 7, None)),
        (b'{"msg_id":"r1:dev', None),
        (b'{"other":1}', None),
        (b"\x00\xff binary", None),
        (b"", None),
        (b'{"msg_id":"no-colons"}', None),
    ],
)
def test_dead_letter_identity(prefix: bytes, expected: tuple | None) -> None:  # type: ignore[type-arg]
    """A dead letter's stream and seq come from its msg_id prefix, even truncated; foreign bytes give None."""
    identity = dead_letter_identity(prefix)
    got = None if identity is None else (identity.key, identity.seq, identity.category)
    assert got == expected


def test_perfect_run_is_ok_and_dead_letters_match() -> None:
    """Everything stored once and every bad message dead-lettered once: verdict ok, exit 0."""
    stored, dead, expectation = simulated(600, bad_fraction=0.1)
    report = build_report(stored, dead, [], expectation, run_id="run9")
    assert report["verdict"] == "ok" and exit_code(report) == 0
    assert report["totals"]["lost"] == 0 and report["totals"]["dead_letters"] == len(dead) > 0
    assert report["expected"]["dead_letters_match"] is True
    assert report["expected"]["messages"] == 600
    assert sum(row["devices"] for row in report["tenants"].values()) == 12


def test_a_missing_row_is_loss_with_its_place() -> None:
    """Dropping one stored row makes the verdict 'lost' (exit 1) and names device and seq."""
    stored, dead, expectation = simulated(120)
    victim = stored.pop(50)
    report = build_report(stored, dead, [], expectation)
    assert report["verdict"] == "lost" and exit_code(report) == 1
    [problem] = report["problem_streams"]
    assert (problem["device_id"], problem["missing"]) == (victim[2], [[victim[3], victim[3]]])
    assert report["tenants"][victim[0]]["lost"] == 1


def test_a_lost_tail_needs_the_expectation() -> None:
    """The last message of a device missing: invisible without --expect, loss with it."""
    stored, dead, expectation = simulated(120)
    stored.pop()
    assert build_report(stored, dead)["verdict"] == "ok"
    assert build_report(stored, dead, [], expectation)["totals"]["lost"] == 1


def test_duplicates_alone_exit_two() -> None:
    """A row stored twice: verdict 'duplicates', exit 2."""
    stored, dead, expectation = simulated(60)
    report = build_report(stored + stored[:3], dead, [], expectation)
    assert report["verdict"] == "duplicates" and exit_code(report) == 2 and report["totals"]["duplicates"] == 3


def test_missing_dead_letter_is_loss_and_mismatch() -> None:
    """A bad message that never reached the dead letters is lost, and the dead-letter count mismatches."""
    stored, dead, expectation = simulated(600, bad_fraction=0.1)
    report = build_report(stored, dead[1:], [], expectation)
    assert report["totals"]["lost"] == 1 and report["expected"]["dead_letters_match"] is False


def test_dead_letter_copies_foreign_and_other_runs() -> None:
    """Repeated dead letters are counted as copies; foreign payloads and other runs never count as loss."""
    stored, dead, expectation = simulated(600, bad_fraction=0.1)
    other_run = (None, "bad_topic", b'{"msg_id":"other:dev:1","sim_bad":"bad_topic"}')
    report = build_report(stored, dead + dead[:2] + [(None, "x", b"junk"), other_run], [], expectation, run_id="run9")
    assert report["totals"]["duplicate_dead_letters"] == 2
    assert report["totals"]["foreign_dead_letters"] == 1
    assert report["totals"]["lost"] == 0
    assert sum(report["dead_letters_by_reason"].values()) == len(dead) + 3


def test_unmarked_dead_letter_of_a_good_message_breaks_the_match() -> None:
    """A good message dead-lettered (no sim_bad marker) is flagged: dead letters must be exactly the bad ones."""
    stored, dead, expectation = simulated(600, bad_fraction=0.1)
    tenant, run, device, seq = stored.pop(0)
    good_payload = f'{{"msg_id":"{run}:{device}:{seq}"}}'.encode()
    report = build_report(stored, dead + [(tenant, "rejected", good_payload)], [], expectation)
    assert report["totals"]["lost"] == 0
    assert report["dead_letters_by_category"]["unmarked"] == 1
    assert report["expected"]["dead_letters_match"] is False


@pytest.mark.parametrize(("stored_next", "lag"), [(None, 10), (100, 0), (95, 5), (0, 100)])
def test_partition_lag(stored_next: int | None, lag: int) -> None:
    """Lag is the end offset minus the consumer's stored next offset (or the start offset if none)."""
    offsets = PartitionPosition("t", 0, low=90, high=100, stored_next=stored_next)
    assert offsets.lag == lag
    report = build_report([], [], [offsets])
    assert report["kafka"]["pending"] == lag


def test_parse_time() -> None:
    """--since accepts ISO times (naive = UTC, Z suffix) and ages like 90s, 15m, 2h, 1d."""
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parse_time("15m", now) == now - timedelta(minutes=15)
    assert parse_time("1.5h", now) == now - timedelta(minutes=90)
    assert parse_time("1d", now) == now - timedelta(days=1)
    assert parse_time("2026-01-02T00:00:00Z") == datetime(2026, 1, 2, tzinfo=UTC)
    assert parse_time("2026-01-02 00:00:00") == datetime(2026, 1, 2, tzinfo=UTC)
    with pytest.raises(argparse.ArgumentTypeError, match="ISO time"):
        parse_time("yesterday")


def test_records_expired_before_read_are_loss_even_when_every_sequence_is_whole() -> None:
    """A range Kafka deleted before the consumer read it makes the verdict 'lost' (exit 1), is listed,
    and the text report names topic, partition and offsets."""
    from iot_platform.devices.verify_cli import render_text

    stored, dead, expectation = simulated(120)
    gap = {"topic": "iot-messages", "partition": 3, "first_offset": 1200, "last_offset": 1299, "records": 100,
           "detected_at": "2026-12-01T00:00:00+00:00"}
    report = build_report(stored, dead, [], expectation, expired=[gap])
    assert report["verdict"] == "lost" and exit_code(report) == 1
    assert report["totals"]["lost"] == 0 and report["totals"]["expired_before_read"] == 100
    assert report["expired_before_read"] == [gap]
    assert "100 records of iot-messages[3] deleted by Kafka retention before they were read: offsets 1200-1299" in render_text(report)
    assert build_report(stored, dead, [], expectation)["verdict"] == "ok"

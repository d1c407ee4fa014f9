"""The verification report, built from plain rows (pure: the database and Kafka reads live in verify.py).

Inputs: stored rows ``(tenant_id, run_id, device_id, seq)``, dead letters ``(tenant_id, reason,
payload_prefix)``, per-partition Kafka offsets, optionally the simulator's summary, and the offset
ranges Kafka deleted before the consumer read them. Output: one JSON-ready dict with totals,
per-tenant figures, the streams that have a problem, the lost ranges, and the verdict.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

from iot_platform.core.completeness import PartitionPosition, records_not_stored
from iot_platform.devices.sequences import StreamKey, StreamReport, analyse, totals

# The simulator writes msg_id first, so even a truncated dead letter starts with its identity.
_IDENTITY = re.compile(rb'^\{"msg_id":"(?P<run>[^:"]{1,64}):(?P<device>[^:"]{1,128}):(?P<seq>\d{1,18})"')
_MARKED_BAD = re.compile(rb'"sim_bad":"(?P<category>[a-z_]+)"')
MAX_LISTED_STREAMS = 50
MAX_LISTED_RANGES = 20


@dataclass(frozen=True, slots=True)
class DeadLetterIdentity:
    key: StreamKey
    seq: int
    category: str | None  # the simulator's sim_bad marker; None for a dead letter nobody planned


def dead_letter_identity(payload_prefix: bytes) -> DeadLetterIdentity | None:
    """The simulated message a dead letter came from, or None for foreign payloads."""
    match = _IDENTITY.match(payload_prefix)
    if match is None:
        return None
    marked = _MARKED_BAD.search(payload_prefix)
    return DeadLetterIdentity(
        key=StreamKey(match["run"].decode(), match["device"].decode()),
        seq=int(match["seq"]),
        category=marked["category"].decode() if marked else None,
    )


@dataclass(frozen=True, slots=True)
class Expectation:
    """What the simulator says it had acknowledged: each stream's last seq and its bad-message count."""

    last_seq: Mapping[StreamKey, int]
    tenants: Mapping[StreamKey, str]
    bad_acked: int

    @classmethod
    def from_summary(cls, summary: Mapping[str, object]) -> "Expectation":
        run_id = str(summary["run_id"])
        devices = summary.get("devices") or {}
        assert isinstance(devices, Mapping)
        acked = summary.get("acked") or {}
        assert isinstance(acked, Mapping)
        return cls(
            last_seq={StreamKey(run_id, d): int(v["last_seq"]) for d, v in devices.items()},
            tenants={StreamKey(run_id, d): str(v["tenant_id"]) for d, v in devices.items()},
            bad_acked=sum(int(n) for category, n in acked.items() if category != "good"),
        )


def build_report(
    stored_rows: Iterable[tuple[str, str, str, int]],
    dead_letter_rows: Iterable[tuple[str | None, str, bytes]],
    offsets: Iterable[PartitionPosition] = (),
    expectation: Expectation | None = None,
    run_id: str | None = None,
    expired: Iterable[Mapping[str, object]] = (),
) -> dict[str, object]:
    """The report; with ``run_id``, dead letters of other simulator runs are left out.

    ``expired``: ranges from iot.expired_offsets (topic, partition, first_offset, last_offset, records,
    detected_at); any of them makes the verdict "lost", whatever the sequences say (records without
    a message id cannot be counted otherwise)."""
    stored: dict[StreamKey, list[int]] = defaultdict(list)
    tenants: dict[StreamKey, str] = dict(expectation.tenants) if expectation else {}
    for tenant_id, stream_run_id, device_id, seq in stored_rows:
        key = StreamKey(stream_run_id, device_id)
        stored[key].append(seq)
        tenants.setdefault(key, tenant_id)
    dead: dict[StreamKey, list[int]] = defaultdict(list)
    reasons: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    dead_letter_copies: Counter[tuple[StreamKey, int]] = Counter()
    foreign = 0
    for _tenant_id, reason, prefix in dead_letter_rows:
        identity = dead_letter_identity(bytes(prefix))
        if identity is not None and run_id is not None and identity.key.run_id != run_id:
            continue
        reasons[reason] += 1
        if identity is None:
            foreign += 1
            continue
        dead[identity.key].append(identity.seq)
        dead_letter_copies[(identity.key, identity.seq)] += 1
        categories[identity.category or "unmarked"] += 1
    reports = analyse(stored, dead, expectation.last_seq if expectation else None, tenants)
    total = totals(reports)
    partitions = list(offsets)
    pending = records_not_stored(partitions)
    duplicate_dead_letters = sum(n - 1 for n in dead_letter_copies.values())
    expired_ranges = [dict(e) for e in expired]
    expired_records = sum(int(e["records"]) for e in expired_ranges)  # type: ignore[call-overload]
    verdict = "lost" if total.lost or expired_records else "duplicates" if total.duplicates else "ok"
    report: dict[str, object] = {
        "verdict": verdict,
        "totals": asdict(total) | {"duplicate_dead_letters": duplicate_dead_letters, "foreign_dead_letters": foreign,
                                   "expired_before_read": expired_records},
        "expired_before_read": expired_ranges,
        "dead_letters_by_reason": dict(reasons),
        "dead_letters_by_category": dict(categories),
        "tenants": _per_tenant(reports),
        "problem_streams": [_stream_json(r) for r in reports if r.lost or r.duplicates][:MAX_LISTED_STREAMS],
        "kafka": {"pending": pending, "partitions": [asdict(p) | {"lag": p.lag} for p in partitions]},
    }
    if expectation is not None:
        report["expected"] = {
            "streams": len(expectation.last_seq),
            "messages": sum(expectation.last_seq.values()),
            "bad_acked": expectation.bad_acked,
            "dead_letters_match": total.dead_letters == expectation.bad_acked and categories.get("unmarked", 0) == 0,
        }
    return report


def _per_tenant(reports: Iterable[StreamReport]) -> dict[str, dict[str, int]]:
    per: dict[str, dict[str, int]] = {}
    for r in reports:
        row = per.setdefault(r.tenant_id or "?", {"devices": 0, "stored": 0, "duplicates": 0, "dead_letters": 0, "lost": 0})
        row["devices"] += 1
        row["stored"] += r.stored
        row["duplicates"] += r.duplicates
        row["dead_letters"] += r.dead_letters
        row["lost"] += r.lost
    return dict(sorted(per.items()))


def _stream_json(r: StreamReport) -> dict[str, object]:
    return {
        "tenant_id": r.tenant_id,
        "device_id": r.key.device_id,
        "run_id": r.key.run_id,
        "lost": r.lost,
        "duplicates": r.duplicates,
        "missing": [list(span) for span in r.missing[:MAX_LISTED_RANGES]],
    }


def exit_code(report: Mapping[str, object]) -> int:
    """0 when nothing is lost or duplicated; 1 on loss; 2 on duplicates alone."""
    return {"ok": 0, "lost": 1, "duplicates": 2}[str(report["verdict"])]

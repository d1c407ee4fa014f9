"""`iot-platform verify`: lost, duplicated and dead-lettered messages over a time range.

Reads the database (and Kafka's end offsets); never writes. Exit code 0 when nothing is lost or
duplicated, 1 on loss (including records Kafka deleted before the consumer read them, listed by
offset range), 2 on duplicates alone. With ``--expect FILE`` (from `iot-platform simulate
--summary FILE`) the last messages of each device count too, and dead letters are checked against
the bad messages the simulator sent. ``--wait S`` first waits up to S seconds for the consumer to
catch up with Kafka, so messages still in flight are not reported as lost.
"""

from __future__ import annotations

import argparse
import json
import re
from datetime import UTC, datetime, timedelta

from iot_platform.core.arguments import number
from iot_platform.devices.verify import verify, wait_until_drained
from iot_platform.devices.verify_report import Expectation, exit_code
from iot_platform.errors import InvalidConfiguration
from iot_platform.observability.logging import configure_json_logging
from iot_platform.settings import Settings

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """ISO 8601 (naive means UTC) or a relative age like ``15m``, ``2h``, ``1d`` before now."""
    match = _RELATIVE.match(text.strip())
    if match:
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[match[2]]: float(match[1])})
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO time (2026-11-02T10:00:00Z) or an age (90s, 15m, 2h, 1d), not {text!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", type=parse_time, default=None, help="Start of the window on received_at: ISO time or age (15m, 2h, 1d).")
    parser.add_argument("--until", type=parse_time, default=None, help="End of the window (exclusive).")
    parser.add_argument("--run-id", default=None, help="Only this simulator run.")
    parser.add_argument("--expect", default=None, metavar="FILE", help="Summary written by `iot-platform simulate --summary FILE`.")
    parser.add_argument("--wait", type=number(float, minimum=0.0), default=0.0, metavar="SECONDS", help="First wait up to this long for the consumer to drain Kafka.")
    parser.add_argument("--no-kafka", action="store_true", help="Skip the Kafka offsets (database only).")
    parser.add_argument("--json", action="store_true", help="Print the full report as JSON.")


def run(args: argparse.Namespace, settings: Settings) -> int:
    configure_json_logging()
    if args.since is not None and args.until is not None and args.since >= args.until:
        raise InvalidConfiguration(f"--since {args.since.isoformat()} is not before --until {args.until.isoformat()}")
    expectation = read_expectation(args.expect) if args.expect else None
    if args.wait > 0 and not args.no_kafka:
        wait_until_drained(settings, args.wait)
    report = verify(
        settings, since=args.since, until=args.until, run_id=args.run_id, expectation=expectation, with_kafka=not args.no_kafka
    )
    print(json.dumps(report, indent=1) if args.json else render_text(report))
    return exit_code(report)


def read_expectation(path: str) -> Expectation:
    """The simulator's summary (``simulate --summary FILE``); a file that is missing or not one is a bad --expect."""
    try:
        with open(path, encoding="utf-8") as summary:
            return Expectation.from_summary(json.load(summary))
    except OSError as exc:
        raise InvalidConfiguration(f"--expect {path}: {exc.strerror or exc}") from exc
    except (ValueError, KeyError, TypeError, AssertionError) as exc:
        raise InvalidConfiguration(f"--expect {path} is not a summary written by `iot-platform simulate --summary FILE` ({exc!r})") from exc


def render_text(report: dict) -> str:  # type: ignore[type-arg]
    t = report["totals"]
    lines = [
        f"verdict: {report['verdict'].upper()}",
        f"streams {t['streams']:,}  stored {t['stored']:,}  lost {t['lost']:,}  duplicates {t['duplicates']:,}  "
        f"dead letters {t['dead_letters']:,} (+{t['duplicate_dead_letters']:,} copies, {t['foreign_dead_letters']:,} not simulated)",
        f"kafka records not yet stored: {report['kafka']['pending']:,}",
        *[f"LOST: {e['records']:,} records of {e['topic']}[{e['partition']}] deleted by Kafka retention before they were read: "
          f"offsets {e['first_offset']}-{e['last_offset']} (detected {e['detected_at']})" for e in report["expired_before_read"]],
        "",
        f"{'tenant':<24} {'devices':>8} {'stored':>10} {'lost':>8} {'dups':>8} {'dead':>8}",
    ]
    for tenant, row in report["tenants"].items():
        lines.append(f"{tenant:<24} {row['devices']:>8,} {row['stored']:>10,} {row['lost']:>8,} {row['duplicates']:>8,} {row['dead_letters']:>8,}")
    if report["dead_letters_by_reason"]:
        lines += ["", "dead letters by reason: " + ", ".join(f"{r}={n}" for r, n in report["dead_letters_by_reason"].items())]
    if "expected" in report:
        e = report["expected"]
        lines.append(f"expected {e['messages']:,} messages from {e['streams']:,} devices, {e['bad_acked']:,} bad; "
                     f"dead letters match: {e['dead_letters_match']}")
    for stream in report["problem_streams"]:
        lines.append(f"  {stream['tenant_id']} {stream['device_id']} run {stream['run_id']}: lost {stream['lost']} "
                     f"{stream['missing']} duplicates {stream['duplicates']}")
    return "\n".join(lines)

"""`iot-platform simulate` then `iot-platform verify`, as a user runs them, on the real pipeline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from iot_platform.settings import Settings
from iot_platform.storage.db import connect
from iot_platform.storage.migrate import apply_migrations
from iot_platform_tests.faults.harness import pipeline
from iot_platform_tests.helpers import service_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "iot_platform.cli", *args], env=service_env(settings),
                          capture_output=True, text=True, timeout=180)


def test_verify_reports_zero_gaps_after_simulate_and_flags_a_deleted_row(settings: Settings, tmp_path: Path) -> None:
    """After `simulate --count 3000 --bad-fraction 0.01 --summary F` (through registered gateway devices), `verify --expect F --wait 60` exits 0
    with no loss, no duplicates and the dead letters equal to the bad messages; once one stored row is
    deleted, verify exits 1 and names that device's missing seq."""
    apply_migrations(settings)
    summary = tmp_path / "summary.json"
    with pipeline(settings, tmp_path / "logs"):
        published = _cli(settings, "simulate", "--tenants", "2", "--projects", "2", "--devices", "5", "--rate", "0",
                         "--count", "3000", "--bad-fraction", "0.01", "--summary", str(summary), "--quiet",
                         "--tenant-prefix", f"s{settings.mqtt_client_id[-10:]}")
        assert published.returncode == 0, published.stderr[-2000:]
        checked = _cli(settings, "verify", "--expect", str(summary), "--wait", "60", "--json")
    report = json.loads(checked.stdout)
    expected = json.loads(summary.read_text())
    bad = sum(n for category, n in expected["acked"].items() if category != "good")
    assert checked.returncode == 0, checked.stdout[-3000:]
    assert report["verdict"] == "ok" and report["totals"]["lost"] == 0 and report["totals"]["duplicates"] == 0
    assert report["totals"]["stored"] == expected["acked"]["good"]
    assert report["totals"]["dead_letters"] == bad and report["expected"]["dead_letters_match"]
    assert report["kafka"]["pending"] == 0

    conn = connect(settings)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("DELETE FROM iot.messages WHERE payload_json->>'run_id' = %s AND (payload_json->>'seq')::int = 7 "
                        "RETURNING payload_json->>'device_id'", (expected["run_id"],))
            victims = sorted(row[0] for row in cur.fetchall())
    finally:
        conn.close()
    assert victims
    broken = _cli(settings, "verify", "--expect", str(summary), "--json")
    report = json.loads(broken.stdout)
    assert broken.returncode == 1 and report["verdict"] == "lost"
    assert report["totals"]["lost"] == len(victims)
    assert sorted(s["device_id"] for s in report["problem_streams"]) == victims
    assert all(s["missing"] == [[7, 7]] for s in report["problem_streams"])
